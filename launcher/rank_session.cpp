#include "launcher/rank_session.h"

#include <ATen/Parallel.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>

#include "core/logging.h"
#include "parallel/communicator_factory.h"

namespace ptrain {

RankSession::RankSession(int* argc, char*** argv, const ResolvedConfig& config)
    : uncaught_at_start_(std::uncaught_exceptions()) {
  mpi_ = std::make_unique<MpiRuntime>(argc, argv);
  try {
    set_up(config);
  } catch (...) {
    leave_for_abort();
    throw;
  }
}

void RankSession::set_up(const ResolvedConfig& config) {
  const JobConfig& job = config.job;
  info_ = discover_ranks();

  LogSettings log_settings;
  log_settings.level = job.logging.level;
  log_settings.console = job.logging.console;
  log_settings.log_dir = job.output_dir + "/logs";
  context_.log = make_rank_logger(log_settings, info_.rank, info_.host);
  for (const auto& warning : info_.warnings) context_.log->warn("rank discovery: {}", warning);
  if (info_.rank == 0)
    for (const auto& warning : config.warnings) context_.log->warn("{}", warning);

  // Cores this process may run on (srun --cpus-per-task and taskset restrict it), not the host's.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  unsigned cores = sched_getaffinity(0, sizeof(allowed), &allowed) == 0
                       ? static_cast<unsigned>(CPU_COUNT(&allowed))
                       : std::max(1u, std::thread::hardware_concurrency());
  threads_ = job.threads > 0 ? static_cast<int>(job.threads)
                             : std::max(1, static_cast<int>(cores) / info_.local_world);
  at::set_num_threads(threads_);

  context_.rank = info_.rank;
  context_.world = info_.world;
  context_.local_rank = info_.local_rank;
  context_.local_world = info_.local_world;
  context_.host = info_.host;
  watchdog_ = make_job_watchdog(job.comm.collective_timeout, info_.rank, info_.world, info_.host,
                                context_.log);
  context_.comm =
      make_world_communicator(resolve_backend(job.comm.backend), info_.local_rank, watchdog_);

  if (info_.rank == 0) {
    std::string path = write_resolved_config(config, job.output_dir);
    context_.log->info("config {} (hash {}) resolved to {}", config.source, config.hash, path);
  }
}

void RankSession::leave_for_abort() {
  // A peer may already wait in a collective, so neither the communicator nor MPI is torn down
  // (joining or finalising could hang): queued collectives are abandoned and the objects are
  // deliberately leaked; run_guarded() ends the process right after the unwinding.
  if (context_.comm) context_.comm->abandon();
  new std::shared_ptr<Communicator>(std::move(context_.comm));
  new std::shared_ptr<CollectiveWatchdog>(std::move(watchdog_));
  mpi_.release();
}

RankSession::~RankSession() {
  if (context_.log) context_.log->flush();
  if (std::uncaught_exceptions() > uncaught_at_start_) {
    leave_for_abort();
    return;
  }
  context_.comm.reset();
  watchdog_.reset();
  if (context_.log) context_.log->flush();
  mpi_.reset();
}

int run_guarded(const std::function<int()>& body) {
  ExitCode code = ExitCode::kRuntimeFailure;
  std::string message;
  try {
    return body();
  } catch (const Error& e) {
    code = e.exit_code();
    message = e.what();
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
    message = "unknown exception";
  }
  int initialized = 0, finalized = 0, rank = 0, world = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  const bool mpi_live = initialized && !finalized;
  if (mpi_live) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
  }
  const char* kind = code == ExitCode::kBadInput ? "error" : "fatal error";
  if (mpi_live) {
    std::fprintf(stderr, "ptrain: [rank %d %s] %s: %s\n", rank, host_name().c_str(), kind,
                 message.c_str());
  } else {
    std::fprintf(stderr, "ptrain: %s: %s\n", kind, message.c_str());
  }
  std::fflush(stderr);
  if (mpi_live && world > 1) MpiRuntime::abort_job(code);
  // One rank: nothing to take down, but MPI (left initialised on this path) must not be finalised.
  if (mpi_live) {
    std::fflush(stdout);
    std::_Exit(static_cast<int>(code));
  }
  return static_cast<int>(code);
}

}  // namespace ptrain
