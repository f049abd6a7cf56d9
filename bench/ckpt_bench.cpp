#include "bench/ckpt_bench.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fcntl.h>
#include <gperftools/malloc_extension.h>
#include <mpi.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "checkpoint/sharded_checkpoint.h"
#include "core/checksum.h"
#include "core/error.h"
#include "core/file_util.h"
#include "data/prepared_data.h"
#include "data/train_batches.h"
#include "model/deferred_weights.h"
#include "model/llama.h"
#include "model/llama_config.h"
#include "parallel/communicator_factory.h"
#include "parallel/fsdp_groups.h"
#include "parallel/mpi_runtime.h"
#include "tokenizer/tokenizer.h"
#include "trainer/checkpointer.h"
#include "trainer/hardware.h"
#include "trainer/train_step.h"

namespace ptrain::bench {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSeed = 5;
constexpr size_t kReadPiece = size_t{8} << 20;
constexpr const char* kWriteBaseline =
    "write() + fsync of the same bytes from the same memory, one file per rank";

[[noreturn]] void fail(const char* call, const std::string& path) {
  throw RuntimeFailure(fmt::format("{} '{}' failed: {}", call, path, std::strerror(errno)));
}

// ---------------------------------------------------------------- collectives over doubles

double all_reduce(Communicator& world, double value, ReduceOp op) {
  world.all_reduce(comm_buffer(&value, 1), op);
  return value;
}

// The slowest rank's seconds of `fn`, every rank starting together.
double slowest_seconds(Communicator& world, const std::function<void()>& fn) {
  world.barrier();
  const auto start = Clock::now();
  fn();
  return all_reduce(world, seconds_since(start), ReduceOp::kMax);
}

// ---------------------------------------------------------------- files and the page cache

// Drops `path`'s pages from the page cache (they are clean: every file here was fsynced), so the
// next read comes from the disk.
void drop_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open", path);
  const int error = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  if (error != 0) {
    errno = error;
    fail("posix_fadvise", path);
  }
}

// Bytes of `path` in the page cache (mincore over a mapping, which faults nothing in).
int64_t cached_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open", path);
  const size_t size = fs::file_size(path);
  void* map = size ? ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0) : nullptr;
  ::close(fd);
  if (map == MAP_FAILED) fail("mmap", path);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  int64_t cached = 0;
  if (size && ::mincore(map, size, resident.data()) == 0)
    for (unsigned char r : resident) cached += (r & 1) ? static_cast<int64_t>(page) : 0;
  if (map) ::munmap(map, size);
  return cached;
}

// The baseline save: `pieces` written with plain write() into `path`, then fsync.
void plain_write(const std::string& path,
                 const std::vector<std::pair<const void*, size_t>>& pieces) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("open", path);
  for (const auto& [data, size] : pieces) {
    const char* p = static_cast<const char*>(data);
    for (size_t left = size; left > 0;) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("write", path);
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0) fail("fsync", path);
  ::close(fd);
}

// The baseline load: `path` read front to back with plain read().
void plain_read(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open", path);
  std::vector<char> buffer(kReadPiece);
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("read", path);
    if (n == 0) break;
  }
  ::close(fd);
}

// ---------------------------------------------------------------- the training state

// A tiny prepared dataset: the sampler's state is what a checkpoint keeps of it.
std::unique_ptr<PreparedDataset> tiny_dataset(const fs::path& dir) {
  fs::create_directories(dir);
  std::string jsonl;
  for (int i = 0; i < 64; ++i)
    jsonl += nlohmann::json{{"instruction", fmt::format("Count to {}.", i)},
                            {"output", std::string(static_cast<size_t>(8 + i % 24), 'x')}}
                 .dump() +
             "\n";
  write_file_atomic((dir / "rows.jsonl").string(), jsonl);
  DataPrepOptions options;
  DataSource source;
  source.path = (dir / "rows.jsonl").string();
  options.sources = {source};
  options.sequence_len = 512;
  ByteTokenizer tokenizer;
  build_prepared_dataset(options, tokenizer, "ckpt-bench", (dir / "prepared").string());
  return std::make_unique<PreparedDataset>((dir / "prepared").string());
}

// Every tensor of unit `unit` given random values; the same on every rank (each keeps its shard).
void random_unit(LlamaForCausalLM& model, int unit) {
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(kSeed * 1000 + unit);
  const ModelUnit u = model->units().at(static_cast<size_t>(unit));
  for (const auto* list : {&u.frozen_bytes, &u.frozen, &u.trainable})
    for (const UnitTensor& t : *list) {
      allocate_if_deferred(t.tensor);
      t.tensor.detach().normal_(0.0, 0.02, generator);
    }
}

// The tensors of this rank's checkpoint file, in its order (Checkpointer's rank_tensors()).
std::vector<std::pair<const void*, size_t>> rank_pieces(ShardedModel& sharded, AdamW& optimizer) {
  std::vector<std::pair<const void*, size_t>> out;
  const std::vector<FlatParameter*> trainable = sharded.trainable();
  for (size_t i = 0; i < trainable.size(); ++i)
    for (const at::Tensor& t :
         {trainable[i]->master, optimizer.exp_avg()[i], optimizer.exp_avg_sq()[i]})
      out.emplace_back(t.data_ptr(), t.nbytes());
  return out;
}

struct BenchState {
  LlamaForCausalLM model = nullptr;
  std::unique_ptr<ShardedModel> sharded;
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<PreparedDataset> data;
  std::unique_ptr<TrainBatches> batches;
  int64_t largest_shard_bytes = 0;  // the largest trainable flat parameter's fp32 master shard
  int64_t state_bytes = 0;          // what this rank holds: shards, masters, moments
};

// Full training of `preset` in bf16 with fp32 masters, sharded over `world`; the gradient shards
// are dropped (a checkpoint never reads them) and the moments hold values derived from the masters.
BenchState build_state(const std::string& preset, const std::shared_ptr<Communicator>& world,
                       const fs::path& work) {
  BenchState s;
  ModelOptions model_options;
  model_options.dtype = at::kBFloat16;
  model_options.defer_weights = true;
  s.model = LlamaForCausalLM(llama_preset(preset), model_options);
  s.model->generator().set_current_seed(kSeed + static_cast<uint64_t>(world->rank()));
  s.sharded =
      std::make_unique<ShardedModel>(s.model, make_fsdp_groups(world, world->size(), "ckpt bench"),
                                     FsdpOptions{}, [&](int unit) { random_unit(s.model, unit); });
  torch::NoGradGuard no_grad;
  for (FlatParameter* flat : s.sharded->trainable()) {
    // AdamW checks the gradient's shape only: a stride-0 view holds no memory.
    flat->grad = torch::zeros({1}, torch::kFloat).expand({flat->layout.shard_numel()});
    s.largest_shard_bytes = std::max<int64_t>(s.largest_shard_bytes, flat->master.nbytes());
  }
  MallocExtension::instance()->ReleaseFreeMemory();
  s.optimizer = std::make_unique<AdamW>(optimized_tensors(*s.sharded), AdamWOptions{});
  const std::vector<FlatParameter*> trainable = s.sharded->trainable();
  for (size_t i = 0; i < trainable.size(); ++i) {
    s.optimizer->exp_avg()[i].copy_(trainable[i]->master).mul_(0.1);
    s.optimizer->exp_avg_sq()[i].copy_(trainable[i]->master).square_();
  }
  for (FlatParameter* flat : s.sharded->flat_parameters())
    s.state_bytes +=
        flat->shard.nbytes() +
        (flat->trainable && !flat->master.is_same(flat->shard) ? flat->master.nbytes() : 0);
  for (size_t i = 0; i < trainable.size(); ++i)
    s.state_bytes += s.optimizer->exp_avg()[i].nbytes() + s.optimizer->exp_avg_sq()[i].nbytes();
  s.data = tiny_dataset(work / fmt::format("data-rank{}", world->rank()));
  s.batches =
      std::make_unique<TrainBatches>(*s.data, 1, world->rank(), world->size(), kSeed, false);
  for (int i = 0; i < 3; ++i) s.batches->next_rows();  // a sampler part-way through its epoch
  return s;
}

// A digest of the masters and moments (first and last bytes of each): checks that a load put
// back what the save wrote.
std::string state_digest(BenchState& s) {
  Xxh3Stream stream;
  for (const auto& [data, size] : rank_pieces(*s.sharded, *s.optimizer)) {
    const size_t n = std::min<size_t>(size, 4096);
    stream.update(data, n);
    stream.update(static_cast<const char*>(data) + size - n, n);
  }
  return stream.hex();
}

void zero_state(BenchState& s) {
  torch::NoGradGuard no_grad;
  const std::vector<FlatParameter*> trainable = s.sharded->trainable();
  for (size_t i = 0; i < trainable.size(); ++i) {
    trainable[i]->master.zero_();
    s.optimizer->exp_avg()[i].zero_();
    s.optimizer->exp_avg_sq()[i].zero_();
  }
}

// ---------------------------------------------------------------- the suite

struct SaveFigures {
  double seconds = 0;     // the slowest rank's save() call
  double commit_s = 0;    // async: save() to committed (finish_pending() returned)
  int64_t extra_rss = 0;  // the largest rank's VmHWM during the save over its RSS before
  std::string dir;
};

SaveFigures timed_save(Checkpointer& checkpointer, Communicator& world, int64_t step) {
  SaveFigures f;
  reset_peak_rss();
  const int64_t before = current_rss_bytes();
  world.barrier();
  const auto start = Clock::now();
  checkpointer.save(step);
  const double call = seconds_since(start);
  checkpointer.finish_pending();
  const double committed = seconds_since(start);
  // File-backed pages (the mapped data, libraries) may leave the RSS meanwhile: 0 at least.
  f.extra_rss = static_cast<int64_t>(all_reduce(
      world, static_cast<double>(std::max<int64_t>(0, peak_rss_bytes() - before)), ReduceOp::kMax));
  f.seconds = all_reduce(world, call, ReduceOp::kMax);
  f.commit_s = all_reduce(world, committed, ReduceOp::kMax);
  PTRAIN_CHECK(checkpointer.last_result().committed, "ckpt bench: the save failed: {}",
               checkpointer.last_result().error);
  f.dir = checkpointer.last_result().dir;
  return f;
}

void remove_checkpoint(Communicator& world, const std::string& dir) {
  world.barrier();
  if (world.rank() == 0) fs::remove_all(dir);
  world.barrier();
}

}  // namespace

int run_ckpt_bench(const CkptBenchOptions& o) {
  int rank = 0, size = 1;
  PTRAIN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  PTRAIN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  // A save of gigabytes keeps the other ranks waiting in its collectives for minutes.
  auto watchdog = make_job_watchdog(3600.0, rank, size, host_name(), nullptr);
  std::shared_ptr<Communicator> world_ptr = make_world_communicator("mpi", 0, watchdog);
  Communicator& world = *world_ptr;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(o.threads > 0 ? o.threads
                                    : std::max(1, static_cast<int>(cores) / world.size()));
  const nlohmann::json machine = machine_json();
  auto log = std::make_shared<spdlog::logger>("ckpt-bench",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_level(spdlog::level::warn);

  // One work directory for every rank: rank 0 names it.
  std::string work_name =
      o.work_dir.empty()
          ? (fs::temp_directory_path() / fmt::format("ptrain-ckpt-bench-{}", ::getpid())).string()
          : o.work_dir;
  std::vector<char> name_buffer(4096, '\0');
  std::memcpy(name_buffer.data(), work_name.data(), std::min(work_name.size(), size_t{4095}));
  world.broadcast(comm_buffer(reinterpret_cast<uint8_t*>(name_buffer.data()), 4096), 0);
  const fs::path work(name_buffer.data());
  if (rank == 0) fs::create_directories(work);
  world.barrier();

  const auto setup_start = Clock::now();
  BenchState s = build_state(o.preset, world_ptr, work);
  const double setup_s = all_reduce(world, seconds_since(setup_start), ReduceOp::kMax);
  TrainingState training{*s.sharded, *s.optimizer, *s.batches, s.model->generator()};
  const std::string root = (work / "checkpoints").string();
  const std::string digest = state_digest(s);
  const double largest_shard =
      all_reduce(world, static_cast<double>(s.largest_shard_bytes), ReduceOp::kMax);
  const double state_bytes = all_reduce(world, static_cast<double>(s.state_bytes), ReduceOp::kSum);
  const nlohmann::json common = {
      {"suite", "ckpt"},         {"machine", machine},
      {"preset", o.preset},      {"mode", "full"},
      {"world", world.size()},   {"state_bytes", static_cast<int64_t>(state_bytes)},
      {"setup_seconds", setup_s}};
  auto line = [&](nlohmann::json figures) {
    nlohmann::json out = common;
    out.update(figures);
    if (rank == 0) print_result(out);
  };

  // ---- the synchronous save and its baseline, alternated `repeats` times (the disk is shared:
  // each keeps its best); the baseline writes this rank's file's bytes (header and generator as
  // zeros) plainly from the same memory, with the other's pages dropped from the cache first
  CheckpointerOptions options;
  options.root = root;
  Checkpointer sync_checkpointer(training, world, options, log);
  std::vector<std::pair<const void*, size_t>> pieces = rank_pieces(*s.sharded, *s.optimizer);
  uint64_t piece_bytes = 0;
  for (const auto& p : pieces) piece_bytes += p.second;
  std::vector<char> header;
  const std::string baseline_file = (work / fmt::format("baseline-rank{}.bin", rank)).string();
  SaveFigures save;
  std::string rank_file;
  uint64_t rank_bytes = 0;
  double total_bytes = 0, write_s = 1e30;
  const int repeats = std::max(1, o.repeats);
  for (int r = 0; r < repeats; ++r) {
    if (!save.dir.empty()) remove_checkpoint(world, save.dir);
    if (rank == 0) sync();  // earlier dirty pages are not this save's to flush
    const SaveFigures one = timed_save(sync_checkpointer, world, 1);
    if (r == 0 || one.seconds < save.seconds) {
      save = one;
    } else {
      save.dir = one.dir;
      save.extra_rss = std::max(save.extra_rss, one.extra_rss);
    }
    rank_file = (fs::path(save.dir) / rank_file_name(rank)).string();
    if (r == 0) {
      const CheckpointManifest manifest = read_manifest(save.dir);
      for (const CheckpointFile& f : manifest.files) total_bytes += static_cast<double>(f.bytes);
      rank_bytes = fs::file_size(rank_file);
      PTRAIN_ASSERT(piece_bytes <= rank_bytes, "the rank's file holds its tensors");
      header.assign(rank_bytes - piece_bytes, '\0');
      pieces.insert(pieces.begin(), {header.data(), header.size()});
    }
    drop_cache(rank_file);
    fs::remove(baseline_file);
    write_s =
        std::min(write_s, slowest_seconds(world, [&] { plain_write(baseline_file, pieces); }));
    drop_cache(baseline_file);
  }

  line({{"op", "save"},
        {"async", false},
        {"bytes", static_cast<int64_t>(total_bytes)},
        {"seconds", save.seconds},
        {"gb_per_s", total_bytes / save.seconds / 1e9},
        {"baseline", kWriteBaseline},
        {"baseline_seconds", write_s},
        {"baseline_gb_per_s", total_bytes / write_s / 1e9},
        {"vs_baseline", write_s / save.seconds},
        {"stall_s", save.seconds},
        {"extra_rss_bytes", save.extra_rss},
        {"largest_shard_bytes", static_cast<int64_t>(largest_shard)}});

  // ---- loads from a cold page cache: the baseline read, then the resume (every file read once,
  // its checksum verified on the same pass, the shards restored from it)
  auto drop_all = [&] {
    drop_cache(rank_file);
    drop_cache(baseline_file);
    if (rank == 0) drop_cache((fs::path(save.dir) / kManifestFile).string());
    return all_reduce(world, static_cast<double>(cached_bytes(rank_file)), ReduceOp::kSum);
  };
  double cached = 0, read_s = 1e30, second_read_s = 1e30, load_s = 1e30;
  for (int r = 0; r < repeats; ++r) {
    cached += drop_all();
    read_s = std::min(read_s, slowest_seconds(world, [&] { plain_read(rank_file); }));
    second_read_s = std::min(second_read_s, slowest_seconds(world, [&] { plain_read(rank_file); }));
    zero_state(s);
    cached += drop_all();
    load_s =
        std::min(load_s, slowest_seconds(world, [&] {
                   const std::optional<Resumed> resumed =
                       resume_training(save.dir, root, training, world, *log);
                   PTRAIN_CHECK(resumed && resumed->info.step == 1 && resumed->info.same_layout,
                                "ckpt bench: the resume did not find the checkpoint");
                 }));
  }
  PTRAIN_CHECK(state_digest(s) == digest, "ckpt bench: the load did not restore the saved state");
  // What verifying costs on a core: XXH3-64 over this rank's bytes in memory.
  const double checksum_s = slowest_seconds(world, [&] {
    Xxh3Stream stream;
    for (const auto& [data, bytes] : pieces) stream.update(data, bytes);
  });
  line({{"op", "load"},
        {"bytes", static_cast<int64_t>(total_bytes)},
        {"seconds", load_s},
        {"gb_per_s", total_bytes / load_s / 1e9},
        {"baseline", "read() of the same files, cold"},
        {"baseline_seconds", read_s},
        {"baseline_gb_per_s", total_bytes / read_s / 1e9},
        {"vs_baseline", read_s / load_s},
        {"second_read_gb_per_s", total_bytes / second_read_s / 1e9},
        {"checksum_gb_per_s", total_bytes / checksum_s / 1e9},
        {"cached_bytes_at_start", static_cast<int64_t>(cached)}});
  fs::remove(baseline_file);
  remove_checkpoint(world, save.dir);

  // ---- the asynchronous save: on the CPU nothing is copied; the background thread writes the live
  // masters and moments, and only the next optimizer step waits for it (when the write outlasts
  // that step's forward and backward). stall_s: how long save() held training; write_s: how long
  // the write ran on after it (what an optimizer step coming at once would wait).
  if (o.async) {
    options.async = true;
    Checkpointer async_checkpointer(training, world, options, log);
    SaveFigures async_save;
    for (int r = 0; r < repeats; ++r) {
      if (!async_save.dir.empty()) remove_checkpoint(world, async_save.dir);
      if (rank == 0) sync();
      const SaveFigures one = timed_save(async_checkpointer, world, 2);
      const int64_t extra_rss = std::max(async_save.extra_rss, one.extra_rss);
      if (r == 0 || one.seconds < async_save.seconds) async_save = one;
      async_save.dir = one.dir;
      async_save.extra_rss = extra_rss;
    }
    line({{"op", "save"},
          {"async", true},
          {"bytes", static_cast<int64_t>(total_bytes)},
          {"seconds", async_save.commit_s},
          {"gb_per_s", total_bytes / async_save.commit_s / 1e9},
          {"baseline", kWriteBaseline},
          {"baseline_seconds", write_s},
          {"baseline_gb_per_s", total_bytes / write_s / 1e9},
          {"vs_baseline", write_s / async_save.commit_s},
          {"stall_s", async_save.seconds},
          {"write_s", async_save.commit_s - async_save.seconds},
          {"sync_stall_s", save.seconds},
          {"stall_vs_sync", async_save.seconds / save.seconds},
          {"extra_rss_bytes", async_save.extra_rss},
          {"largest_shard_bytes", static_cast<int64_t>(largest_shard)}});
    remove_checkpoint(world, async_save.dir);
  }
  world.barrier();
  if (rank == 0 && o.work_dir.empty()) fs::remove_all(work);
  return 0;
}

}  // namespace ptrain::bench
