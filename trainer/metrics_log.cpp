#include "trainer/metrics_log.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ptrain {
namespace {

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

}  // namespace

MetricsLog::MetricsLog(std::string path, bool writer, std::shared_ptr<spdlog::logger> log,
                       bool progress_bar)
    : path_(std::move(path)), writer_(writer), log_(std::move(log)), progress_bar_(progress_bar) {}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const std::string& line) {
  if (!file_) return;
  // A full disk or a lost mount is a fault of the run, not bad input (exit code 1, not 2).
  if (std::fputs((line + "\n").c_str(), file_) < 0 || std::fflush(file_) != 0)
    throw RuntimeFailure(fmt::format("cannot write '{}': {}", path_, std::strerror(errno)));
}

void MetricsLog::on_start(const TrainStart& start) {
  total_steps_ = start.total_steps;
  first_step_ = start.first_step;
  start_ = std::chrono::steady_clock::now();
  if (!writer_) return;
  file_ = std::fopen(path_.c_str(), first_step_ > 0 ? "a+" : "w");
  PTRAIN_CHECK(file_ != nullptr, "cannot write '{}': {}", path_, std::strerror(errno));
  // A resumed run appends; a line the killed run left half-written ends here, so the records
  // after it stay one per line.
  if (first_step_ > 0 && std::fseek(file_, -1, SEEK_END) == 0) {
    const bool partial = std::fgetc(file_) != '\n';
    std::fseek(file_, 0, SEEK_END);  // between a read and a write on one stream
    if (partial) write("");
  }
  write(nlohmann::json{{"type", "start"},
                       {"total_steps", start.total_steps},
                       {"first_step", start.first_step},
                       {"steps_per_epoch", start.steps_per_epoch},
                       {"world", start.world},
                       {"shard_size", start.shard_size},
                       {"gemm_peak_gflops", start.gemm_peak_gflops},
                       {"ideal_bytes", start.ideal_bytes}}
            .dump());
  if (log_)
    log_->info("training: {} optimizer steps ({} per epoch) on {} ranks (shard groups of {})",
               start.total_steps, start.steps_per_epoch, start.world, start.shard_size);
}

void MetricsLog::on_step(const StepMetrics& m) {
  if (!writer_) return;
  const StepResult& r = m.result;
  const int64_t done = r.step + 1;
  write(nlohmann::json{{"type", "step"},
                       {"step", done},
                       {"total_steps", total_steps_},
                       {"epoch", m.epoch},
                       {"loss", r.loss},
                       {"lr", r.lr},
                       {"grad_norm", r.grad_norm},
                       {"tokens", r.tokens},
                       {"tokens_per_s", m.tokens_per_second},
                       {"mfu", m.mfu},
                       {"exposed_comm_s", m.exposed_comm_seconds},
                       {"exposed_comm_fraction", m.exposed_comm_fraction},
                       {"peak_rss_bytes", m.peak_rss_bytes},
                       {"step_s", m.seconds},
                       {"skipped_steps", m.skipped_steps},
                       {"applied", r.applied}}
            .dump());
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, done - first_step_));
  const double eta = per_step * static_cast<double>(total_steps_ - done);
  const std::string text = fmt::format(
      "step {}/{} loss {:.4f} lr {:.3g} grad_norm {:.3f} {:.0f} tok/s mfu {:.1f}% "
      "comm {:.0f}% rss {:.2f} GB eta {}{}",
      done, total_steps_, r.loss, r.lr, r.grad_norm, m.tokens_per_second, 100 * m.mfu,
      100 * m.exposed_comm_fraction, m.peak_rss_bytes / 1e9, duration(eta),
      r.non_finite ? " (non-finite: skipped)" : "");
  if (progress_bar_) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * done / std::max<int64_t>(1, total_steps_));
    std::printf("\r\033[K[%s%s] %s", std::string(filled, '#').c_str(),
                std::string(kWidth - filled, '.').c_str(), text.c_str());
    if (done == total_steps_) std::printf("\n");
    std::fflush(stdout);
  } else if (log_) {
    log_->info("{}", text);
  }
}

void MetricsLog::on_eval(const EvalMetrics& e) {
  if (!writer_) return;
  write(nlohmann::json{{"type", "eval"},
                       {"step", e.step},
                       {"eval_loss", e.loss},
                       {"eval_perplexity", e.perplexity},
                       {"eval_accuracy", e.accuracy},
                       {"eval_tokens", e.tokens}}
            .dump());
  if (progress_bar_) std::printf("\r\033[K");
  if (log_)
    log_->info(
        "eval after step {}: loss {:.4f}, perplexity {:.3f}, token accuracy {:.1f}% ({} "
        "tokens)",
        e.step, e.loss, e.perplexity, 100 * e.accuracy, e.tokens);
}

void MetricsLog::on_end(const TrainEnd& end) {
  if (!writer_) return;
  write(nlohmann::json{
      {"type", "end"}, {"steps", end.steps}, {"seconds", end.seconds}, {"reason", end.reason}}
            .dump());
  if (log_)
    log_->info("training {} after {} steps in {}", end.reason, end.steps, duration(end.seconds));
}

}  // namespace ptrain
