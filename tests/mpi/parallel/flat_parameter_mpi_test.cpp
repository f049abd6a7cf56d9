// Flat parameters over real ranks: every rank fills only its shard (through pieces()), an
// all-gather rebuilds every tensor, and a reduce-scatter of per-rank gradients gives each rank the
// sum of its shard, checked against values each rank computes itself.
#include <gtest/gtest.h>

#include <vector>

#include "parallel/flat_parameter.h"
#include "tests/mpi/mpi_test_env.h"

namespace ptrain {
namespace {

// The value of element i of entry e on rank r (r = -1: the parameter itself).
double value(size_t e, int64_t i, int r) {
  return static_cast<double>(e) * 1000.0 + static_cast<double>(i) + (r + 1) * 0.25;
}

TEST(FlatParameterMpi, AllGatherRebuildsEveryTensorAndReduceScatterSumsEachShard) {
  Communicator& comm = test::world();
  const int world = comm.size(), rank = comm.rank();
  // Odd sizes, a scalar and an empty tensor, so shards cut through tensors and end in padding.
  const FlatLayout layout("unit", c10::ScalarType::Double,
                          {{"w", {3, 5}}, {"scalar", {}}, {"empty", {0, 4}}, {"b", {7}}}, world);
  std::vector<double> shard(static_cast<size_t>(layout.shard_numel()), 0.0);
  for (const ShardPiece& p : layout.pieces(rank))
    for (int64_t i = 0; i < p.count; ++i)
      shard[static_cast<size_t>(p.shard_offset + i)] = value(p.entry, p.entry_offset + i, -1);
  std::vector<double> full(static_cast<size_t>(layout.padded_numel()), -1.0);
  comm.all_gather(comm_buffer(full.data(), layout.padded_numel()),
                  comm_buffer(shard.data(), layout.shard_numel()));
  for (size_t e = 0; e < layout.entries().size(); ++e) {
    const FlatEntry& entry = layout.entries()[e];
    for (int64_t i = 0; i < entry.numel; ++i)
      EXPECT_EQ(full[static_cast<size_t>(entry.offset + i)], value(e, i, -1)) << entry.name << i;
  }
  for (int64_t i = layout.numel(); i < layout.padded_numel(); ++i)
    EXPECT_EQ(full[static_cast<size_t>(i)], 0.0) << "padding " << i;

  // Gradients: rank r contributes value(e, i, r) to every element; padding contributes 0.
  std::vector<double> grad(static_cast<size_t>(layout.padded_numel()), 0.0);
  for (size_t e = 0; e < layout.entries().size(); ++e)
    for (int64_t i = 0; i < layout.entries()[e].numel; ++i)
      grad[static_cast<size_t>(layout.entries()[e].offset + i)] = value(e, i, rank);
  std::vector<double> summed(static_cast<size_t>(layout.shard_numel()), -1.0);
  comm.reduce_scatter(comm_buffer(summed.data(), layout.shard_numel()),
                      comm_buffer(grad.data(), layout.padded_numel()), ReduceOp::kSum);
  std::vector<double> expected(summed.size(), 0.0);
  for (const ShardPiece& p : layout.pieces(rank))
    for (int64_t i = 0; i < p.count; ++i)
      for (int r = 0; r < world; ++r)
        expected[static_cast<size_t>(p.shard_offset + i)] += value(p.entry, p.entry_offset + i, r);
  for (size_t i = 0; i < summed.size(); ++i)
    EXPECT_DOUBLE_EQ(summed[i], expected[i]) << "shard element " << i << " on rank " << rank;
}

}  // namespace
}  // namespace ptrain
