// ptrain-coordinator: the job's coordinator on its own (docs/coordinator.md), for a job whose
// config names it (coordinator.address), a supervisor, or to read a finished job's state.
// Serves until SIGINT or SIGTERM, then stops cleanly (exit 0). Exit 2 for bad flags or files, an
// address it cannot listen on or a state file another coordinator holds; 3 for a failure while
// serving.
#include <signal.h>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <thread>

#include "cluster/coordinator_server.h"
#include "cluster/rpc_channel.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/logging.h"

int main(int argc, char** argv) {
  using namespace ptrain;
  CLI::App app("ptrain-coordinator: the gRPC coordinator of one ptrain job");
  CoordinatorServerOptions options;
  std::string token_file, address_file, log_level = "info";
  options.listen = "127.0.0.1:50051";
  app.add_option("--listen", options.listen,
                 "host:port to serve on (port 0: a free one; 0.0.0.0:PORT for other hosts)")
      ->capture_default_str();
  app.add_option("--state", options.state_path, "The SQLite state file (created when missing)")
      ->required();
  app.add_option(
      "--auth-token-file", token_file,
      "Require 'authorization: Bearer <token>' with the token on this file's first line");
  app.add_option("--tls-cert", options.tls_cert, "Serve TLS with this certificate chain (PEM)");
  app.add_option("--tls-key", options.tls_key, "The private key of --tls-cert (PEM)");
  app.add_option("--tls-client-ca", options.tls_client_ca,
                 "Require client certificates signed by this CA (PEM): mutual TLS");
  app.add_option("--metrics-listen", options.metrics_listen,
                 "host:port of a Prometheus /metrics endpoint");
  app.add_option("--heartbeat-interval", options.heartbeat_interval_s,
                 "Seconds between the ranks' heartbeats")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 3600.0));
  app.add_option("--heartbeat-timeout", options.heartbeat_timeout_s,
                 "Seconds without a heartbeat before a rank is shown lost")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  app.add_option("--address-file", address_file,
                 "Write the address it serves on (host:port) to this file once it serves");
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : static_cast<int>(ExitCode::kBadInput);
  }

  // SIGINT and SIGTERM are taken by one thread (blocked everywhere else, gRPC's threads
  // included), which stops the server.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto log = spdlog::stderr_color_mt("coordinator");
  log->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [coordinator] [%^%l%$] %v");
  try {
    log->set_level(parse_log_level(log_level));
    if (!token_file.empty()) options.auth_token = read_token_file(token_file);
    CoordinatorServer server(options, log);
    if (!address_file.empty()) write_file_atomic(address_file, server.address() + "\n");
    std::thread signals([&] {
      int signal = 0;
      sigwait(&stop_signals, &signal);
      if (signal != 0) log->info("{}: stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
      server.shutdown();
    });
    server.wait();  // only the signal thread stops it
    signals.join();
    return 0;
  } catch (const Error& e) {
    log->error("{}", e.what());
    return static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    log->error("{}", e.what());
    return static_cast<int>(ExitCode::kRuntimeFailure);
  }
}
