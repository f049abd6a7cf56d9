#include "launcher/coordinator_link.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "cluster/coordinator_client.h"
#include "cluster/coordinator_server.h"
#include "cluster/job_state.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/host_port.h"
#include "parallel/collective_watchdog.h"
#include "parallel/communicator.h"
#include "trainer/hardware.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;

// The config's relations (core/config.cpp) have refused both set, and TLS the ranks could not
// trust.
std::string auth_token(const CoordinatorConfig& c) {
  return c.auth_token_file.empty() ? c.auth_token : read_token_file(c.auth_token_file);
}

std::string job_id(const JobConfig& job) {
  if (!job.coordinator.job_id.empty()) return job.coordinator.job_id;
  const fs::path dir = fs::absolute(job.output_dir).lexically_normal();
  const std::string name = (dir.has_filename() ? dir : dir.parent_path()).filename().string();
  return name.empty() ? "ptrain" : name;
}

// A variable ptrain-launch sets for the job's ranks (docs/launch.md); "" when unset.
std::string supervisor_env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// When this process started: its start time in clock ticks after boot (/proc/self/stat, field
// 22) and the boot time (/proc/stat btime). 0 where they cannot be read.
double process_start_unix_s() {
  const std::vector<std::string> fields = proc_stat_fields(0);
  if (fields.size() <= 19) return 0;
  std::ifstream boot("/proc/stat");
  for (std::string key; boot >> key;)
    if (key == "btime") {
      double btime = 0;
      boot >> btime;
      return btime + std::stod(fields[19]) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  return 0;
}

}  // namespace

struct CoordinatorLink::HangReporter {
  std::mutex mu;
  CoordinatorClient* client = nullptr;
  double timeout_s = 2;

  // The report as ReportEventRequest.HANG carries it: the newest records that fit in the
  // service's 4 KiB bound.
  static std::string message(const std::string& report,
                             const std::vector<CollectiveRecord>& recent) {
    nlohmann::json records = nlohmann::json::array();
    for (const CollectiveRecord& r : recent)
      records.push_back({{"comm", r.communicator},
                         {"op", r.op},
                         {"seq", r.seq},
                         {"step", r.step},
                         {"bytes", r.bytes},
                         {"started", r.started_unix_s},
                         {"finished", r.finished_unix_s}});
    nlohmann::json body = {{"report", report.substr(0, 600)}, {"recent", records}};
    std::string text = body.dump();
    // Over the bound, the oldest finished records go first: the stuck one (running) stays.
    while (text.size() > 4000) {
      nlohmann::json& list = body["recent"];
      auto finished = std::find_if(list.begin(), list.end(), [](const nlohmann::json& r) {
        return r["finished"].get<double>() != 0;
      });
      if (finished == list.end()) break;
      list.erase(finished);
      text = body.dump();
    }
    return text;
  }

  void send(const std::string& report, const std::vector<CollectiveRecord>& recent) {
    std::lock_guard<std::mutex> lock(mu);
    if (client == nullptr) return;  // before registration, or the link is gone
    v1::ReportEventRequest event;
    event.set_kind(v1::ReportEventRequest::HANG);
    event.set_message(message(report, recent));
    client->report_event(std::move(event));
    client->flush(timeout_s);
  }
};

CoordinatorLink::CoordinatorLink(const ResolvedConfig& config, const RankContext& ctx,
                                 CollectiveWatchdog* watchdog)
    : config_(config), ctx_(ctx), hang_reporter_(std::make_shared<HangReporter>()) {
  hang_reporter_->timeout_s = std::min(2.0, config.job.coordinator.rpc_timeout);
  if (watchdog != nullptr)
    watchdog->add_fire_hook(
        [reporter = hang_reporter_](const std::string& report,
                                    const std::vector<CollectiveRecord>& recent) {
          reporter->send(report, recent);
        });
  const CoordinatorConfig& c = config.job.coordinator;
  auth_token_ = auth_token(c);
  // Under ptrain-launch the supervisor's coordinator is the job's, whatever the config says.
  const std::string configured = supervisor_env("PTRAIN_COORDINATOR_ADDRESS").empty()
                                     ? c.address
                                     : supervisor_env("PTRAIN_COORDINATOR_ADDRESS");
  std::string address = configured;
  std::string failure;
  if (address.empty() && ctx.rank == 0) {
    try {
      CoordinatorServerOptions options;
      options.listen = c.listen;
      options.state_path = (fs::path(config.job.output_dir) / "coordinator.db").string();
      options.auth_token = auth_token_;
      options.tls_cert = c.tls_cert;
      options.tls_key = c.tls_key;
      options.tls_client_ca = c.tls_client_ca;
      options.metrics_listen = c.metrics_listen;
      options.heartbeat_interval_s = c.heartbeat_interval;
      options.heartbeat_timeout_s = c.heartbeat_timeout;
      try {
        server_ = std::make_unique<CoordinatorServer>(options, ctx.log);
      } catch (const CorruptData& e) {
        // A damaged state file must not stop the job: it is kept aside and a new one begun.
        const std::string aside = options.state_path + ".damaged";
        for (const char* suffix : {"", "-wal", "-shm"}) {
          std::error_code ec;
          fs::rename(options.state_path + suffix, aside + suffix, ec);
        }
        ctx.log->warn("{}: moved aside as {}; the coordinator starts a new state", e.what(), aside);
        server_ = std::make_unique<CoordinatorServer>(options, ctx.log);
      }
      // The job keeps the name its state already has (an output_dir renamed since, say).
      job_id_ = server_->job().status().job_id();
      address = dial_address(server_->address(), ctx.host);
      write_file_atomic((fs::path(config.job.output_dir) / "coordinator.addr").string(),
                        address + "\n");
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  if (configured.empty()) {
    // Every rank fails the same way when rank 0's coordinator cannot start.
    failure = broadcast_string(*ctx.comm, failure, 0);
    PTRAIN_CHECK(failure.empty(), "the in-process coordinator did not start: {}", failure);
    address = broadcast_string(*ctx.comm, address, 0);
  }
  address_ = address;
  if (job_id_.empty()) job_id_ = job_id(config.job);
  if (configured.empty()) job_id_ = broadcast_string(*ctx.comm, job_id_, 0);
  // The supervisor names its launches (it reports how each ended); a launch of its own otherwise.
  const std::string launch_id = supervisor_env("PTRAIN_LAUNCH_ID");
  launch_id_ = broadcast_string(*ctx.comm,
                                ctx.rank != 0       ? ""
                                : launch_id.empty() ? new_launch_id()
                                                    : launch_id,
                                0);
}

CoordinatorLink::~CoordinatorLink() {
  {
    std::lock_guard<std::mutex> lock(hang_reporter_->mu);
    hang_reporter_->client = nullptr;
  }
  client_.reset();
  server_.reset();
}

void CoordinatorLink::start_attempt(int64_t first_step, int64_t total_steps,
                                    double resume_seconds) {
  const CoordinatorConfig& c = config_.job.coordinator;
  CoordinatorClientOptions options;
  options.rpc.address = address_;
  options.rpc.auth_token = auth_token_;
  options.rpc.tls_ca = c.tls_ca;
  options.rpc.tls_cert = c.tls_client_cert;
  options.rpc.tls_key = c.tls_client_key;
  options.rpc.rpc_timeout_s = c.rpc_timeout;
  options.job_id = job_id_;
  options.launch_id = launch_id_;
  options.rank = ctx_.rank;
  options.world = ctx_.world;
  options.host = ctx_.host;
  options.pid = getpid();
  options.config_hash = config_.hash;
  options.first_step = first_step;
  options.total_steps = total_steps;
  options.process_start_unix_s = process_start_unix_s();
  options.resume_seconds = resume_seconds;
  options.heartbeat_interval_s = c.heartbeat_interval;
  client_ = std::make_unique<CoordinatorClient>(options, ctx_.log);
  {
    std::lock_guard<std::mutex> lock(hang_reporter_->mu);
    hang_reporter_->client = client_.get();
  }
  if (ctx_.rank == 0) ctx_.log->info("coordinator: {} (job {})", address_, options.job_id);
}

void CoordinatorLink::on_rank_written(int64_t step, uint64_t bytes, const std::string& xxh3,
                                      const std::string& error) {
  if (!client_) return;
  v1::ReportCheckpointRequest report;
  report.set_kind(error.empty() ? v1::ReportCheckpointRequest::WRITTEN
                                : v1::ReportCheckpointRequest::FAILED);
  report.set_step(step);
  report.set_bytes(static_cast<int64_t>(bytes));
  report.set_checksum(xxh3);
  report.set_error(error);
  client_->report_checkpoint(std::move(report));
}

void CoordinatorLink::on_saved(const SaveResult& result) {
  if (!client_ || ctx_.rank != 0) return;
  v1::ReportCheckpointRequest report;
  report.set_step(result.step);
  if (result.committed) {
    report.set_kind(v1::ReportCheckpointRequest::COMMITTED);
    report.set_handled_command(client_->handled());
    report.set_dir(fs::absolute(result.dir).lexically_normal().string());
    report.set_bytes(static_cast<int64_t>(result.bytes));
    report.set_files(result.files);
    if (!client_->report_commit(std::move(report), config_.job.coordinator.commit_timeout))
      ctx_.log->warn(
          "the coordinator has not recorded the commit of step {} (it does not answer, or not "
          "within coordinator.commit_timeout {} s): the checkpoint stands on its manifest and is "
          "reported when the coordinator answers",
          result.step, config_.job.coordinator.commit_timeout);
  } else {
    report.set_kind(v1::ReportCheckpointRequest::FAILED);
    report.set_error(result.error);
    client_->report_checkpoint(std::move(report));
  }
}

void CoordinatorLink::end_attempt(const std::string& reason, const std::string& message,
                                  int64_t step) {
  if (!client_ || ended_) return;
  ended_ = true;
  if (ctx_.rank == 0) {
    v1::ReportEventRequest report;
    report.set_kind(v1::ReportEventRequest::ATTEMPT_END);
    report.set_step(step);
    report.set_reason(reason);
    report.set_message(message.substr(0, 4000));
    client_->report_event(std::move(report));
  }
  if (!client_->flush(config_.job.coordinator.rpc_timeout) && ctx_.rank == 0)
    ctx_.log->warn("the coordinator at {} did not hear the end of the attempt ({})", address_,
                   reason);
}

void CoordinatorLink::on_step(const StepMetrics& metrics) {
  if (!client_) return;
  const StepResult& r = metrics.result;
  client_->set_rank_state(r.step + 1, current_rss_bytes(), 0);
  if (ctx_.rank != 0) return;
  v1::Progress progress;
  progress.set_step(r.step + 1);
  progress.set_epoch(metrics.epoch);
  progress.set_loss(r.loss);
  progress.set_learning_rate(r.lr);
  progress.set_grad_norm(r.grad_norm);
  progress.set_tokens_per_second(metrics.tokens_per_second);
  progress.set_mfu(metrics.mfu);
  progress.set_step_seconds(metrics.seconds);
  progress.set_batch_tokens(r.tokens);
  progress.set_unix_s(unix_now());
  client_->add_progress(progress);
}

void CoordinatorLink::on_eval(const EvalMetrics& eval) {
  if (!client_ || ctx_.rank != 0) return;
  v1::ReportEventRequest report;
  report.set_kind(v1::ReportEventRequest::EVAL);
  report.set_step(eval.step);
  report.set_eval_loss(eval.loss);
  client_->report_event(std::move(report));
}

StepDecision CoordinatorLink::at_step_boundary(int64_t completed_steps) {
  StepDecision decision;
  if (!client_) return decision;
  client_->set_rank_state(completed_steps, current_rss_bytes(), 0);
  vote_ = client_->command_vote();
  decision.stop = vote_.stop;
  decision.checkpoint = vote_.stop || vote_.checkpoint;
  return decision;
}

void CoordinatorLink::on_decision(int64_t /*completed_steps*/, const StepDecision& agreed) {
  if (!client_ || !(agreed.checkpoint || agreed.stop)) return;
  // Every command up to the newest any rank had seen when it voted is carried out at this step:
  // that rank voted for each of them. One heard of since the vote waits for the next boundary.
  int64_t newest = vote_.newest;
  ctx_.comm->all_reduce(comm_buffer(&newest, 1), ReduceOp::kMax);
  client_->set_handled(newest);
}

}  // namespace ptrain
