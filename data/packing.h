// Sample packing: which samples share a row of sequence_len tokens.
//
// Axolotl's multipack, made deterministic: the samples are shuffled by the seed (with
// shuffled_indices, sampler.h), cut into groups of `group_size` samples (consecutive in the
// shuffled order), and each group is packed by first-fit-decreasing (longest first, ties by sample
// index; each sample goes into the first row of its group with room for it, opening a row when
// none has). Rows of one group never hold samples of another, so a dataset's packing does not sort
// all of its long samples into one stretch of rows, and packing a group is O(n log n) (first fit
// descends a max-tree of the rows' free space). Every sample lands in exactly one row; a sample
// longer than sequence_len is a broken invariant (the length policy runs first). When the dataset
// fits in one group the layout does not depend on the seed.
//
// Without packing every sample is a row of its own, in the order of the samples.
#pragma once

#include <cstdint>
#include <vector>

namespace ptrain {

struct PackingOptions {
  int64_t sequence_len = 2048;
  int64_t group_size = 100000;  // samples per first-fit-decreasing group
  uint64_t seed = 42;
};

// Rows as lists of sample indices, stored flat: row r holds samples
// samples[row_offsets[r]] .. samples[row_offsets[r + 1] - 1], in the order they are laid out in
// the row. row_offsets has rows() + 1 entries, starting at 0.
struct PackedLayout {
  std::vector<int64_t> row_offsets{0};
  std::vector<int64_t> samples;
  int64_t rows() const { return static_cast<int64_t>(row_offsets.size()) - 1; }
};

// Packs samples of the given token lengths (each in 1..sequence_len, else RuntimeFailure) into
// rows: the rows of the first group, then those of the second, ...; within a group in the order
// they were opened. A row lists its samples in the order they were placed (longest first).
PackedLayout pack_samples(const std::vector<int64_t>& lengths, const PackingOptions& options);

// One sample per row, in order.
PackedLayout one_sample_per_row(int64_t samples);

// Tokens in samples / (rows * sequence_len); 0 for no rows.
double packing_efficiency(const PackedLayout& layout, const std::vector<int64_t>& lengths,
                          int64_t sequence_len);

}  // namespace ptrain
