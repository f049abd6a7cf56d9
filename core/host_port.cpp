#include "core/host_port.h"

namespace ptrain {

std::optional<HostPort> parse_host_port(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  std::string host = address.substr(0, colon);
  const bool bracketed = host.front() == '[';
  if (bracketed ? host.size() < 3 || host.back() != ']'
                : host.find_first_of(": \t[]") != std::string::npos)
    return std::nullopt;
  const std::string port = address.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const int number = std::stoi(port);
  if (number > 65535) return std::nullopt;
  if (bracketed) host = host.substr(1, host.size() - 2);
  return HostPort{host, number};
}

std::string dial_address(const std::string& bound, const std::string& host) {
  const auto colon = bound.rfind(':');
  if (colon == std::string::npos) return bound;
  const std::string listen_host = bound.substr(0, colon);
  if (listen_host == "0.0.0.0" || listen_host == "[::]" || listen_host == "::")
    return host + bound.substr(colon);
  return bound;
}

}  // namespace ptrain
