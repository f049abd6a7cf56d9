#include "trainer/checkpointer.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/failpoint.h"
#include "core/file_util.h"
#include "model/llama_weights.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr size_t kMessageBytes = 1024;

std::string flat_tensor(const std::string& flat, const char* what) {
  return flat + "/" + what;
}

// A fixed-size text field for the collectives (truncated, NUL-terminated).
void put_text(char* out, size_t size, const std::string& text) {
  const size_t n = std::min(size - 1, text.size());
  std::memcpy(out, text.data(), n);
  out[n] = '\0';
}

TensorBytes tensor_bytes(const std::string& name, const at::Tensor& t) {
  TensorBytes b;
  b.name = name;
  b.dtype = safetensors_dtype(t.scalar_type());
  b.shape = t.sizes().vec();
  b.nbytes = static_cast<uint64_t>(t.nbytes());
  if (t.device().is_cpu() && t.is_contiguous()) {
    b.data = t.data_ptr();
  } else {
    // A device tensor is copied to the host one tensor at a time, as the writer reaches it.
    b.produce = [t](void* out) {
      torch::from_blob(out, t.sizes(), t.options().device(at::kCPU)).copy_(t);
    };
  }
  return b;
}

// What a checkpoint holds of each flat parameter, in flat_parameters() order: the fp32 master and
// both AdamW moments of a trainable one, the shard of a frozen one (saved with save_frozen). Each
// is the tensor "<flat name>/<part>" in a shard file.
struct FlatParts {
  FlatParameter* flat = nullptr;
  std::vector<std::pair<const char*, at::Tensor>> parts;
};

std::vector<FlatParts> checkpoint_parts(TrainingState& state) {
  const std::vector<FlatParameter*> trainable = state.sharded.trainable();
  std::vector<FlatParts> out;
  size_t next = 0;
  for (FlatParameter* flat : state.sharded.flat_parameters()) {
    if (!flat->trainable) {
      out.push_back({flat, {{"shard", flat->shard}}});
      continue;
    }
    PTRAIN_ASSERT(next < trainable.size() && trainable[next] == flat,
                  "trainable flat parameters out of the optimizer's order");
    out.push_back({flat,
                   {{"master", flat->master},
                    {"exp_avg", state.optimizer.exp_avg()[next]},
                    {"exp_avg_sq", state.optimizer.exp_avg_sq()[next]}}});
    ++next;
  }
  return out;
}

}  // namespace

// What a rank reports after writing its file: all-gathered before the commit.
struct Checkpointer::RankReport {
  uint64_t bytes = 0;
  char xxh3[24] = {};
  char error[kMessageBytes - 32] = {};
};

struct Checkpointer::Pending {
  int64_t step = 0;
  nlohmann::json body;  // rank 0: the manifest without its envelope, as of the save
  std::vector<CheckpointFile> extra_files;                  // rank 0: the adapter's
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // keeps staged copies alive
  RankReport report;
  std::thread thread;
  std::atomic<bool> done{false};
  double stall_seconds = 0;
  Clock::time_point started = Clock::now();
  bool live = false;  // the write reads the live state (not a staged copy): the optimizer waits
};

Checkpointer::Checkpointer(TrainingState state, Communicator& world, CheckpointerOptions options,
                           std::shared_ptr<spdlog::logger> log)
    : state_(std::move(state)), world_(world), options_(std::move(options)), log_(std::move(log)) {
  PTRAIN_ASSERT(state_.sharded.trainable().size() == state_.optimizer.exp_avg().size(),
                "the optimizer must hold the sharded model's trainable flat parameters");
}

Checkpointer::~Checkpointer() {
  if (pending_ && pending_->thread.joinable()) pending_->thread.join();
}

std::vector<std::pair<std::string, at::Tensor>> Checkpointer::rank_tensors(bool stage) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto add = [&](std::string name, const at::Tensor& t) {
    out.emplace_back(std::move(name), stage ? t.to(at::kCPU, /*non_blocking=*/false,
                                                   /*copy=*/true)
                                            : t);
  };
  // The first shard group holds one copy of every shard (replica 0 under HSDP).
  if (world_.rank() < state_.sharded.groups().shard_size())
    for (const FlatParts& f : checkpoint_parts(state_))
      if (f.flat->trainable || options_.save_frozen)
        for (const auto& [what, tensor] : f.parts)
          add(flat_tensor(f.flat->layout.name(), what), tensor);
  out.emplace_back("rng/model", state_.generator.get_state().clone());
  return out;
}

nlohmann::json Checkpointer::manifest_body(int64_t step) {
  nlohmann::json body = options_.identity;
  const FsdpGroups& groups = state_.sharded.groups();
  body["world"] = world_.size();
  body["shard_size"] = groups.shard_size();
  body["replicas"] = groups.replicas();
  nlohmann::json shard_files = nlohmann::json::array();
  for (int s = 0; s < groups.shard_size(); ++s) shard_files.push_back(rank_file_name(s));
  body["shard_files"] = shard_files;
  nlohmann::json flats = nlohmann::json::array();
  for (const FlatParts& parts : checkpoint_parts(state_)) {
    nlohmann::json f = parts.flat->layout.to_json();
    f["trainable"] = parts.flat->trainable;
    f["saved"] = nlohmann::json::array();
    if (parts.flat->trainable || options_.save_frozen)
      for (const auto& part : parts.parts) f["saved"].push_back(part.first);
    flats.push_back(std::move(f));
  }
  body["flat_parameters"] = std::move(flats);
  body["sampler"] = state_.sampler.state();
  if (state_.loop != nullptr) body["loop"] = state_.loop->state();
  body["optimizer"] = state_.optimizer.state();
  body["completed_steps"] = step;
  return body;
}

std::string Checkpointer::write_adapter(const std::string& staging) {
  if (!options_.write_adapter) return "";
  // Collective: every rank's shard of every trainable tensor, not only rank 0's.
  state_.sharded.gather_trainable();
  std::string error;
  if (world_.rank() == 0) {
    try {
      options_.write_adapter((fs::path(staging) / "adapter").string());
    } catch (const std::exception& e) {
      error = fmt::format("adapter: {}", e.what());
    }
  }
  state_.sharded.release_trainable();
  return error;
}

void Checkpointer::save(int64_t step) {
  finish_pending();
  const auto start = Clock::now();
  const std::string staging = staging_dir(options_.root, step);
  auto pending = std::make_unique<Pending>();
  pending->step = step;
  std::string error;
  try {
    std::error_code ec;
    fs::create_directories(staging, ec);
    if (ec) throw RuntimeFailure(fmt::format("cannot create '{}': {}", staging, ec.message()));
    // Asynchronous from device memory: a host copy first (the optimizer waits for nothing then).
    bool on_host = true;
    for (FlatParameter* flat : state_.sharded.flat_parameters())
      on_host = on_host && flat->shard.device().is_cpu();
    pending->tensors = rank_tensors(options_.async && !on_host);
    pending->live = options_.async && on_host;
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (world_.rank() == 0) pending->body = manifest_body(step);
  const std::string adapter_error = write_adapter(staging);
  if (error.empty()) error = adapter_error;
  if (world_.rank() == 0 && error.empty() && options_.write_adapter) {
    try {
      for (const char* name : {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"})
        pending->extra_files.push_back(describe_file(staging, name));
    } catch (const std::exception& e) {
      error = e.what();
    }
  }

  // Phase 1: this rank's file, here or on a background thread.
  Pending& p = *pending;
  auto write = [&p, staging, error, rank = world_.rank(), hook = options_.before_write]() {
    std::string failure = error;
    if (failure.empty()) {
      try {
        if (hook) hook();
        std::vector<TensorBytes> bytes;
        for (const auto& [name, t] : p.tensors) bytes.push_back(tensor_bytes(name, t));
        const WrittenFile file =
            write_safetensors((fs::path(staging) / rank_file_name(rank)).string(), bytes,
                              {{"rank", std::to_string(rank)}, {"step", std::to_string(p.step)}});
        p.report.bytes = file.bytes;
        put_text(p.report.xxh3, sizeof p.report.xxh3, file.xxh3);
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
    put_text(p.report.error, sizeof p.report.error, failure);
    p.tensors.clear();  // staged copies go as soon as they are written
    p.done = true;
  };
  if (options_.async) {
    pending->thread = std::thread(write);
    pending->stall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    pending_ = std::move(pending);
    log_->info("checkpoint step {}: writing in the background (training stalled {:.2f} s)", step,
               pending_->stall_seconds);
    return;
  }
  write();
  commit(*pending);
  last_.stall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
}

void Checkpointer::before_update() {
  if (!pending_ || !pending_->live || !pending_->thread.joinable()) return;
  const auto start = Clock::now();
  pending_->thread.join();
  pending_->stall_seconds += std::chrono::duration<double>(Clock::now() - start).count();
}

void Checkpointer::finish_pending() {
  if (!pending_) return;
  if (pending_->thread.joinable()) pending_->thread.join();
  std::unique_ptr<Pending> pending = std::move(pending_);
  commit(*pending);
  last_.stall_seconds = pending->stall_seconds;
}

void Checkpointer::commit(Pending& pending) {
  // A rank that dies here has written its file but not reported it: nothing may be committed.
  failpoint("checkpoint.before_report", world_.rank());
  if (options_.on_rank_written)
    options_.on_rank_written(pending.step, pending.report.bytes, pending.report.xxh3,
                             pending.report.error);
  const int world = world_.size();
  std::vector<RankReport> reports(static_cast<size_t>(world));
  world_.all_gather(comm_buffer(reinterpret_cast<uint8_t*>(reports.data()),
                                static_cast<int64_t>(reports.size() * sizeof(RankReport))),
                    comm_buffer(reinterpret_cast<uint8_t*>(&pending.report),
                                static_cast<int64_t>(sizeof(RankReport))));
  SaveResult result;
  result.step = pending.step;
  std::string message;
  int32_t committed = 0;
  if (world_.rank() == 0) {
    std::vector<std::string> failures;
    std::vector<CheckpointFile> files;
    for (int r = 0; r < world; ++r) {
      const RankReport& report = reports[static_cast<size_t>(r)];
      if (report.error[0] != '\0')
        failures.push_back(fmt::format("rank {}: {}", r, report.error));
      else
        files.push_back({rank_file_name(r), report.bytes, report.xxh3});
    }
    if (failures.empty()) {
      files.insert(files.end(), pending.extra_files.begin(), pending.extra_files.end());
      try {
        message = commit_checkpoint(options_.root, pending.step, std::move(pending.body), files);
        committed = 1;
      } catch (const std::exception& e) {
        failures.push_back(fmt::format("rank 0: {}", e.what()));
      }
    }
    if (!committed) {
      message = fmt::format("{}", fmt::join(failures, "; "));
      std::error_code ec;
      fs::remove_all(staging_dir(options_.root, pending.step), ec);
    }
  }
  world_.broadcast(comm_buffer(&committed, 1), 0);
  message = broadcast_string(world_, message, 0);
  result.committed = committed != 0;
  if (result.committed) {
    result.dir = message;
    uint64_t bytes = 0;
    for (const RankReport& report : reports) bytes += report.bytes;
    result.bytes = bytes;
    result.files = world + static_cast<int>(pending.extra_files.size());
    const double seconds = std::chrono::duration<double>(Clock::now() - pending.started).count();
    log_->info(
        "checkpoint step {} committed: {} ({:.2f} GB in {} rank files, {:.1f} s after the "
        "save began)",
        pending.step, result.dir, static_cast<double>(bytes) / 1e9, world, seconds);
    if (world_.rank() == 0) {
      try {
        for (const std::string& removed : prune_checkpoints(options_.root, options_.keep_last))
          log_->info("removed {} (checkpoint.keep_last: {})", removed, options_.keep_last);
      } catch (const std::exception& e) {
        log_->warn("checkpoint.keep_last: {}", e.what());
      }
    }
  } else {
    result.error = message;
    log_->error(
        "checkpoint step {} was not saved (the previous checkpoint is intact; training "
        "goes on): {}",
        pending.step, result.error);
  }
  last_ = result;
  if (options_.on_saved) options_.on_saved(result);
}

void Checkpointer::on_start(const TrainStart& start) {
  total_steps_ = start.total_steps;
  if (options_.save_steps > 0)
    save_every_ = options_.save_steps;
  else if (options_.saves_per_epoch > 0)
    save_every_ = std::max<int64_t>(1, start.steps_per_epoch / options_.saves_per_epoch);
  // What crashed saves left behind is never loaded: remove it before this run saves. The root's
  // own entry is made durable once, before any checkpoint is published in it.
  if (world_.rank() == 0) {
    for (const std::string& removed : remove_leftovers(options_.root))
      log_->warn("removed {}, left by a save that did not finish", removed);
    create_directory_durably(options_.root);
  }
  world_.barrier();
}

StepDecision Checkpointer::at_step_boundary(int64_t completed_steps) {
  StepDecision d;
  d.checkpoint =
      (save_every_ > 0 && completed_steps % save_every_ == 0) || completed_steps == total_steps_;
  d.writing = pending_ && !pending_->done;
  return d;
}

void Checkpointer::on_decision(int64_t completed_steps, const StepDecision& agreed) {
  if (agreed.checkpoint) {
    save(completed_steps);  // commits a pending save first
  } else if (pending_ && !agreed.writing) {
    finish_pending();
  }
}

void Checkpointer::on_end(const TrainEnd&) {
  finish_pending();
}

// ---------------------------------------------------------------- resuming

namespace {

// A run of a saved tensor's elements that this rank copies into its state.
struct Copy {
  std::string tensor;  // in the file
  int64_t first = 0;   // element of the saved tensor
  at::Tensor target;   // 1-D, `count` elements, where they go
  int64_t saved_numel = 0;
};

struct LoadPlan {
  std::map<std::string, std::vector<Copy>> by_file;
  bool frozen = false;  // frozen shards are among the targets
};

// What a manifest says about the state, checked once (the same on every rank): CorruptData naming
// manifest.json and the key when it is malformed.
struct SavedFlat {
  FlatLayout layout;
  bool trainable = false;
  bool frozen_saved = false;
};
struct SavedState {
  int world = 0, shard_size = 0;
  int64_t step = 0;
  std::vector<std::string> shard_files;  // shard s -> its file
  std::map<std::string, SavedFlat> flats;
  std::vector<std::string> trainable;
};

SavedState parse_saved(const CheckpointManifest& m) {
  const std::string where = fmt::format("checkpoint '{}': {}", m.dir, kManifestFile);
  const char* key = "";
  try {
    SavedState s;
    key = "world";
    s.world = m.json.at(key).get<int>();
    key = "shard_size";
    s.shard_size = m.json.at(key).get<int>();
    key = "completed_steps";
    s.step = m.json.at(key).get<int64_t>();
    key = "shard_files";
    s.shard_files = m.json.at(key).get<std::vector<std::string>>();
    key = "optimizer";
    (void)m.json.at(key);
    key = "sampler";
    (void)m.json.at(key);
    if (s.world < 1 || s.shard_size < 1 || s.world % s.shard_size != 0 || s.step < 0 ||
        static_cast<int>(s.shard_files.size()) != s.shard_size)
      throw CorruptData(
          fmt::format("{}: world {}, shard_size {}, {} shard_files and step {} do "
                      "not fit together",
                      where, s.world, s.shard_size, s.shard_files.size(), s.step));
    std::set<std::string> listed;
    for (const CheckpointFile& f : m.files) listed.insert(f.name);
    for (int r = 0; r < s.world; ++r)
      if (!listed.count(rank_file_name(r)))
        throw CorruptData(fmt::format("{}: 'files' does not list {}", where, rank_file_name(r)));
    for (const std::string& f : s.shard_files)
      if (!listed.count(f))
        throw CorruptData(fmt::format("{}: shard file '{}' is not in 'files'", where, f));
    key = "flat_parameters";
    for (const nlohmann::json& f : m.json.at(key)) {
      SavedFlat flat{FlatLayout::from_json(f), f.at("trainable").get<bool>(), false};
      const auto saved = f.at("saved").get<std::vector<std::string>>();
      flat.frozen_saved = !flat.trainable && saved == std::vector<std::string>{"shard"};
      if (flat.layout.shards() != s.shard_size)
        throw CorruptData(fmt::format("{}: '{}' has {} shards, not shard_size {}", where,
                                      flat.layout.name(), flat.layout.shards(), s.shard_size));
      if (flat.trainable) s.trainable.push_back(flat.layout.name());
      const std::string name = flat.layout.name();
      s.flats.emplace(name, std::move(flat));
    }
    return s;
  } catch (const CorruptData&) {
    throw;
  } catch (const std::exception& e) {  // json type and range errors, FlatLayout::from_json
    throw CorruptData(fmt::format("{}: '{}': {}", where, key, e.what()));
  }
}

// Which runs of which files this rank's state comes from (FlatLayout::reslice).
LoadPlan plan_load(const CheckpointManifest& manifest, const SavedState& saved,
                   TrainingState& state) {
  const std::string label = fmt::format("checkpoint '{}'", manifest.dir);
  ShardedModel& sharded = state.sharded;
  const int shard_rank = sharded.groups().shard->rank();
  std::vector<std::string> trained;
  LoadPlan plan;
  for (const FlatParts& parts : checkpoint_parts(state)) {
    FlatParameter* flat = parts.flat;
    const std::string& name = flat->layout.name();
    auto it = saved.flats.find(name);
    if (flat->trainable) {
      PTRAIN_CHECK(it != saved.flats.end(),
                   "{} holds no '{}': this run trains tensors the checkpoint did not (another "
                   "adapter, targets or model)",
                   label, name);
      trained.push_back(name);
    } else if (it != saved.flats.end() && it->second.frozen_saved) {
      plan.frozen = true;
    } else {
      continue;
    }
    const std::vector<std::pair<const char*, at::Tensor>>& targets = parts.parts;
    const FlatLayout& old = it->second.layout;
    if (!old.same_tensors(flat->layout)) {
      std::string difference = "the dtype";
      const auto& a = old.entries();
      const auto& b = flat->layout.entries();
      for (size_t i = 0; i < std::max(a.size(), b.size()); ++i)
        if (i >= a.size() || i >= b.size() || a[i].name != b[i].name || a[i].shape != b[i].shape) {
          difference = fmt::format("tensor '{}'", i < b.size() ? b[i].name : a[i].name);
          break;
        }
      throw UserError(
          fmt::format("{}: '{}' has another layout than this model's ({} differs): "
                      "the model shape, adapter rank or targets, or dtype changed",
                      label, name, difference));
    }
    for (const ReslicePiece& piece : old.reslice(flat->layout, shard_rank)) {
      for (const auto& [what, target] : targets)
        plan.by_file[saved.shard_files[static_cast<size_t>(piece.old_shard)]].push_back(
            {flat_tensor(name, what), piece.old_offset,
             target.narrow(0, piece.new_offset, piece.count), old.shard_numel()});
    }
  }
  for (const std::string& name : saved.trainable)
    PTRAIN_CHECK(std::find(trained.begin(), trained.end(), name) != trained.end(),
                 "{} trains '{}', which this model does not (another adapter, targets or model)",
                 label, name);
  return plan;
}

// Reads file `name` of the checkpoint once, copying `copies` out of it (and the generator state
// into `rng` when given); "" when its size and checksum are the manifest's, else the problem.
std::string load_file(const CheckpointManifest& manifest, const CheckpointFile& expected,
                      const std::vector<Copy>& copies, std::vector<uint8_t>* rng) {
  std::multimap<std::string, const Copy*> by_tensor;
  for (const Copy& c : copies) by_tensor.emplace(c.tensor, &c);
  std::set<std::string> seen;
  auto load = [&](const std::string& path) {
    return stream_safetensors(path, [&](const TensorInfo& t, uint64_t offset, const uint8_t* data,
                                        size_t size) {
      if (rng != nullptr && t.name == "rng/model") {
        if (offset == 0) rng->clear();
        rng->insert(rng->end(), data, data + size);
        return;
      }
      const auto range = by_tensor.equal_range(t.name);
      for (auto it = range.first; it != range.second; ++it) {
        const Copy& c = *it->second;
        const at::Tensor& target = c.target;
        const uint64_t element = static_cast<uint64_t>(target.element_size());
        if (offset == 0) {
          PTRAIN_CHECK(
              safetensors_dtype(target.scalar_type()) == t.dtype && t.numel() == c.saved_numel,
              "'{}' in {} is not a {} shard of {} elements", t.name, path,
              c10::toString(target.scalar_type()), c.saved_numel);
          seen.insert(t.name);
        }
        // The overlap of this piece [offset, offset + size) with the run's bytes.
        const uint64_t begin = std::max<uint64_t>(offset, static_cast<uint64_t>(c.first) * element);
        const uint64_t end = std::min<uint64_t>(
            offset + size, static_cast<uint64_t>(c.first + target.numel()) * element);
        if (begin >= end) continue;
        const int64_t count = static_cast<int64_t>((end - begin) / element);
        const at::Tensor source = torch::from_blob(const_cast<uint8_t*>(data) + (begin - offset),
                                                   {count}, target.options().device(at::kCPU));
        target.narrow(0, static_cast<int64_t>(begin / element) - c.first, count).copy_(source);
      }
    });
  };
  const std::string problem = check_file(manifest, expected, load);
  if (!problem.empty()) return problem;
  for (const Copy& c : copies)
    if (!seen.count(c.tensor))
      return fmt::format("{}: holds no tensor '{}'", expected.name, c.tensor);
  if (rng != nullptr && rng->empty())
    return fmt::format("{}: holds no tensor 'rng/model'", expected.name);
  return "";
}

}  // namespace

std::optional<Resumed> resume_training(
    const std::string& spec, const std::string& root, TrainingState& state, Communicator& world,
    spdlog::logger& log, const std::function<void(const CheckpointManifest&)>& check) {
  torch::NoGradGuard no_grad;
  const bool latest = spec == "latest";
  std::vector<std::string> candidates;
  if (latest) {
    for (const CommittedCheckpoint& c : committed_checkpoints(root)) candidates.push_back(c.dir);
    if (candidates.empty()) {
      log.info(
          "resume_from_checkpoint: latest: no committed checkpoint under '{}' yet: starting "
          "from the base model",
          root);
      return std::nullopt;
    }
  } else {
    PTRAIN_CHECK(fs::is_directory(spec), "resume_from_checkpoint: '{}' is not a directory", spec);
    candidates.push_back(spec);
  }
  const int rank = world.rank(), size = world.size();
  std::vector<std::string> rejected;
  for (const std::string& dir : candidates) {
    Resumed resumed;
    CheckpointManifest& manifest = resumed.manifest;
    SavedState saved;
    std::string problem;
    try {  // every rank reads the same manifest: all see the same problem
      manifest = read_manifest(dir);
      saved = parse_saved(manifest);
    } catch (const CorruptData& e) {
      problem = e.what();
    }
    if (problem.empty()) {
      if (check) check(manifest);
      const LoadPlan plan = plan_load(manifest, saved, state);
      resumed.info.step = saved.step;
      resumed.info.same_layout =
          saved.world == size && saved.shard_size == state.sharded.groups().shard_size();
      const std::string own = rank_file_name(rank);
      const int64_t count = static_cast<int64_t>(manifest.files.size());
      std::vector<int32_t> needed(static_cast<size_t>(count), 0);
      for (int64_t i = 0; i < count; ++i) {
        const std::string& name = manifest.files[static_cast<size_t>(i)].name;
        needed[static_cast<size_t>(i)] =
            plan.by_file.count(name) || (resumed.info.same_layout && name == own) ? 1 : 0;
      }
      std::vector<int32_t> anyone = needed;
      world.all_reduce(comm_buffer(anyone.data(), count), ReduceOp::kMax);
      // The lowest bad file, and the lowest rank that found it, tells everyone: "" when none.
      auto agree = [&](const std::string& detail, int64_t first_bad) {
        int64_t vote = first_bad < count ? (count - first_bad) * size + (size - 1 - rank) : 0;
        world.all_reduce(comm_buffer(&vote, 1), ReduceOp::kMax);
        if (vote == 0) return std::string();
        const int finder = static_cast<int>(size - 1 - vote % size);
        return fmt::format("checkpoint '{}' is not valid: {}", dir,
                           broadcast_string(world, detail, finder));
      };
      // Before anything is copied: the files no rank loads (file i by rank i % world), and,
      // when frozen shards are among the targets (an older checkpoint without them could not
      // put them back), the files this rank loads.
      std::string detail;
      int64_t first_bad = count;
      for (int64_t i = 0; i < count && detail.empty(); ++i) {
        const size_t f = static_cast<size_t>(i);
        if ((!anyone[f] && i % size == rank) || (needed[f] && plan.frozen))
          detail = verify_file(manifest, f);
        if (!detail.empty()) first_bad = i;
      }
      problem = agree(detail, first_bad);
      // Then each file this rank loads, read once: the copies and the checksum on one pass.
      std::vector<uint8_t> rng;
      for (int64_t i = 0; problem.empty() && i < count && detail.empty(); ++i) {
        const CheckpointFile& file = manifest.files[static_cast<size_t>(i)];
        if (!needed[static_cast<size_t>(i)]) continue;
        static const std::vector<Copy> kNone;
        auto it = plan.by_file.find(file.name);
        detail = load_file(manifest, file, it == plan.by_file.end() ? kNone : it->second,
                           resumed.info.same_layout && file.name == own ? &rng : nullptr);
        if (!detail.empty()) first_bad = i;
      }
      if (problem.empty()) {
        problem = agree(detail, first_bad);
        if (!problem.empty() && plan.frozen)
          throw RuntimeFailure(fmt::format("{} (it changed while it was being loaded)", problem));
      }
      if (problem.empty()) {
        state.sharded.update_compute_shards();
        state.optimizer.restore(manifest.json.at("optimizer"));
        state.sampler.restore(manifest.json.at("sampler"));
        if (state.loop != nullptr && manifest.json.contains("loop"))
          state.loop->restore(manifest.json.at("loop"));
        if (resumed.info.same_layout) {
          const at::Tensor bytes =
              torch::from_blob(rng.data(), {static_cast<int64_t>(rng.size())}, torch::kUInt8)
                  .clone();
          state.generator.set_state(bytes);
        }
        if (!rejected.empty())
          log.warn(
              "resume_from_checkpoint: latest: resuming from {} (newer ones failed their "
              "checks)",
              dir);
        return resumed;
      }
    }
    if (!latest) throw CorruptData(problem);
    log.warn("{}; trying an older checkpoint", problem);
    rejected.push_back(problem);
  }
  throw CorruptData(
      fmt::format("resume_from_checkpoint: latest: no valid checkpoint under '{}': {}", root,
                  fmt::join(rejected, "; ")));
}

}  // namespace ptrain
