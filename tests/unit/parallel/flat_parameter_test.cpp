// FlatLayout against an element-by-element reference: every padded index is placed by a linear
// scan of the tensors, independently of the layout's own arithmetic.
#include "parallel/flat_parameter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"

namespace ptrain {
namespace {

using Tensors = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// (entry, element) of each element of the unpadded buffer, by a linear scan.
std::vector<std::pair<size_t, int64_t>> owners(const Tensors& tensors) {
  std::vector<std::pair<size_t, int64_t>> out;
  for (size_t t = 0; t < tensors.size(); ++t) {
    int64_t numel = 1;
    for (int64_t d : tensors[t].second) numel *= d;
    for (int64_t i = 0; i < numel; ++i) out.emplace_back(t, i);
  }
  return out;
}

Tensors random_tensors(std::mt19937& rng) {
  Tensors tensors;
  const int count = 1 + static_cast<int>(rng() % 6);
  for (int t = 0; t < count; ++t) {
    std::vector<int64_t> shape;
    const int dims = static_cast<int>(rng() % 3);                                     // scalars too
    for (int d = 0; d < dims; ++d) shape.push_back(static_cast<int64_t>(rng() % 7));  // 0 too
    tensors.emplace_back("t" + std::to_string(t), shape);
  }
  return tensors;
}

TEST(FlatLayout, ShardsTileThePaddedBufferAndPiecesPlaceEveryElementOnce) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const Tensors tensors = random_tensors(rng);
    const int shards = 1 + static_cast<int>(rng() % 5);
    const FlatLayout layout("unit", c10::ScalarType::BFloat16, tensors, shards);
    const auto expected = owners(tensors);
    ASSERT_EQ(layout.numel(), static_cast<int64_t>(expected.size()));
    ASSERT_EQ(layout.padded_numel() % shards, 0);
    ASSERT_GE(layout.padded_numel(), layout.numel());
    // Less than one element of padding per shard (an empty buffer still has one per shard).
    ASSERT_LT(layout.padding(), layout.numel() == 0 ? shards + 1 : shards);
    ASSERT_GE(layout.shard_numel(), 1);
    // Every padded index appears in exactly one shard, in order; pieces name its owner.
    std::vector<int> seen(static_cast<size_t>(layout.padded_numel()), 0);
    for (int s = 0; s < shards; ++s) {
      const auto [begin, end] = layout.shard_range(s);
      ASSERT_EQ(end - begin, layout.shard_numel());
      for (const ShardPiece& p : layout.pieces(s)) {
        ASSERT_GT(p.count, 0);
        for (int64_t i = 0; i < p.count; ++i) {
          const int64_t global = begin + p.shard_offset + i;
          ASSERT_LT(global, layout.numel()) << "a piece covers padding";
          ++seen[static_cast<size_t>(global)];
          EXPECT_EQ(expected[static_cast<size_t>(global)],
                    std::make_pair(p.entry, p.entry_offset + i));
        }
      }
    }
    for (int64_t i = 0; i < layout.padded_numel(); ++i)
      EXPECT_EQ(seen[static_cast<size_t>(i)], i < layout.numel() ? 1 : 0) << "element " << i;
  }
}

TEST(FlatLayout, ResliceMapsEveryElementOfANewShardToWhereTheOldShardsHoldIt) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const Tensors tensors = random_tensors(rng);
    const FlatLayout old_layout("unit", c10::ScalarType::Float, tensors,
                                1 + static_cast<int>(rng() % 5));
    const FlatLayout target = old_layout.with_shards(1 + static_cast<int>(rng() % 5));
    for (int s = 0; s < target.shards(); ++s) {
      const int64_t begin = target.shard_range(s).first;
      int64_t covered = 0;
      for (const ReslicePiece& p : old_layout.reslice(target, s)) {
        ASSERT_EQ(p.new_offset, covered) << "pieces in order, without gaps";
        for (int64_t i = 0; i < p.count; ++i) {
          // The same global element through both layouts.
          EXPECT_EQ(p.old_shard * old_layout.shard_numel() + p.old_offset + i,
                    begin + p.new_offset + i);
          EXPECT_LT(p.old_offset + i, old_layout.shard_numel());
        }
        covered += p.count;
      }
      EXPECT_EQ(covered, std::max<int64_t>(
                             0, std::min(target.shard_range(s).second, target.numel()) - begin));
    }
  }
}

TEST(FlatLayout, HandComputedLayoutAndItsJsonRoundTrip) {
  // 2x3 + 4 + 3 = 13 elements over 3 shards: shard_numel 5, 2 elements of padding.
  const FlatLayout layout("model.layers.0/trainable", c10::ScalarType::Float,
                          {{"a", {2, 3}}, {"b", {4}}, {"c", {3}}}, 3);
  EXPECT_EQ(layout.shard_numel(), 5);
  EXPECT_EQ(layout.padding(), 2);
  EXPECT_EQ(layout.entries()[2].offset, 10);
  const auto middle = layout.pieces(1);  // elements 5..9: a[5], b[0..3]
  ASSERT_EQ(middle.size(), 2u);
  EXPECT_EQ(middle[0].entry, 0u);
  EXPECT_EQ(middle[0].entry_offset, 5);
  EXPECT_EQ(middle[1].entry, 1u);
  EXPECT_EQ(middle[1].shard_offset, 1);
  EXPECT_EQ(middle[1].count, 4);
  const nlohmann::json json = layout.to_json();
  EXPECT_EQ(json["padding"], 2);
  EXPECT_EQ(json["dtype"], "Float");
  const FlatLayout back = FlatLayout::from_json(json);
  EXPECT_TRUE(back.same_tensors(layout));
  EXPECT_EQ(back.to_json(), json);
  nlohmann::json bad = json;
  bad["entries"][1]["offset"] = 7;
  EXPECT_THAT([&] { FlatLayout::from_json(bad); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("entry 'b'")));
  bad = json;
  bad.erase("shards");
  EXPECT_THAT([&] { FlatLayout::from_json(bad); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("'shards' is missing")));
  // Nothing at all still has one element per shard, all padding.
  const FlatLayout empty("none", c10::ScalarType::Byte, {}, 4);
  EXPECT_EQ(empty.shard_numel(), 1);
  EXPECT_TRUE(empty.pieces(3).empty());
}

}  // namespace
}  // namespace ptrain
