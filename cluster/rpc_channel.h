// Client-side gRPC plumbing shared by every caller of the coordinator (the ranks' client,
// ptrain-status, the benchmarks): a channel with the configured transport security, and a
// ClientContext that always carries a deadline and the bearer token.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace ptrain {

struct RpcClientOptions {
  std::string address;       // host:port
  std::string auth_token;    // sent as "authorization: Bearer <token>"; "": none
  std::string tls_ca;        // PEM file of the CA to trust; "": plaintext
  std::string tls_cert;      // PEM client certificate for mTLS; "": none
  std::string tls_key;       // PEM key of tls_cert
  double rpc_timeout_s = 5;  // every call's deadline
};

// Reads a token from a file: its first line, surrounding whitespace removed. UserError naming
// the file when it is missing, unreadable or empty.
std::string read_token_file(const std::string& path);

// The text of a PEM file (a certificate, a key, a CA): UserError naming the file and `what` it
// should be when it cannot be read or holds no PEM block.
std::string read_pem(const std::string& path, const char* what);

// A channel to options.address; TLS when tls_ca is set (UserError naming a PEM file that cannot
// be read). Reconnects are gRPC's (with its own backoff); callers still retry failed calls.
std::shared_ptr<grpc::Channel> make_rpc_channel(const RpcClientOptions& options);

// A context with options.rpc_timeout_s (or `timeout_s` when > 0) as deadline and the token.
std::unique_ptr<grpc::ClientContext> make_rpc_context(const RpcClientOptions& options,
                                                      double timeout_s = 0);

// "UNAVAILABLE: failed to connect to all addresses" — a status for a log line.
std::string describe_status(const grpc::Status& status);

}  // namespace ptrain
