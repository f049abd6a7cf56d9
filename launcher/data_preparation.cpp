#include "launcher/data_preparation.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <sstream>

#include "core/error.h"
#include "core/logging.h"
#include "launcher/job_options.h"
#include "launcher/rank_session.h"
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

// Rank 0: the job's prepared dataset, reused when its directory verifies, else built; opened and
// verified once either way.
std::unique_ptr<PreparedDataset> prepare_on_rank0(const JobConfig& job, RankContext& ctx,
                                                  int threads, bool* built) {
  PTRAIN_CHECK(!job.base_model.empty(),
               "'base_model' is not set: the datasets are tokenized with the model's tokenizer");
  const DataPrepOptions options = data_prep_options(job);
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(job.base_model);
  const std::string fingerprint = data_fingerprint(options, job.base_model);
  const std::string dir = (fs::path(prepared_data_root(job)) / fingerprint).string();
  if (fs::exists(dir)) {
    try {
      auto existing = std::make_unique<PreparedDataset>(dir);
      ctx.log->info("prepared data: reusing {} ({})", dir,
                    counted(existing->train_rows(), "training row"));
      return existing;
    } catch (const CorruptData& e) {
      ctx.log->warn("prepared data: {}; rebuilding it", e.what());
      fs::remove_all(dir);
    }
  }
  ctx.log->info("prepared data: building {} with the {} tokenizer on {}", dir, tokenizer->name(),
                counted(threads, "thread"));
  build_prepared_dataset(options, *tokenizer, fingerprint, dir, threads);
  *built = true;
  auto dataset = std::make_unique<PreparedDataset>(dir);
  std::istringstream text(prepared_summary_text(*dataset));
  for (std::string line; std::getline(text, line);) ctx.log->info("prepared data: {}", line);
  return dataset;
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
      out.dataset = work.get();
    } catch (...) {
      if (ctx.world > 1) {
        message[0] = kFailed;
        broadcast_status(*ctx.comm, message);
      }
      throw;
    }
    if (ctx.world > 1) {
      message[0] = kReady;
      message[1] = static_cast<int64_t>(std::stoull(out.dataset->fingerprint(), nullptr, 16));
      broadcast_status(*ctx.comm, message);
    }
  } else {
    do {
      broadcast_status(*ctx.comm, message);
    } while (message[0] == kWorking);
    if (message[0] == kFailed)
      throw PeerReportedError(fmt::format(
          "rank 0 could not prepare the dataset in '{}' and reports why", prepared_data_root(job)));
    // Rank 0 has verified every checksum; the others check sizes and structure only, so a job
    // does not read the whole cache once per rank.
    const std::string fingerprint = fmt::format("{:016x}", static_cast<uint64_t>(message[1]));
    out.dataset = std::make_unique<PreparedDataset>(
        (fs::path(prepared_data_root(job)) / fingerprint).string(), /*verify_checksums=*/false);
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return out;
}

std::string prepared_summary_text(const PreparedDataset& data) {
  const PreparedSummary& s = data.summary();
  std::ostringstream out;
  out << fmt::format("prepared dataset {} (fingerprint {})\n", data.dir(), data.fingerprint());
  for (const SourceSummary& src : s.sources) {
    std::string skipped;
    for (const auto& [reason, count] : src.skipped)
      skipped += fmt::format("{}{} {}", skipped.empty() ? "" : ", ", count, reason);
    out << fmt::format(
        "  {} ({}): {}{}, {} ({} truncated, {} dropped), {}; {}, {} validation\n", src.path,
        src.type, counted(src.rows, "row"), skipped.empty() ? "" : " (skipped: " + skipped + ")",
        counted(src.samples, "sample"), src.truncated, src.dropped, counted(src.tokens, "token"),
        counted(src.train_samples, "training use"), src.val_samples);
  }
  out << fmt::format(
      "  training: {} in {} of {} ({}), packing efficiency {:.2f}%, {}, {} learned\n",
      counted(s.train_samples, "sample use"), counted(s.train_rows, "row"),
      counted(data.sequence_len(), "token"),
      data.sample_packing() ? "packed" : "one sample per row", 100.0 * s.packing_efficiency,
      counted(s.train_tokens, "token"), s.learned_tokens);
  out << fmt::format("  validation: {}\n", counted(s.val_samples, "sample"));
  return out.str();
}

}  // namespace ptrain
