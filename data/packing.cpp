#include "data/packing.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "data/sampler.h"

namespace ptrain {
namespace {

// First fit over the rows of one group in O(log rows) a sample: a max segment tree over the rows'
// free space. Rows not opened yet have the whole sequence free, so the leftmost row with room is
// an open row or else the next one to open; a group of n samples never needs more than n rows.
class FirstFitRows {
 public:
  FirstFitRows(int64_t max_rows, int64_t capacity) {
    while (leaves_ < max_rows) leaves_ *= 2;
    free_.assign(static_cast<size_t>(2 * leaves_), capacity);
  }

  // Puts `length` tokens into the leftmost row with room for them; returns that row.
  int64_t place(int64_t length) {
    PTRAIN_ASSERT(free_[1] >= length, "no row has room for {} tokens", length);
    int64_t node = 1;
    while (node < leaves_) node = free_[2 * node] >= length ? 2 * node : 2 * node + 1;
    const int64_t row = node - leaves_;
    free_[node] -= length;
    for (node /= 2; node >= 1; node /= 2) {
      free_[node] = std::max(free_[2 * node], free_[2 * node + 1]);
    }
    return row;
  }

 private:
  int64_t leaves_ = 1;
  std::vector<int64_t> free_;  // node i's children are 2i and 2i+1; leaves from leaves_
};

// Packs one group by first-fit-decreasing and appends its rows to `layout`.
void pack_group(std::vector<int64_t> group, const std::vector<int64_t>& lengths,
                int64_t sequence_len, PackedLayout& layout) {
  std::sort(group.begin(), group.end(), [&](int64_t a, int64_t b) {
    return lengths[a] != lengths[b] ? lengths[a] > lengths[b] : a < b;
  });
  const auto n = static_cast<int64_t>(group.size());
  FirstFitRows first_fit(n, sequence_len);
  std::vector<int64_t> row_of(group.size());
  int64_t rows = 0;
  for (int64_t k = 0; k < n; ++k) {
    row_of[k] = first_fit.place(lengths[group[k]]);
    rows = std::max(rows, row_of[k] + 1);
  }

  // Rows laid out flat, each keeping its samples in placement order: a stable counting sort.
  std::vector<int64_t> row_start(static_cast<size_t>(rows) + 1, 0);
  for (int64_t row : row_of) ++row_start[row + 1];
  std::partial_sum(row_start.begin(), row_start.end(), row_start.begin());
  const auto base = static_cast<int64_t>(layout.samples.size());
  layout.samples.resize(layout.samples.size() + group.size());
  std::vector<int64_t> fill(row_start.begin(), row_start.end() - 1);
  for (int64_t k = 0; k < n; ++k) layout.samples[base + fill[row_of[k]]++] = group[k];
  for (int64_t r = 1; r <= rows; ++r) layout.row_offsets.push_back(base + row_start[r]);
}

}  // namespace

PackedLayout pack_samples(const std::vector<int64_t>& lengths, const PackingOptions& options) {
  PTRAIN_ASSERT(options.sequence_len > 0 && options.group_size > 0,
                "sequence_len {}, group_size {}", options.sequence_len, options.group_size);
  const auto n = static_cast<int64_t>(lengths.size());
  for (int64_t i = 0; i < n; ++i) {
    PTRAIN_ASSERT(lengths[i] >= 1 && lengths[i] <= options.sequence_len,
                  "sample {} has {} tokens, outside 1..{} (the length policy runs first)", i,
                  lengths[i], options.sequence_len);
  }
  const std::vector<int64_t> order = shuffled_indices(n, options.seed);
  PackedLayout layout;
  layout.samples.reserve(lengths.size());
  for (int64_t begin = 0; begin < n; begin += options.group_size) {
    const int64_t end = std::min(n, begin + options.group_size);
    pack_group(std::vector<int64_t>(order.begin() + begin, order.begin() + end), lengths,
               options.sequence_len, layout);
  }
  return layout;
}

PackedLayout one_sample_per_row(int64_t samples) {
  PTRAIN_ASSERT(samples >= 0, "{} samples", samples);
  PackedLayout layout;
  layout.row_offsets.resize(static_cast<size_t>(samples) + 1);
  std::iota(layout.row_offsets.begin(), layout.row_offsets.end(), int64_t{0});
  layout.samples.resize(static_cast<size_t>(samples));
  std::iota(layout.samples.begin(), layout.samples.end(), int64_t{0});
  return layout;
}

double packing_efficiency(const PackedLayout& layout, const std::vector<int64_t>& lengths,
                          int64_t sequence_len) {
  if (layout.rows() == 0) return 0.0;
  int64_t tokens = 0;
  for (int64_t sample : layout.samples) {
    PTRAIN_ASSERT(sample >= 0 && sample < static_cast<int64_t>(lengths.size()), "sample {} of {}",
                  sample, lengths.size());
    tokens += lengths[sample];
  }
  return static_cast<double>(tokens) / (static_cast<double>(layout.rows()) * sequence_len);
}

}  // namespace ptrain
