// Getting every rank a verified prepared dataset: rank 0 reuses the cache directory of the job's
// fingerprint, or (when it is missing or damaged) builds it, while the other ranks wait; then every
// rank maps it.
//
// Collective over ctx.comm: every rank calls it. Rank 0 prepares on a worker thread while its
// calling thread broadcasts a heartbeat every second (every collective_timeout / 4 when that is
// shorter), through every phase (hashing the data,
// verifying or building the cache), so the waiting ranks never sit in one collective long enough
// for the watchdog; the last broadcast carries the fingerprint (the directory name) or rank 0's
// failure, upon which the other ranks raise an error pointing at rank 0's log. Rank 0 verifies
// every checksum; the others check the files' sizes and structure. The cache directory must be
// visible to every rank (a shared filesystem across hosts).
#pragma once

#include <memory>
#include <string>

#include "core/config.h"
#include "core/rank_context.h"
#include "data/prepared_data.h"

namespace ptrain {

// `dataset_prepared_path`, or `<output_dir>/prepared-data` when it is empty.
std::string prepared_data_root(const JobConfig& job);

struct PreparedData {
  std::unique_ptr<PreparedDataset> dataset;
  bool built = false;  // rank 0 built it in this call (false: reused)
  double seconds = 0;  // time rank 0 spent fingerprinting and building
};

PreparedData prepare_data(const JobConfig& job, RankContext& ctx, int threads);

// What a prepared dataset holds, per source and in all, as `ptrain preprocess` prints it (several
// lines, each ending in a newline).
std::string prepared_summary_text(const PreparedDataset& data);

}  // namespace ptrain
