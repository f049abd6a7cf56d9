// The training loop's own outputs, as an observer: on rank 0, one JSON object per line in
// <output_dir>/metrics.jsonl (a "start" line, a "step" line per logged step, an "eval" line per
// evaluation, an "end" line), and the console: a progress bar with ETA redrawn in place when
// stdout is a terminal, plain log lines otherwise. Other ranks write nothing.
//
// metrics.jsonl fields: step lines {"type": "step", "step", "total_steps", "epoch", "loss", "lr",
// "grad_norm", "tokens", "tokens_per_s", "mfu", "exposed_comm_s", "exposed_comm_fraction",
// "peak_rss_bytes", "step_s", "skipped_steps", "applied"}; eval lines {"type": "eval", "step",
// "eval_loss", "eval_perplexity", "eval_accuracy", "eval_tokens"}; the file is appended line by
// line and flushed, so a dashboard can tail it during the run.
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "trainer/train_observer.h"

namespace ptrain {

class MetricsLog final : public TrainingObserver {
 public:
  // `path`: the metrics.jsonl to write (truncated at start) when `writer` (rank 0).
  MetricsLog(std::string path, bool writer, std::shared_ptr<spdlog::logger> log, bool progress_bar);
  ~MetricsLog() override;

  void on_start(const TrainStart& start) override;
  void on_step(const StepMetrics& step) override;
  void on_eval(const EvalMetrics& eval) override;
  void on_end(const TrainEnd& end) override;

 private:
  void write(const std::string& line);

  std::string path_;
  bool writer_;
  std::shared_ptr<spdlog::logger> log_;
  bool progress_bar_;
  std::FILE* file_ = nullptr;
  int64_t total_steps_ = 0, first_step_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace ptrain
