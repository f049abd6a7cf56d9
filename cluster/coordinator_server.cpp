#include "cluster/coordinator_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "cluster/coordinator_service.h"
#include "cluster/coordinator_store.h"
#include "cluster/job_state.h"
#include "cluster/prometheus_text.h"
#include "cluster/rpc_channel.h"
#include "core/error.h"
#include "core/host_port.h"

namespace ptrain {
namespace {

std::shared_ptr<grpc::ServerCredentials> server_credentials(
    const CoordinatorServerOptions& options) {
  if (options.tls_cert.empty()) {
    PTRAIN_CHECK(options.tls_key.empty() && options.tls_client_ca.empty(),
                 "a TLS key or client CA needs the server certificate (tls_cert)");
    return grpc::InsecureServerCredentials();
  }
  PTRAIN_CHECK(!options.tls_key.empty(), "the certificate {} needs its key (tls_key)",
               options.tls_cert);
  grpc::SslServerCredentialsOptions ssl(
      options.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                    : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_key_cert_pairs.push_back({read_pem(options.tls_key, "private key (tls_key)"),
                                    read_pem(options.tls_cert, "certificate (tls_cert)")});
  if (!options.tls_client_ca.empty())
    ssl.pem_root_certs = read_pem(options.tls_client_ca, "client CA (tls_client_ca)");
  return grpc::SslServerCredentials(ssl);
}

// The parts of host:port; UserError naming `what` otherwise.
HostPort split_address(const std::string& address, const char* what) {
  const std::optional<HostPort> parts = parse_host_port(address);
  PTRAIN_CHECK(parts.has_value(),
               "{} '{}' is not host:port with a port number in [0, 65535] (an IPv6 host in "
               "brackets: [::1]:0)",
               what, address);
  return *parts;
}

}  // namespace

CoordinatorServer::CoordinatorServer(CoordinatorServerOptions options,
                                     std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)), log_(std::move(log)) {
  PTRAIN_CHECK(!options_.state_path.empty(), "the coordinator needs a state file");
  const std::string host = split_address(options_.listen, "the coordinator address").host;
  store_ = std::make_unique<CoordinatorStore>(options_.state_path);
  JobStateOptions job_options;
  job_options.heartbeat_interval_s = options_.heartbeat_interval_s;
  job_options.heartbeat_timeout_s = options_.heartbeat_timeout_s;
  job_ = std::make_unique<JobState>(*store_, job_options);
  service_ = std::make_unique<CoordinatorService>(*job_, options_.auth_token, log_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, server_credentials(options_), &port_);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  // gRPC sets SO_REUSEPORT by default: a second coordinator on the same port would then share
  // its connections instead of failing to bind.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  server_ = builder.BuildAndStart();
  PTRAIN_CHECK(server_ != nullptr && port_ > 0,
               "the coordinator cannot listen on {} (in use, or not an address of this host)",
               options_.listen);
  server_->GetHealthCheckService()->SetServingStatus(true);
  address_ =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port_);

  if (!options_.metrics_listen.empty()) {
    const auto [metrics_host, metrics_port] =
        split_address(options_.metrics_listen, "coordinator.metrics_listen");
    metrics_ = std::make_unique<httplib::Server>();
    // SO_REUSEADDR only (httplib's default adds SO_REUSEPORT: two servers on one port).
    metrics_->set_socket_options([](int socket) {
      const int yes = 1;
      ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    metrics_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(prometheus_text(job_->status()),
                           "text/plain; version=0.0.4; charset=utf-8");
    });
    const int bound =
        metrics_port == 0
            ? metrics_->bind_to_any_port(metrics_host)
            : (metrics_->bind_to_port(metrics_host, metrics_port) ? metrics_port : -1);
    PTRAIN_CHECK(bound > 0, "the coordinator cannot serve /metrics on {} (in use?)",
                 options_.metrics_listen);
    metrics_address_ = metrics_host + ":" + std::to_string(bound);
    metrics_thread_ = std::thread([this] { metrics_->listen_after_bind(); });
  }
  housekeeping_thread_ = std::thread([this] { housekeeping(); });
  log_->info("coordinator listening on {}{}{}, state in {}", address_,
             options_.tls_cert.empty() ? "" : " (TLS)",
             options_.auth_token.empty() ? "" : " (token required)", options_.state_path);
  if (!metrics_address_.empty())
    log_->info("Prometheus metrics at http://{}/metrics", metrics_address_);
}

CoordinatorServer::~CoordinatorServer() {
  shutdown();
}

void CoordinatorServer::housekeeping() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_; });
    lock.unlock();
    try {
      job_->flush();
    } catch (const std::exception& e) {
      log_->error("the coordinator could not record rank health: {}", e.what());
    }
    lock.lock();
  }
}

void CoordinatorServer::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return stopped_; });
}

void CoordinatorServer::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  service_->shutdown();
  if (metrics_) {
    metrics_->stop();
    metrics_thread_.join();
  }
  // Calls still running get half a second, then are cancelled.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  housekeeping_thread_.join();
  try {
    job_->flush(/*all=*/true);
  } catch (const std::exception& e) {
    log_->error("the coordinator could not record rank health: {}", e.what());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }
  cv_.notify_all();
  log_->info("coordinator stopped");
}

}  // namespace ptrain
