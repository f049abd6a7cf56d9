// CoordinatorServer: one running coordinator: the gRPC server (ptrain.v1.Coordinator, the
// standard grpc.health.v1.Health service and server reflection), its SQLite state, the
// housekeeping thread that flushes rank health and notices lost ranks, and the optional
// Prometheus endpoint. ptrain-coordinator runs one standalone; rank 0 runs one in-process when the
// job names no coordinator.
//
// Lifetime: the constructor binds and serves (UserError naming the address when it cannot bind,
// or a TLS file that cannot be read); shutdown() (or the destructor) stops accepting calls, ends
// watch streams, waits for running calls up to a grace period and closes the database.
#pragma once

#include <spdlog/logger.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace grpc {
class Server;
}
namespace httplib {
class Server;
}

namespace ptrain {

class CoordinatorStore;
class JobState;
class CoordinatorService;

struct CoordinatorServerOptions {
  std::string listen = "127.0.0.1:0";  // host:port; port 0 picks a free one
  std::string state_path;              // the SQLite database (created when missing)
  std::string auth_token;              // required on every RPC when set (health stays open)
  std::string tls_cert, tls_key;       // PEM: serve TLS only
  std::string tls_client_ca;           // PEM: require client certificates signed by it (mTLS)
  std::string metrics_listen;          // host:port of the Prometheus /metrics endpoint; "": none
  double heartbeat_interval_s = 1;
  double heartbeat_timeout_s = 30;
  int max_message_bytes = 1 << 20;  // larger requests are refused (RESOURCE_EXHAUSTED)
};

class CoordinatorServer {
 public:
  CoordinatorServer(CoordinatorServerOptions options, std::shared_ptr<spdlog::logger> log);
  ~CoordinatorServer();
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  // host:port the server listens on (the chosen port when the listen port was 0).
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // host:port of the metrics endpoint ("" when off).
  const std::string& metrics_address() const { return metrics_address_; }
  JobState& job() { return *job_; }

  // Blocks until shutdown() is called from another thread (or a signal handler's thread).
  void wait();
  void shutdown();

 private:
  void housekeeping();

  CoordinatorServerOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<CoordinatorStore> store_;
  std::unique_ptr<JobState> job_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<httplib::Server> metrics_;
  std::thread metrics_thread_;
  std::string address_, metrics_address_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false, stopped_ = false;
  std::thread housekeeping_thread_;
};

}  // namespace ptrain
