// "host:port" addresses as the config and the coordinator take them: the host (an IPv6 one in
// brackets, which this drops) and a port number of at most five digits.
#pragma once

#include <optional>
#include <string>

namespace ptrain {

struct HostPort {
  std::string host;  // without the brackets of an IPv6 host
  int port = 0;
};

// The parts of `address`, or nullopt when it is not host:port with a port in [0, 65535].
std::optional<HostPort> parse_host_port(const std::string& address);

// What other hosts dial to reach a server bound to `bound`: a wildcard host (0.0.0.0, [::])
// replaced by `host`, this machine's name.
std::string dial_address(const std::string& bound, const std::string& host);

}  // namespace ptrain
