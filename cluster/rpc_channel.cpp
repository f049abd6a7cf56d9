#include "cluster/rpc_channel.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace ptrain {
namespace {

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::UNKNOWN:
      return "UNKNOWN";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::ABORTED:
      return "ABORTED";
    case grpc::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::INTERNAL:
      return "INTERNAL";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

std::string read_pem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  PTRAIN_CHECK(in.good(), "cannot read the {} {}", what, path);
  std::ostringstream text;
  text << in.rdbuf();
  PTRAIN_CHECK(text.str().find("-----BEGIN") != std::string::npos,
               "{} is not a PEM file (expected the {})", path, what);
  return text.str();
}

std::string read_token_file(const std::string& path) {
  std::ifstream in(path);
  PTRAIN_CHECK(in.good(), "cannot read the token file {}", path);
  std::string line;
  std::getline(in, line);
  const auto first = line.find_first_not_of(" \t\r\n");
  const auto last = line.find_last_not_of(" \t\r\n");
  PTRAIN_CHECK(first != std::string::npos,
               "the token file {} is empty (expected the token on its "
               "first line)",
               path);
  return line.substr(first, last - first + 1);
}

std::shared_ptr<grpc::Channel> make_rpc_channel(const RpcClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_ca.empty()) {
    PTRAIN_CHECK(options.tls_cert.empty(),
                 "a client certificate ({}) needs the CA to trust for the coordinator (tls_ca)",
                 options.tls_cert);
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read_pem(options.tls_ca, "CA certificate (tls_ca)");
    if (!options.tls_cert.empty()) {
      ssl.pem_cert_chain = read_pem(options.tls_cert, "client certificate (tls_client_cert)");
      PTRAIN_CHECK(!options.tls_key.empty(), "the client certificate {} needs its key",
                   options.tls_cert);
      ssl.pem_private_key = read_pem(options.tls_key, "client key (tls_client_key)");
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  // Reconnect within a second of a coordinator restart; gRPC's default backoff grows to 120 s
  // (it adds its own jitter, and the client's calls back off on top of it).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // gRPC re-resolves the address after a failure at most this often (default 30 s): without it a
  // restarted coordinator stays "connection refused" for seconds after it listens again.
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 200);
  return grpc::CreateCustomChannel(options.address, credentials, args);
}

std::unique_ptr<grpc::ClientContext> make_rpc_context(const RpcClientOptions& options,
                                                      double timeout_s) {
  auto context = std::make_unique<grpc::ClientContext>();
  const double seconds = timeout_s > 0 ? timeout_s : options.rpc_timeout_s;
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
  if (!options.auth_token.empty())
    context->AddMetadata("authorization", "Bearer " + options.auth_token);
  return context;
}

std::string describe_status(const grpc::Status& status) {
  return status.error_message().empty()
             ? code_name(status.error_code())
             : std::string(code_name(status.error_code())) + ": " + status.error_message();
}

}  // namespace ptrain
