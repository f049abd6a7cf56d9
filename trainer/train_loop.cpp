#include "trainer/train_loop.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "data/packing.h"
#include "trainer/hardware.h"

namespace ptrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

at::Tensor long_tensor(const std::vector<int64_t>& values, int64_t rows, int64_t width) {
  return torch::from_blob(const_cast<int64_t*>(values.data()), {rows, width}, torch::kLong).clone();
}

// A row of padding only: it takes part in the collectives and scores nothing.
PackedBatch padding_batch(int64_t rows, int64_t width) {
  PackedBatch b;
  b.input_ids = torch::zeros({rows, width}, torch::kLong);
  b.position_ids = torch::zeros({rows, width}, torch::kLong);
  b.sequence_ids = torch::full({rows, width}, -1, torch::kLong);
  b.labels = torch::full({rows, width}, -100, torch::kLong);
  return b;
}

PackedBatch on_device(PackedBatch b, const at::Device& device) {
  if (device.is_cpu()) return b;
  for (at::Tensor* t : {&b.input_ids, &b.position_ids, &b.sequence_ids, &b.labels})
    *t = t->to(device);
  return b;
}

}  // namespace

nlohmann::json LoopCounters::state() const {
  return {{"skipped_steps", skipped}, {"consecutive_nonfinite_steps", consecutive_nonfinite}};
}

void LoopCounters::restore(const nlohmann::json& state) {
  try {
    skipped = state.at("skipped_steps").get<int64_t>();
    consecutive_nonfinite = state.at("consecutive_nonfinite_steps").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw UserError(
        fmt::format("loop state: expected {{\"skipped_steps\", "
                    "\"consecutive_nonfinite_steps\"}}, got {} ({})",
                    state.dump(), e.what()));
  }
}

int64_t micro_batches_left(const LoopOptions& options, const TrainBatches& batches,
                           int64_t first_step) {
  if (options.max_steps > 0)
    return std::max<int64_t>(0, options.max_steps - first_step) *
           options.gradient_accumulation_steps;
  if (batches.epoch() >= options.num_epochs) return 0;
  return batches.micro_batches_left_in_epoch() +
         (options.num_epochs - 1 - batches.epoch()) * batches.micro_batches_per_epoch();
}

int64_t planned_steps(const LoopOptions& options, const TrainBatches& batches, int64_t first_step) {
  if (options.max_steps > 0) return options.max_steps;
  const int64_t left = micro_batches_left(options, batches, first_step);
  return first_step +
         (left + options.gradient_accumulation_steps - 1) / options.gradient_accumulation_steps;
}

PackedBatch to_packed_batch(const RowBatch& rows) {
  PackedBatch b;
  b.input_ids = long_tensor(rows.input_ids, rows.rows, rows.width);
  b.position_ids = long_tensor(rows.position_ids, rows.rows, rows.width);
  b.sequence_ids = long_tensor(rows.sequence_ids, rows.rows, rows.width);
  b.labels = long_tensor(rows.labels, rows.rows, rows.width);
  return b;
}

TrainLoop::TrainLoop(LlamaForCausalLM model, ShardedModel& sharded, TrainStep& step,
                     TrainBatches& batches, std::vector<TokenSample> validation,
                     Communicator& world, LoopOptions options)
    : model_(std::move(model)),
      sharded_(sharded),
      step_(step),
      batches_(batches),
      validation_(std::move(validation)),
      world_(world),
      options_(options) {
  total_steps_ = planned_steps(options_, batches_, step_.next_step());
  micro_batches_left_ = micro_batches_left(options_, batches_, step_.next_step());
}

// ---------------------------------------------------------------- the loop

TrainEnd TrainLoop::run() {
  const auto start = Clock::now();
  TrainStart info;
  info.total_steps = total_steps_;
  info.first_step = step_.next_step();
  info.micro_batches_per_epoch = batches_.micro_batches_per_epoch();
  info.steps_per_epoch = (info.micro_batches_per_epoch + options_.gradient_accumulation_steps - 1) /
                         options_.gradient_accumulation_steps;
  info.world = world_.size();
  info.shard_size = sharded_.groups().shard_size();
  info.gemm_peak_gflops = options_.gemm_peak_gflops;
  info.ideal_bytes = options_.ideal_bytes;
  for (TrainingObserver* o : observers_) o->on_start(info);

  // A baseline for the evaluations to come: the model before its first step.
  if (!validation_.empty() && step_.next_step() == 0) {
    const EvalMetrics e = evaluate(0);
    for (TrainingObserver* o : observers_) o->on_eval(e);
  }
  TrainEnd end;
  end.reason = "finished";
  int64_t& consecutive_nonfinite = counters_.consecutive_nonfinite;
  int64_t& skipped = counters_.skipped;
  model_->train();
  int64_t left = micro_batches_left_;
  for (int64_t s = step_.next_step(); s < total_steps_; ++s) {
    const int64_t count = std::min(options_.gradient_accumulation_steps, left);
    left -= count;
    const auto step_start = Clock::now();
    const double exposed_before = sharded_.stats().exposed_seconds;
    std::vector<PackedBatch> micro_batches;
    for (int64_t i = 0; i < count; ++i)
      micro_batches.push_back(on_device(to_packed_batch(batches_.next()), options_.device));
    const StepResult result = step_.run(micro_batches);
    const double seconds = seconds_since(step_start);
    if (result.non_finite) {
      ++skipped;
      ++consecutive_nonfinite;
      if (consecutive_nonfinite >= options_.max_nonfinite_steps) {
        // The observers see the end (metrics.jsonl's "end" line names why) before the error.
        end.steps = s + 1;
        end.reason = "max_nonfinite_steps";
        end.seconds = seconds_since(start);
        for (TrainingObserver* o : observers_) o->on_end(end);
        throw UserError(fmt::format(
            "training diverged: {} consecutive steps (the last is step {}) had a non-finite loss "
            "or gradient norm (loss {}, grad norm {}); none of them changed the weights. Lower "
            "learning_rate, raise warmup, or set max_grad_norm (max_nonfinite_steps: {})",
            consecutive_nonfinite, result.step + 1, result.loss, result.grad_norm,
            options_.max_nonfinite_steps));
      }
    } else {
      consecutive_nonfinite = 0;
    }
    const int64_t completed = s + 1;
    if (completed % options_.logging_steps == 0 || completed == total_steps_) {
      const StepMetrics m =
          measure(result, seconds, sharded_.stats().exposed_seconds - exposed_before, skipped);
      for (TrainingObserver* o : observers_) o->on_step(m);
    }
    end.steps = completed;
    if (!validation_.empty() && options_.eval_steps > 0 && completed % options_.eval_steps == 0 &&
        completed != total_steps_) {
      const EvalMetrics e = evaluate(completed);
      for (TrainingObserver* o : observers_) o->on_eval(e);
    }
    const StepDecision decision = agree(completed);
    for (TrainingObserver* o : observers_) o->on_decision(completed, decision);
    if (decision.stop && completed != total_steps_) {
      end.reason = "stopped";
      break;
    }
  }
  if (!validation_.empty() && end.reason == "finished") {
    const EvalMetrics e = evaluate(end.steps);
    for (TrainingObserver* o : observers_) o->on_eval(e);
  }
  end.seconds = seconds_since(start);
  for (TrainingObserver* o : observers_) o->on_end(end);
  return end;
}

StepDecision TrainLoop::agree(int64_t completed_steps) {
  int32_t votes[3] = {0, 0, 0};
  for (TrainingObserver* o : observers_) {
    const StepDecision d = o->at_step_boundary(completed_steps);
    votes[0] |= d.checkpoint ? 1 : 0;
    votes[1] |= d.stop ? 1 : 0;
    votes[2] |= d.writing ? 1 : 0;
  }
  world_.all_reduce(comm_buffer(votes, 3), ReduceOp::kMax);
  return {votes[0] != 0, votes[1] != 0, votes[2] != 0};
}

StepMetrics TrainLoop::measure(const StepResult& result, double seconds, double exposed,
                               int64_t skipped) {
  StepMetrics m;
  m.result = result;
  m.epoch = batches_.epoch();
  m.skipped_steps = skipped;
  // The slowest rank's view: the step took as long as its slowest rank.
  double worst[3] = {seconds, exposed, static_cast<double>(peak_rss_bytes())};
  world_.all_reduce(comm_buffer(worst, 3), ReduceOp::kMax);
  m.seconds = worst[0];
  m.exposed_comm_seconds = worst[1];
  m.exposed_comm_fraction = worst[0] > 0 ? worst[1] / worst[0] : 0;
  m.peak_rss_bytes = static_cast<int64_t>(worst[2]);
  m.tokens_per_second = m.seconds > 0 ? static_cast<double>(result.tokens) / m.seconds : 0;
  if (options_.gemm_peak_gflops > 0 && m.seconds > 0)
    // FLOPs go to every token of a row, learned or not (prompts, chat markers); not to padding.
    m.mfu = options_.flops_per_token * static_cast<double>(result.row_tokens) / m.seconds /
            world_.size() / (options_.gemm_peak_gflops * 1e9);
  return m;
}

// ---------------------------------------------------------------- evaluation

EvalMetrics TrainLoop::evaluate(int64_t completed_steps) {
  torch::NoGradGuard no_grad;
  model_->eval();
  std::vector<int64_t> lengths;
  for (const TokenSample& s : validation_)
    lengths.push_back(static_cast<int64_t>(s.input_ids.size()));
  PackingOptions packing;
  packing.sequence_len = options_.sequence_len;
  packing.group_size = std::max<int64_t>(1, static_cast<int64_t>(lengths.size()));
  const PackedLayout layout = pack_samples(lengths, packing);
  const int world = world_.size(), rank = world_.rank();
  const int64_t per_round = static_cast<int64_t>(world) * options_.micro_batch_size;
  const int64_t rounds = (layout.rows() + per_round - 1) / per_round;
  double sums[3] = {0, 0, 0};  // loss sum, learned tokens, correct predictions
  for (int64_t round = 0; round < rounds; ++round) {
    std::vector<std::vector<SampleSpan>> rows;
    for (int64_t j = 0; j < options_.micro_batch_size; ++j) {
      const int64_t row = round * per_round + rank * options_.micro_batch_size + j;
      if (row >= layout.rows()) break;
      std::vector<SampleSpan> spans;
      for (int64_t k = layout.row_offsets[row]; k < layout.row_offsets[row + 1]; ++k) {
        const TokenSample& sample = validation_[static_cast<size_t>(layout.samples[k])];
        spans.push_back({sample.input_ids.data(),
                         sample.labels.empty() ? nullptr : sample.labels.data(),
                         static_cast<int64_t>(sample.input_ids.size())});
      }
      rows.push_back(std::move(spans));
    }
    const PackedBatch batch = on_device(rows.empty() ? padding_batch(1, options_.sequence_len)
                                                     : pack_rows(rows, options_.sequence_len),
                                        options_.device);
    // Loss and accuracy from the same fp32 logits, never [tokens, vocab] at once.
    const auto [loss, correct] = model_->score(batch);
    sums[0] += loss;
    sums[1] += batch.labels.ne(-100).sum().item<double>();
    sums[2] += static_cast<double>(correct);
  }
  world_.all_reduce(comm_buffer(sums, 3), ReduceOp::kSum);
  model_->train();
  EvalMetrics e;
  e.step = completed_steps;
  e.tokens = static_cast<int64_t>(sums[1]);
  e.loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
  e.perplexity = std::exp(e.loss);
  e.accuracy = sums[1] > 0 ? sums[2] / sums[1] : 0;
  return e;
}

}  // namespace ptrain
