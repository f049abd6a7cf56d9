// Sharded training on N ranks against an independent reference in one process: the same model
// trained on the same global batches with plain libtorch (the whole batch in one backward, the
// loss divided by its token count, torch::nn::utils::clip_grad_norm_, torch::optim::AdamW with
// a no-decay group for vectors, the learning rate set by hand each step). Losses and final weights
// must agree to fp32 rounding (1e-5 relative: losses to their value, weights to their tensor's
// largest element), for full training, LoRA and QLoRA, every sharding
// strategy, HSDP, both gradient-reduction modes, with and without activation checkpointing; and in
// (q)lora mode every frozen byte (NF4 buffers included) must be unchanged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <random>

#include "model/llama.h"
#include "parallel/fsdp_groups.h"
#include "tests/mpi/mpi_test_env.h"
#include "trainer/fsdp/sharded_model.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/train_step.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

enum class Mode { kFull, kLora, kQlora };

struct Case {
  Mode mode;
  int shard_size;  // 0: the world
  bool reshard_after_forward;
  bool reduce_every_micro_batch;
  bool checkpointing;
  int64_t reduce_chunk = 0;  // > 0: FsdpOptions::reduce_chunk_numel
};

std::string describe(const Case& c) {
  const char* mode = c.mode == Mode::kFull ? "full" : c.mode == Mode::kLora ? "lora" : "qlora";
  return fmt::format("{} shard_size {} reshard {} reduce_every {} checkpointing {} chunk {}", mode,
                     c.shard_size, c.reshard_after_forward, c.reduce_every_micro_batch,
                     c.checkpointing, c.reduce_chunk);
}

constexpr int kMicroBatch = 1, kAccumulation = 2, kSteps = 3;
constexpr double kMaxGradNorm = 0.5;

LlamaForCausalLM make(const Case& c, at::ScalarType dtype = at::kFloat) {
  LlamaConfig config = micro_config();
  config.vocab_size = 23;
  ModelOptions options;
  options.dtype = dtype;
  options.nf4_base = c.mode == Mode::kQlora;
  options.activation_checkpointing = c.checkpointing;
  options.loss_chunk_tokens = 7;
  LlamaForCausalLM model(config, options);
  model->initialize(5);
  if (c.mode != Mode::kFull) {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    LoraOptions lora;
    lora.r = 2;
    auto generator = at::make_generator<at::CPUGeneratorImpl>(8);
    for (auto& [name, p] : model->projections()) {
      p->add_lora(lora, generator);
      p->lora_b().normal_(0, 0.2, generator);  // B = 0 would give A no gradient at step 0
    }
  }
  return model;
}

// Rows of global step s: world x kAccumulation x kMicroBatch rows of random samples (several per
// row, some rows with more learned tokens than others), the same on every rank.
std::vector<std::vector<std::vector<int64_t>>> step_rows(int step, int world) {
  std::mt19937 rng(100 + step);
  std::vector<std::vector<std::vector<int64_t>>> rows(world * kAccumulation * kMicroBatch);
  for (auto& row : rows) {
    const int samples = 1 + static_cast<int>(rng() % 3);
    for (int s = 0; s < samples; ++s) {
      std::vector<int64_t> sample(2 + rng() % 4);
      for (auto& id : sample) id = static_cast<int64_t>(rng() % 23);
      row.push_back(sample);
    }
  }
  return rows;
}

constexpr int64_t kSeq = 16;

// Global micro-batch a holds rows [a * world * m, (a + 1) * world * m); rank r the r-th run of m.
std::vector<PackedBatch> rank_micro_batches(int step, int world, int rank) {
  const auto rows = step_rows(step, world);
  std::vector<PackedBatch> out;
  for (int a = 0; a < kAccumulation; ++a) {
    const auto first = rows.begin() + (a * world + rank) * kMicroBatch;
    out.push_back(make_packed_batch({first, first + kMicroBatch}, kSeq));
  }
  return out;
}

LrSchedule schedule() {
  return LrSchedule("cosine", 5e-2, kSteps, 1);
}

AdamWOptions adamw_options() {
  AdamWOptions o;
  o.weight_decay = 0.1;
  return o;
}

// The reference: plain libtorch on one process, the whole global batch in one backward.
struct Reference {
  std::vector<double> losses;
  std::map<std::string, at::Tensor> weights;
};

Reference train_reference(const Case& c, int world) {
  LlamaForCausalLM model = make(c);
  model->train();
  std::vector<at::Tensor> decay, no_decay;
  for (auto& p : model->parameters())
    if (p.requires_grad()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  const AdamWOptions o = adamw_options();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(0.0)
                                                              .betas({o.beta1, o.beta2})
                                                              .eps(o.eps)
                                                              .weight_decay(o.weight_decay)));
  groups.emplace_back(
      no_decay,
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(0.0).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(groups));
  const LrSchedule lr = schedule();
  Reference ref;
  for (int s = 0; s < kSteps; ++s) {
    const auto rows = step_rows(s, world);
    const PackedBatch batch = make_packed_batch(rows, kSeq);
    const double tokens = batch.labels.ne(-100).sum().item<double>();
    optimizer.zero_grad();
    at::Tensor loss = model->loss_sum(batch) / tokens;
    loss.backward();
    ref.losses.push_back(loss.item<double>());
    std::vector<at::Tensor> params = decay;
    params.insert(params.end(), no_decay.begin(), no_decay.end());
    torch::nn::utils::clip_grad_norm_(params, kMaxGradNorm);
    for (auto& group : optimizer.param_groups()) group.options().set_lr(lr.at(s));
    optimizer.step();
  }
  for (const auto& p : model->named_parameters()) ref.weights[p.key()] = p.value().detach().clone();
  for (const auto& b : model->named_buffers()) ref.weights[b.key()] = b.value().detach().clone();
  return ref;
}

void check_case(const Case& c) {
  SCOPED_TRACE(describe(c));
  Communicator& world = test::world();
  const Reference ref = train_reference(c, world.size());

  LlamaForCausalLM model = make(c);
  model->train();
  // Frozen bytes before training (the model's own copy: sharding releases the tensors).
  std::map<std::string, at::Tensor> frozen_before;
  for (const auto& unit : model->units()) {
    for (const auto& t : unit.frozen) frozen_before[t.name] = t.tensor.detach().clone();
    for (const auto& t : unit.frozen_bytes) frozen_before[t.name] = t.tensor.detach().clone();
  }
  auto world_ptr = std::shared_ptr<Communicator>(&world, [](Communicator*) {});
  FsdpGroups groups =
      make_fsdp_groups(world_ptr, c.shard_size ? c.shard_size : world.size(), "test");
  FsdpOptions options;
  options.reshard_after_forward = c.reshard_after_forward;
  options.reduce_every_micro_batch = c.reduce_every_micro_batch;
  if (c.reduce_chunk > 0) options.reduce_chunk_numel = c.reduce_chunk;
  ShardedModel sharded(model, groups, options);
  AdamW optimizer(optimized_tensors(sharded), adamw_options());
  const LrSchedule lr = schedule();
  TrainStep step(model, sharded, optimizer, lr, world, kMaxGradNorm);
  for (int s = 0; s < kSteps; ++s) {
    const StepResult r = step.run(rank_micro_batches(s, world.size(), world.rank()));
    EXPECT_TRUE(r.applied);
    EXPECT_NEAR(r.loss, ref.losses[s], 1e-5 * std::abs(ref.losses[s])) << "step " << s;
  }
  size_t compared = 0;
  sharded.for_each_full_tensor(false, [&](const std::string& name, const at::Tensor& value) {
    ASSERT_TRUE(ref.weights.count(name)) << name;
    const at::Tensor& expected = ref.weights.at(name);
    ++compared;
    if (frozen_before.count(name)) {
      EXPECT_TRUE(torch::equal(value, frozen_before.at(name))) << name << " changed";
      return;
    }
    // Relative to the tensor's largest element: Adam normalises each element's step, so an
    // element near zero moves by about lr whatever its gradient's rounding, and an elementwise
    // relative bound would judge fp32 rounding of a tiny gradient.
    const double difference = (value - expected).abs().max().item<double>();
    const double magnitude = expected.abs().max().item<double>();
    EXPECT_LE(difference, 1e-5 * magnitude)
        << name << ": max difference " << difference << " of " << magnitude;
  });
  EXPECT_EQ(compared, ref.weights.size());
}

// The weights after one step over this rank's rows given as `split` micro-batches, and that
// step's (clipped) gradient shards.
std::map<std::string, at::Tensor> one_step(
    const std::vector<std::vector<std::vector<int64_t>>>& rows, size_t split, double* loss,
    std::vector<at::Tensor>* gradients) {
  Communicator& world = test::world();
  const Case c{Mode::kFull, 0, true, true, true};
  LlamaForCausalLM model = make(c);
  model->train();
  auto world_ptr = std::shared_ptr<Communicator>(&world, [](Communicator*) {});
  ShardedModel sharded(model, make_fsdp_groups(world_ptr, world.size(), "test"), FsdpOptions{});
  AdamW optimizer(optimized_tensors(sharded), adamw_options());
  const LrSchedule lr = schedule();
  TrainStep step(model, sharded, optimizer, lr, world, kMaxGradNorm);
  std::vector<PackedBatch> micro_batches;
  const size_t per = rows.size() / split;
  for (size_t i = 0; i < split; ++i)
    micro_batches.push_back(
        make_packed_batch({rows.begin() + i * per, rows.begin() + (i + 1) * per}, kSeq));
  step.run(micro_batches);  // step 0 has lr 0 (warmup): a second step moves the weights
  *loss = step.run(micro_batches).loss;
  for (FlatParameter* flat : sharded.trainable()) gradients->push_back(flat->grad.clone());
  std::map<std::string, at::Tensor> weights;
  sharded.for_each_full_tensor(true, [&](const std::string& name, const at::Tensor& value) {
    weights[name] = value.clone();
  });
  return weights;
}

TEST(TrainStepMpi, FourMicroBatchesOfOneRowEqualOneOfFourRows) {
  const int rank = test::world().rank(), world = test::world().size();
  const auto all = step_rows(7, world * 2);  // 4 rows per rank
  const std::vector<std::vector<std::vector<int64_t>>> rows(all.begin() + rank * 4,
                                                            all.begin() + rank * 4 + 4);
  double loss_split = 0, loss_whole = 0;
  std::vector<at::Tensor> grads_split, grads_whole;
  const auto split = one_step(rows, 4, &loss_split, &grads_split);
  const auto whole = one_step(rows, 1, &loss_whole, &grads_whole);
  EXPECT_NEAR(loss_split, loss_whole, 1e-6 * std::abs(loss_whole));
  // The claim: the step's gradient is the big batch's, to fp32 summation order.
  ASSERT_EQ(grads_split.size(), grads_whole.size());
  for (size_t i = 0; i < grads_whole.size(); ++i) {
    const double difference = (grads_split[i] - grads_whole[i]).abs().max().item<double>();
    EXPECT_LE(difference, 1e-6 * grads_whole[i].abs().max().item<double>()) << "flat " << i;
  }
  // And so are the weights. AdamW divides by sqrt(v): an element whose gradient is near zero
  // turns an ulp of summation-order noise into a visible share of its update, so the bound is
  // 1e-5 of the learning rate (the update's own scale), not of the weight.
  ASSERT_EQ(split.size(), whole.size());
  const double lr = schedule().at(1);
  for (const auto& [name, value] : whole) {
    const double difference = (split.at(name) - value).abs().max().item<double>();
    EXPECT_LE(difference, 1e-5 * lr) << name;
  }
}

// All-gathers of one step of kAccumulation micro-batches on the micro model (a root and 2 layers).
int64_t gathers_per_step(bool reshard_after_forward, bool checkpointing) {
  Communicator& world = test::world();
  const Case c{Mode::kLora, 0, reshard_after_forward, true, checkpointing};
  LlamaForCausalLM model = make(c);
  model->train();
  auto world_ptr = std::shared_ptr<Communicator>(&world, [](Communicator*) {});
  FsdpOptions options;
  options.reshard_after_forward = reshard_after_forward;
  ShardedModel sharded(model, make_fsdp_groups(world_ptr, world.size(), "test"), options);
  AdamW optimizer(optimized_tensors(sharded), adamw_options());
  const LrSchedule lr = schedule();
  TrainStep step(model, sharded, optimizer, lr, world, kMaxGradNorm);
  step.run(rank_micro_batches(0, world.size(), world.rank()));
  return sharded.stats().all_gathers;
}

TEST(TrainStepMpi, ZeroThreeGathersLayersAgainForBackwardAndZeroTwoDoesNot) {
  // Per micro-batch: the root and 2 layers in forward; ZeRO-3 gathers the 2 layers again for
  // their recompute. Without recompute the layers' graphs hold their gathered buffers anyway,
  // so they stay gathered until backward.
  // Counted per flat parameter: the root has one (frozen), each layer two (frozen, trainable).
  EXPECT_EQ(gathers_per_step(true, true), kAccumulation * (1 + 2 * 2 + 2 * 2));
  EXPECT_EQ(gathers_per_step(false, true), kAccumulation * (1 + 2 * 2));
  EXPECT_EQ(gathers_per_step(true, false), kAccumulation * (1 + 2 * 2));
}

// bf16 (the fast path: bf16 compute, fp32 masters, gradients and moments): kSteps steps on this
// world against a 1-rank run of the same global batch on a communicator of this rank alone.
struct Bf16Run {
  std::vector<double> losses;
  std::map<std::string, at::Tensor> weights;  // every tensor, gathered, in fp32
};

Bf16Run train_bf16(const Case& c, std::shared_ptr<Communicator> comm, bool whole_global_batch) {
  const int world = test::world().size();
  LlamaForCausalLM model = make(c, at::kBFloat16);
  model->train();
  FsdpOptions options;
  options.reshard_after_forward = c.reshard_after_forward;
  options.reduce_every_micro_batch = c.reduce_every_micro_batch;
  ShardedModel sharded(model, make_fsdp_groups(comm, comm->size(), "test"), options);
  AdamW optimizer(optimized_tensors(sharded), adamw_options());
  const LrSchedule lr = schedule();
  TrainStep step(model, sharded, optimizer, lr, *comm, kMaxGradNorm);
  Bf16Run run;
  for (int s = 0; s < kSteps; ++s) {
    std::vector<PackedBatch> micro_batches;
    if (whole_global_batch) {
      for (int r = 0; r < world; ++r)
        for (PackedBatch& b : rank_micro_batches(s, world, r)) micro_batches.push_back(b);
    } else {
      micro_batches = rank_micro_batches(s, world, test::world().rank());
    }
    run.losses.push_back(step.run(micro_batches).loss);
  }
  sharded.for_each_full_tensor(false, [&](const std::string& name, const at::Tensor& value) {
    run.weights[name] = value.to(at::kFloat);
  });
  return run;
}

void check_bf16_case(const Case& c) {
  SCOPED_TRACE(describe(c) + " bf16");
  Communicator& world = test::world();
  auto world_ptr = std::shared_ptr<Communicator>(&world, [](Communicator*) {});
  const Bf16Run one = train_bf16(c, world.split(world.rank(), 0), true);
  const Bf16Run many = train_bf16(c, world_ptr, false);
  // Why these bounds: every micro-batch runs on the same bf16 weights in both runs, so its bf16
  // gradients are the same bits; only the fp32 sums (across ranks vs in sequence) differ, by
  // fp32 rounding. A master that differs by an fp32 ulp can round to the neighbouring bf16 value
  // (2^-8 relative) when it sits on a rounding boundary, and the next step computes with that.
  // So after kSteps steps the loss may move by a few bf16 ulps of its terms (bound 2^-7
  // relative), and a weight by about one bf16 ulp of the tensor's largest element plus one
  // Adam step's rounding (bound 2^-7 of the magnitude); a wrong scale, a lost micro-batch or
  // a rank's gradient counted twice moves them by far more (the step size is 5e-2).
  for (int s = 0; s < kSteps; ++s)
    EXPECT_NEAR(many.losses[s], one.losses[s], std::ldexp(std::abs(one.losses[s]), -7))
        << "step " << s;
  ASSERT_EQ(many.weights.size(), one.weights.size());
  for (const auto& [name, expected] : one.weights) {
    const double difference = (many.weights.at(name) - expected).abs().max().item<double>();
    const double magnitude = expected.abs().max().item<double>();
    EXPECT_LE(difference, std::ldexp(magnitude, -7)) << name << ": " << difference;
  }
}

TEST(TrainStepMpi, Bf16MatchesAOneRankRunOfTheSameGlobalBatch) {
  check_bf16_case({Mode::kFull, 0, true, true, true});
  check_bf16_case({Mode::kFull, 0, false, false, false});
  check_bf16_case({Mode::kQlora, 0, true, true, true});
}

TEST(TrainStepMpi, FullTrainingMatchesOneProcessReferenceForEveryShardingStrategy) {
  const int world = test::world().size();
  check_case({Mode::kFull, 0, true, true, false});  // ZeRO-3
  check_case({Mode::kFull, 0, false, true, true});  // ZeRO-2, checkpointing
  // Chunked reduce-scatters of 5 elements per rank: chunks that cut tensors and shards anywhere.
  check_case({Mode::kFull, 0, true, true, true, 5});
  check_case({Mode::kLora, 0, true, true, true, 3});
  check_case({Mode::kFull, 1, true, false, false});  // plain data parallel, one reduction per step
  if (world % 2 == 0 && world > 2) check_case({Mode::kFull, 2, true, true, true});  // HSDP
}

TEST(TrainStepMpi, LoraAndQloraMatchTheReferenceAndLeaveEveryFrozenByteAlone) {
  check_case({Mode::kLora, 0, true, true, true});
  check_case({Mode::kQlora, 0, true, false, true});
  check_case({Mode::kQlora, 0, false, true, false});
}

}  // namespace
}  // namespace ptrain
