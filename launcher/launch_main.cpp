// ptrain-launch: the job's supervisor (docs/launch.md). Starts the coordinator (unless one is
// given), runs the job command, restarts it after a failure from the last committed checkpoint,
// and gives up after --max-restarts with a summary. Exit codes: 0 the job finished, 2 bad input
// (ptrain-launch's flags, or the job's own exit 2, never retried), 3 restarts exhausted, 4 the
// job stopped for a requeue.
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cluster/coordinator_server.h"
#include "cluster/job_state.h"
#include "cluster/rpc_channel.h"
#include "cluster/supervisor.h"
#include "core/checksum.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/host_port.h"
#include "core/logging.h"

namespace {

// Whether the job command may start ranks on other hosts, whose coordinator address must not be
// the loopback: srun; mpirun given hosts, or inside a Slurm allocation of several nodes.
bool may_span_hosts(const std::vector<std::string>& command) {
  const std::string program = std::filesystem::path(command.front()).filename().string();
  if (program == "srun") return true;
  if (program != "mpirun" && program != "mpiexec" && program != "orterun") return false;
  for (const std::string& arg : command)
    for (const char* flag : {"-H", "--host", "-host", "--hostfile", "-hostfile", "--machinefile",
                             "-machinefile", "--default-hostfile"})
      if (arg == flag || arg.rfind(std::string(flag) + "=", 0) == 0) return true;
  const char* nodes = std::getenv("SLURM_JOB_NUM_NODES");
  return (nodes != nullptr && std::atoi(nodes) > 1) ||
         std::getenv("OMPI_MCA_orte_default_hostfile") != nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ptrain;
  CLI::App app(
      "ptrain-launch: runs a ptrain job (mpirun/srun ... ptrain train ...) and restarts it from "
      "its last committed checkpoint when it fails");
  SupervisorOptions options;
  CoordinatorServerOptions server_options;
  server_options.listen = "";
  server_options.state_path = "";
  std::string coordinator, token_file, address_file, summary_json, log_level = "info";
  app.add_option("--max-restarts", options.max_restarts,
                 "Restarts after failed launches before giving up")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  app.add_option(
      "--coordinator", coordinator,
      "host:port of a running coordinator (ptrain-coordinator); else one is started here");
  app.add_option("--listen", server_options.listen,
                 "Where the started coordinator listens (default 127.0.0.1:0; 0.0.0.0:0 when the "
                 "command can start ranks on other hosts: srun, mpirun with hosts)");
  app.add_option("--state", server_options.state_path,
                 "The started coordinator's SQLite state (default ptrain-launch-<hash of the "
                 "command, this directory and the Slurm job>.db here: a requeued job finds its "
                 "own)");
  app.add_option("--address-file", address_file,
                 "Write the coordinator's address (host:port) to this file");
  app.add_option("--auth-token-file", token_file,
                 "The coordinator's token (first line); the job's config names the same file");
  app.add_option("--tls-ca", options.rpc.tls_ca, "Trust this CA (PEM) for --coordinator's TLS");
  app.add_option("--heartbeat-interval", server_options.heartbeat_interval_s,
                 "Seconds between the ranks' heartbeats (started coordinator)")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 3600.0));
  app.add_option("--heartbeat-timeout", server_options.heartbeat_timeout_s,
                 "Seconds without a heartbeat before a rank is lost and the launch restarted")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  app.add_option("--stall-timeout", options.stall_timeout_s,
                 "Seconds without a completed step (from the launch on) before it is restarted")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 30.0 * 86400));
  app.add_option("--backoff", options.backoff_s,
                 "Seconds before the first restart; doubled for each further one")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--max-backoff", options.max_backoff_s, "The longest wait before a restart")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--summary-json", summary_json,
                 "Write the launches, their causes and recovery times here at the end");
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error")
      ->capture_default_str();
  app.add_option("command", options.command, "The job command, after --")->required();
  app.positionals_at_end();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : static_cast<int>(ExitCode::kBadInput);
  }

  // Before any thread starts (gRPC's): the supervisor takes its signals synchronously.
  Supervisor::block_signals();
  auto log = spdlog::stderr_color_mt("launch");
  log->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [ptrain-launch] [%^%l%$] %v");
  try {
    log->set_level(parse_log_level(log_level));
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    options.host = host;
    options.rpc.auth_token = token_file.empty() ? "" : read_token_file(token_file);
    server_options.auth_token = options.rpc.auth_token;
    std::unique_ptr<CoordinatorServer> server;
    if (coordinator.empty()) {
      if (server_options.listen.empty()) {
        server_options.listen = may_span_hosts(options.command) ? "0.0.0.0:0" : "127.0.0.1:0";
        if (server_options.listen != "127.0.0.1:0")
          log->info(
              "ranks may run on other hosts: the coordinator listens on every interface "
              "(--listen chooses; --auth-token-file guards it)");
      }
      if (server_options.state_path.empty()) {
        // The same job run again (a requeue: same command, directory and Slurm job) finds its
        // state; another job, another file.
        std::string joined = std::filesystem::current_path().string() + '\0';
        for (const char* slurm : {"SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"})
          if (const char* value = std::getenv(slurm)) joined += std::string(value) + '\0';
        for (const std::string& arg : options.command) joined += arg + '\0';
        server_options.state_path =
            "ptrain-launch-" + xxh3_hex(joined.data(), joined.size()) + ".db";
      }
      server = std::make_unique<CoordinatorServer>(server_options, log);
      options.rpc.address = dial_address(server->address(), options.host);
      log->info("coordinator: {} (state {})", options.rpc.address, server_options.state_path);
    } else {
      PTRAIN_CHECK(parse_host_port(coordinator).has_value(), "--coordinator '{}' is not host:port",
                   coordinator);
      options.rpc.address = coordinator;
    }
    if (!address_file.empty()) write_file_atomic(address_file, options.rpc.address + "\n");
    Supervisor supervisor(options, log);
    const int code = supervisor.run();
    if (!summary_json.empty()) write_file_atomic(summary_json, supervisor.summary().dump(2) + "\n");
    return code;
  } catch (const Error& e) {
    log->error("{}", e.what());
    return static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    log->error("{}", e.what());
    return static_cast<int>(ExitCode::kRuntimeFailure);
  }
}
