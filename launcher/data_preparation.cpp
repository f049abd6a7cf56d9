#include "launcher/data_preparation.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>

#include "core/error.h"
#include "parallel/communicator.h"

namespace fs = std::filesystem;

namespace ptrain {
namespace {

using Clock = std::chrono::steady_clock;

// What rank 0 broadcasts while it prepares: [status, fingerprint bits].
enum Status : int64_t { kWorking = 0, kReady = 1, kFailed = 2 };

void broadcast_status(Communicator& comm, int64_t (&message)[2]) {
  comm.broadcast(comm_buffer(message, 2), 0);
}

// Rank 0: reuse or build; returns the fingerprint.
std::string prepare_on_rank0(const JobConfig& job, RankContext& ctx, int threads, bool* built) {
  PTRAIN_CHECK(!job.base_model.empty(),
               "'base_model' is not set: the datasets are tokenized with the model's tokenizer");
  const DataPrepOptions options = data_prep_options(job);
  PTRAIN_CHECK(!options.sources.empty(),
               "no datasets configured: add a 'datasets:' list of {{path, type}} entries");
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(job.base_model);
  const std::string fingerprint = data_fingerprint(options, job.base_model);
  const std::string dir = (fs::path(prepared_data_root(job)) / fingerprint).string();
  if (fs::exists(dir)) {
    try {
      PreparedDataset existing(dir);
      ctx.log->info("prepared data: reusing {} ({} training rows)", dir, existing.train_rows());
      return fingerprint;
    } catch (const CorruptData& e) {
      ctx.log->warn("prepared data: {}; rebuilding it", e.what());
      fs::remove_all(dir);
    }
  }
  ctx.log->info("prepared data: building {} with the {} tokenizer on {} threads", dir,
                tokenizer->name(), threads);
  const PreparedSummary summary =
      build_prepared_dataset(options, *tokenizer, fingerprint, dir, threads);
  for (const SourceSummary& s : summary.sources) {
    int64_t skipped = 0;
    for (const auto& [reason, count] : s.skipped) skipped += count;
    ctx.log->info(
        "prepared data: {} ({}): {} rows, {} skipped, {} samples ({} truncated, {} dropped), "
        "{} tokens; {} training uses, {} validation",
        s.path, s.type, s.rows, skipped, s.samples, s.truncated, s.dropped, s.tokens,
        s.train_samples, s.val_samples);
  }
  ctx.log->info(
      "prepared data: {} training rows of {} tokens, packing efficiency {:.2f}% ({}), {} "
      "learned tokens, {} validation samples",
      summary.train_rows, job.sequence_len, 100.0 * summary.packing_efficiency,
      job.sample_packing ? "packed" : "one sample per row", summary.learned_tokens,
      summary.val_samples);
  *built = true;
  return fingerprint;
}

}  // namespace

std::string prepared_data_root(const JobConfig& job) {
  return job.dataset_prepared_path.empty() ? (fs::path(job.output_dir) / "prepared-data").string()
                                           : job.dataset_prepared_path;
}

PreparedData prepare_data(const JobConfig& job, RankContext& ctx, int threads) {
  PreparedData out;
  const auto start = Clock::now();
  int64_t message[2] = {kWorking, 0};
  std::string fingerprint;
  if (ctx.rank == 0) {
    // The whole preparation (hashing the data, verifying or building the cache) runs on a worker
    // thread while this thread, the communicator's issuing thread, broadcasts the heartbeat.
    auto work = std::async(std::launch::async,
                           [&] { return prepare_on_rank0(job, ctx, threads, &out.built); });
    // Every second, or often enough for a collective_timeout under a few seconds.
    const auto heartbeat = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::duration<double>(std::min(1.0, job.comm.collective_timeout / 4)));
    while (work.wait_for(heartbeat) != std::future_status::ready) {
      if (ctx.world > 1) broadcast_status(*ctx.comm, message);
    }
    try {
      fingerprint = work.get();
    } catch (...) {
      if (ctx.world > 1) {
        message[0] = kFailed;
        broadcast_status(*ctx.comm, message);
      }
      throw;
    }
    if (ctx.world > 1) {
      message[0] = kReady;
      message[1] = static_cast<int64_t>(std::stoull(fingerprint, nullptr, 16));
      broadcast_status(*ctx.comm, message);
    }
  } else {
    do {
      broadcast_status(*ctx.comm, message);
    } while (message[0] == kWorking);
    if (message[0] == kFailed)
      throw UserError(
          "rank 0 could not prepare the dataset; its error is in its log "
          "(output_dir/logs/rank-0.log)");
    fingerprint = fmt::format("{:016x}", static_cast<uint64_t>(message[1]));
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // Rank 0 has verified every checksum; the others check sizes and structure only, so a job does
  // not read the whole cache once per rank.
  out.dataset = std::make_unique<PreparedDataset>(
      (fs::path(prepared_data_root(job)) / fingerprint).string(), ctx.rank == 0);
  return out;
}

}  // namespace ptrain
