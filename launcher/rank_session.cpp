#include "launcher/rank_session.h"

#include <ATen/Parallel.h>
#include <sched.h>
#include <spdlog/sinks/basic_file_sink.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <thread>
#include <vector>

#include "core/logging.h"
#include "launcher/error_report.h"
#include "parallel/communicator_factory.h"
#include "parallel/mpi_runtime.h"

namespace ptrain {

RankSession::RankSession(int* argc, char*** argv, const ResolvedConfig& config, JobRecord record)
    : uncaught_at_start_(std::uncaught_exceptions()), config_(config), record_(record) {
  mpi_ = std::make_unique<MpiRuntime>(argc, argv);
  try {
    set_up();
  } catch (...) {
    leave_for_abort();
    throw;
  }
}

namespace {

// How many ranks of this host (itself included) may run on a core of `mine`. Collective over
// MPI_COMM_WORLD.
int ranks_sharing_cores(const cpu_set_t& mine) {
  MPI_Comm host;
  PTRAIN_MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host));
  int size = 1;
  PTRAIN_MPI_CHECK(MPI_Comm_size(host, &size));
  std::vector<cpu_set_t> all(static_cast<size_t>(size));
  PTRAIN_MPI_CHECK(MPI_Allgather(&mine, sizeof(cpu_set_t), MPI_BYTE, all.data(), sizeof(cpu_set_t),
                                 MPI_BYTE, host));
  PTRAIN_MPI_CHECK(MPI_Comm_free(&host));
  int sharing = 0;
  for (const cpu_set_t& other : all) {
    cpu_set_t both;
    CPU_AND(&both, &mine, &other);
    sharing += CPU_COUNT(&both) > 0 ? 1 : 0;
  }
  return std::max(1, sharing);
}

}  // namespace

void RankSession::set_up() {
  const JobConfig& job = config_.job;
  info_ = discover_ranks();

  LogSettings log_settings;
  log_settings.level = job.logging.level;
  log_settings.console = job.logging.console;
  if (record_ != JobRecord::kNone)
    log_dir_ = log_settings.log_dir = (std::filesystem::path(job.output_dir) / "logs").string();
  context_.log = make_rank_logger(log_settings, info_.rank, info_.host);
  for (const spdlog::sink_ptr& sink : context_.log->sinks())
    if (std::dynamic_pointer_cast<spdlog::sinks::basic_file_sink_mt>(sink))
      file_log_ = std::make_shared<spdlog::logger>(context_.log->name() + "-file", sink);
  for (const auto& warning : info_.warnings) context_.log->warn("rank discovery: {}", warning);
  if (info_.rank == 0)
    for (const auto& warning : config_.warnings) context_.log->warn("{}", warning);

  // Cores this process may run on (srun --cpus-per-task and taskset restrict it), not the host's.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  unsigned cores = sched_getaffinity(0, sizeof(allowed), &allowed) == 0
                       ? static_cast<unsigned>(CPU_COUNT(&allowed))
                       : std::max(1u, std::thread::hardware_concurrency());
  // The cores are shared by the ranks of this host whose masks overlap this one's: all of them
  // without binding, none with a launcher's per-rank binding (srun --cpus-per-task, mpirun
  // --bind-to core), whose mask is already this rank's share.
  const int sharing = ranks_sharing_cores(allowed);
  threads_ = job.threads > 0 ? static_cast<int>(job.threads)
                             : std::max(1, static_cast<int>(cores) / sharing);
  const unsigned host_cores = std::max(1u, std::thread::hardware_concurrency());
  if (job.threads <= 0 && cores == 1 && host_cores >= 2 * static_cast<unsigned>(info_.local_world))
    context_.log->warn(
        "this rank may run on 1 of the host's {} cores ({} ranks here): the launcher bound it "
        "(Open MPI binds to one core per rank when -np <= 2); pass --bind-to none to mpirun, or "
        "--cpus-per-task to srun",
        host_cores, info_.local_world);
  at::set_num_threads(threads_);

  context_.rank = info_.rank;
  context_.world = info_.world;
  context_.local_rank = info_.local_rank;
  context_.local_world = info_.local_world;
  context_.host = info_.host;
  watchdog_ = make_job_watchdog(job.comm.collective_timeout, info_.rank, info_.world, info_.host,
                                context_.log);
  // Host collectives (data preparation's status, the training loop's sums, eval) are MPI's; a
  // command that computes on GPUs asks world_communicator("nccl") for its device tensors.
  context_.comm = make_world_communicator("mpi", info_.local_rank, watchdog_);
}

void RankSession::record_config() {
  PTRAIN_ASSERT(record_ == JobRecord::kLogsAndConfig,
                "record_config() by a command registered without JobRecord::kLogsAndConfig");
  if (info_.rank != 0) return;
  const std::string path = write_resolved_config(config_, config_.job.output_dir);
  context_.log->info("config {} (hash {}) resolved to {}", config_.source, config_.hash, path);
}

std::shared_ptr<Communicator> RankSession::world_communicator(const std::string& backend) {
  if (context_.comm->backend_name() == backend) return context_.comm;
  for (const auto& comm : other_comms_)
    if (comm->backend_name() == backend) return comm;
  other_comms_.push_back(make_world_communicator(backend, info_.local_rank, watchdog_));
  return other_comms_.back();
}

void RankSession::log_error(const std::string& message) {
  if (file_log_) file_log_->error("{}", message);
}

void RankSession::leave_for_abort() {
  // A peer may already wait in a collective, so neither the communicator nor MPI is torn down
  // (joining or finalising could hang): queued collectives are abandoned and the objects are
  // deliberately leaked; run_guarded() ends the process right after the unwinding.
  if (context_.comm) context_.comm->abandon();
  new std::shared_ptr<Communicator>(std::move(context_.comm));
  for (auto& comm : other_comms_) {
    comm->abandon();
    new std::shared_ptr<Communicator>(std::move(comm));
  }
  new std::shared_ptr<CollectiveWatchdog>(std::move(watchdog_));
  mpi_.release();
}

RankSession::~RankSession() {
  if (context_.log) context_.log->flush();
  if (std::uncaught_exceptions() > uncaught_at_start_) {
    leave_for_abort();
    return;
  }
  other_comms_.clear();
  context_.comm.reset();
  watchdog_.reset();
  if (context_.log) context_.log->flush();
  mpi_.reset();
}

int run_guarded(const std::function<int()>& body) {
  ExitCode code = ExitCode::kRuntimeFailure;
  std::string message;
  bool reported_by_peer = false;
  try {
    return body();
  } catch (const PeerReportedError& e) {
    code = e.exit_code();
    message = e.what();
    reported_by_peer = true;
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
  // Every rank that meets the same bad input would print the same line: one prints it.
  const bool print = !reported_by_peer && (code != ExitCode::kBadInput || claim_error_report());
  if (print) {
    const char* kind = code == ExitCode::kBadInput ? "error" : "fatal error";
    if (mpi_live) {
      std::fprintf(stderr, "ptrain: [rank %d %s] %s: %s\n", rank, host_name().c_str(), kind,
                   message.c_str());
    } else {
      std::fprintf(stderr, "ptrain: %s: %s\n", kind, message.c_str());
    }
    std::fflush(stderr);
  }
  if (mpi_live && world > 1) {
    // The rank that printed ends the job; one MPI_Abort keeps mpirun's notice to one. Should that
    // rank not get there (it failed before MPI started, under a launcher that leaves the others
    // running), this one ends the job itself: a bounded wait, never a hang.
    if (!print) std::this_thread::sleep_for(std::chrono::seconds(5));
    MpiRuntime::abort_job(code);
  }
  // One rank: nothing to take down, but MPI (left initialised on this path) must not be finalised.
  if (mpi_live) {
    std::fflush(stdout);
    std::_Exit(static_cast<int>(code));
  }
  return static_cast<int>(code);
}

}  // namespace ptrain
