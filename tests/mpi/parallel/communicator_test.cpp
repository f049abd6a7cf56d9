// MpiCommunicator against values every rank computes independently (no rank trusts another's
// output): each rank knows what every other rank's input is, so it computes the expected result
// of each collective itself, in fp64.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "parallel/communicator.h"
#include "tests/mpi/mpi_test_env.h"

namespace ptrain {
namespace {

using c10::ScalarType;
using test::world;

// ---------------------------------------------------------------- typed host buffers

class TypedBuffer {
 public:
  TypedBuffer(ScalarType dtype, int64_t numel)
      : dtype_(dtype), numel_(numel), bytes_(numel * c10::elementSize(dtype) + 1) {}

  CommBuffer buffer() { return CommBuffer{bytes_.data(), numel_, dtype_, DeviceType::kCpu}; }
  int64_t numel() const { return numel_; }

  void set(int64_t i, double v) {
    void* p = bytes_.data() + i * c10::elementSize(dtype_);
    switch (dtype_) {
      case ScalarType::Float:
        *static_cast<float*>(p) = static_cast<float>(v);
        break;
      case ScalarType::Double:
        *static_cast<double*>(p) = v;
        break;
      case ScalarType::BFloat16:
        *static_cast<c10::BFloat16*>(p) = c10::BFloat16(static_cast<float>(v));
        break;
      case ScalarType::Half:
        *static_cast<c10::Half*>(p) = c10::Half(static_cast<float>(v));
        break;
      case ScalarType::Int:
        *static_cast<int32_t*>(p) = static_cast<int32_t>(v);
        break;
      case ScalarType::Long:
        *static_cast<int64_t*>(p) = static_cast<int64_t>(v);
        break;
      case ScalarType::Byte:
        *static_cast<uint8_t*>(p) = static_cast<uint8_t>(v);
        break;
      default:
        ADD_FAILURE() << "unexpected dtype";
    }
  }

  double get(int64_t i) const {
    const void* p = bytes_.data() + i * c10::elementSize(dtype_);
    switch (dtype_) {
      case ScalarType::Float:
        return *static_cast<const float*>(p);
      case ScalarType::Double:
        return *static_cast<const double*>(p);
      case ScalarType::BFloat16:
        return static_cast<float>(*static_cast<const c10::BFloat16*>(p));
      case ScalarType::Half:
        return static_cast<float>(*static_cast<const c10::Half*>(p));
      case ScalarType::Int:
        return *static_cast<const int32_t*>(p);
      case ScalarType::Long:
        return static_cast<double>(*static_cast<const int64_t*>(p));
      case ScalarType::Byte:
        return *static_cast<const uint8_t*>(p);
      default:
        ADD_FAILURE() << "unexpected dtype";
        return 0;
    }
  }

 private:
  ScalarType dtype_;
  int64_t numel_;
  std::vector<uint8_t> bytes_;
};

double round_to(ScalarType dtype, double v) {
  TypedBuffer one(dtype, 1);
  one.set(0, v);
  return one.get(0);
}

// Distance of one unit in the last place of `dtype` at magnitude |x|.
double ulp(ScalarType dtype, double x) {
  int mantissa = dtype == ScalarType::BFloat16 ? 7
                 : dtype == ScalarType::Half   ? 10
                 : dtype == ScalarType::Float  ? 23
                                               : 52;
  x = std::max(std::fabs(x), 1e-30);
  double unit = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(x))) - mantissa);
  return dtype == ScalarType::Half ? std::max(unit, std::ldexp(1.0, -24)) : unit;  // subnormals
}

// Rank r's i-th input: exactly representable in every dtype, and sums over <= 4 ranks stay exact
// (and in range for uint8), so sum and max have one right answer.
double value(ScalarType dtype, int rank, int64_t i) {
  switch (dtype) {
    case ScalarType::Byte:
      return static_cast<double>((rank * 37 + i * 11) % 61);
    case ScalarType::Int:
      return static_cast<double>((rank * 1000003 + i * 7919) % 100003 - 50000);
    case ScalarType::Long:
      return static_cast<double>((rank * 1000003 + i * 7919) % 100003 - 50000) * 1099511627776.0;
    default:
      return static_cast<double>((rank * 31 + i * 17) % 23 - 11) * 0.25;
  }
}

double reduce_expected(ScalarType dtype, ReduceOp op, int world_size, int64_t i) {
  double sum = 0, max = -1e300;
  for (int r = 0; r < world_size; ++r) {
    double v = value(dtype, r, i);
    sum += v;
    max = std::max(max, v);
  }
  if (op == ReduceOp::kMax) return max;
  if (op == ReduceOp::kAvg) return round_to(dtype, sum / world_size);
  return sum;
}

void expect_close(ScalarType dtype, ReduceOp op, double expected, double got, const char* what,
                  int64_t i) {
  // Sums and maxes are exact; an average may be off by the one rounding of sum * (1/n).
  double tolerance =
      op == ReduceOp::kAvg && (dtype == ScalarType::BFloat16 || dtype == ScalarType::Half)
          ? ulp(dtype, expected)
          : 0.0;
  ASSERT_LE(std::fabs(expected - got), tolerance)
      << what << " element " << i << " dtype " << c10::toString(dtype) << " op "
      << reduce_op_name(op) << " on rank " << world().rank();
}

const std::vector<ScalarType> kAllTypes = {
    ScalarType::Float, ScalarType::Double, ScalarType::BFloat16, ScalarType::Half,
    ScalarType::Int,   ScalarType::Long,   ScalarType::Byte};
// Odd sizes; 40001 x 2-byte elements per rank pushes the 16-bit paths past their small-buffer
// cutoff.
const std::vector<int64_t> kSizes = {1, 3, 17, 1000, 40001};

class CollectiveTest : public ::testing::TestWithParam<ScalarType> {};

TEST_P(CollectiveTest, AllGatherPlacesEachRanksInput) {
  const ScalarType dtype = GetParam();
  const int n = world().size(), me = world().rank();
  for (int64_t count : kSizes) {
    TypedBuffer in(dtype, count), out(dtype, count * n);
    for (int64_t i = 0; i < count; ++i) in.set(i, value(dtype, me, i));
    world().all_gather(out.buffer(), in.buffer());
    for (int r = 0; r < n; ++r)
      for (int64_t i = 0; i < count; ++i)
        ASSERT_EQ(out.get(r * count + i), value(dtype, r, i)) << "from rank " << r << " i " << i;
  }
}

TEST_P(CollectiveTest, AllGatherInPlace) {
  const ScalarType dtype = GetParam();
  const int n = world().size(), me = world().rank();
  const int64_t count = 1001;
  TypedBuffer out(dtype, count * n);
  for (int64_t i = 0; i < count; ++i) out.set(me * count + i, value(dtype, me, i));
  world().all_gather(out.buffer(), out.buffer().slice(me * count, count));
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(out.get(r * count + i), value(dtype, r, i));
}

TEST_P(CollectiveTest, ReduceScatterGivesEachRankItsReducedChunk) {
  const ScalarType dtype = GetParam();
  const int n = world().size(), me = world().rank();
  std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kMax};
  if (c10::isFloatingType(dtype)) ops.push_back(ReduceOp::kAvg);
  for (ReduceOp op : ops) {
    for (int64_t count : kSizes) {
      TypedBuffer in(dtype, count * n), out(dtype, count);
      for (int64_t i = 0; i < count * n; ++i) in.set(i, value(dtype, me, i));
      world().reduce_scatter(out.buffer(), in.buffer(), op);
      for (int64_t k = 0; k < count; ++k)
        expect_close(dtype, op, reduce_expected(dtype, op, n, me * count + k), out.get(k),
                     "reduce_scatter", k);
    }
  }
}

TEST_P(CollectiveTest, AllReduceEveryOpAndOddSizes) {
  const ScalarType dtype = GetParam();
  const int n = world().size(), me = world().rank();
  std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kMax};
  if (c10::isFloatingType(dtype)) ops.push_back(ReduceOp::kAvg);
  for (ReduceOp op : ops) {
    for (int64_t count :
         {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{1000}, int64_t{65537}, int64_t{100003}}) {
      TypedBuffer buf(dtype, count);
      for (int64_t i = 0; i < count; ++i) buf.set(i, value(dtype, me, i));
      world().all_reduce(buf.buffer(), op);
      for (int64_t i = 0; i < count; ++i)
        expect_close(dtype, op, reduce_expected(dtype, op, n, i), buf.get(i), "all_reduce", i);
    }
  }
}

TEST_P(CollectiveTest, BroadcastFromEveryRoot) {
  const ScalarType dtype = GetParam();
  const int n = world().size(), me = world().rank();
  for (int root = 0; root < n; ++root) {
    for (int64_t count : kSizes) {
      TypedBuffer buf(dtype, count);
      for (int64_t i = 0; i < count; ++i) buf.set(i, value(dtype, me, i));
      world().broadcast(buf.buffer(), root);
      for (int64_t i = 0; i < count; ++i) ASSERT_EQ(buf.get(i), value(dtype, root, i));
    }
  }
}

TEST(LargeAllReduce, FpBuffersPastTheChunkedCutoffWithUnevenChunks) {
  const int n = world().size(), me = world().rank();
  for (ScalarType dtype : {ScalarType::Float, ScalarType::Double}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      // 32 MiB + one element: the chunked path, with a remainder chunk when n > 1.
      const int64_t count = (int64_t{32} << 20) / c10::elementSize(dtype) + 1;
      TypedBuffer buf(dtype, count);
      for (int64_t i = 0; i < count; ++i) buf.set(i, value(dtype, me, i));
      world().all_reduce(buf.buffer(), op);
      for (int64_t i = 0; i < count; i += 997)
        expect_close(dtype, op, reduce_expected(dtype, op, n, i), buf.get(i), "all_reduce", i);
      expect_close(dtype, op, reduce_expected(dtype, op, n, count - 1), buf.get(count - 1),
                   "all_reduce", count - 1);
    }
  }
}

TEST(LargeReduceScatter, ChunksSpanningSeveralSegments) {
  const int n = world().size(), me = world().rank();
  for (ScalarType dtype : {ScalarType::Float, ScalarType::BFloat16}) {
    // Two and a bit 4 MiB segments per chunk.
    const int64_t count = (int64_t{4} << 20) / c10::elementSize(dtype) / n * 2 + 3;
    TypedBuffer in(dtype, count * n), out(dtype, count);
    for (int64_t i = 0; i < count * n; ++i) in.set(i, value(dtype, me, i));
    world().reduce_scatter(out.buffer(), in.buffer(), ReduceOp::kSum);
    for (int64_t k = 0; k < count; ++k)
      expect_close(dtype, ReduceOp::kSum, reduce_expected(dtype, ReduceOp::kSum, n, me * count + k),
                   out.get(k), "reduce_scatter", k);
  }
}

TEST(MaxReduction, NanFromTheLastRankWins) {
  const int n = world().size(), me = world().rank();
  for (ScalarType dtype : {ScalarType::Float, ScalarType::BFloat16}) {
    const int64_t count = 40001;  // past the small-buffer cutoff: the local reduction kernel
    TypedBuffer in(dtype, count * n), out(dtype, count);
    for (int64_t i = 0; i < count * n; ++i) in.set(i, value(dtype, me, i));
    if (me == n - 1)
      for (int r = 0; r < n; ++r) in.set(r * count + 5, std::nan(""));
    world().reduce_scatter(out.buffer(), in.buffer(), ReduceOp::kMax);
    EXPECT_TRUE(std::isnan(out.get(5))) << c10::toString(dtype);
    EXPECT_EQ(out.get(6), reduce_expected(dtype, ReduceOp::kMax, n, me * count + 6));
  }
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, CollectiveTest, ::testing::ValuesIn(kAllTypes),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

// ---------------------------------------------------------------- 16-bit accuracy

// Rank r's random input, regenerated identically on every rank.
std::vector<double> random_inputs(ScalarType dtype, int rank, int64_t count) {
  std::mt19937_64 rng(1234 + rank);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(count);
  for (auto& x : v) x = round_to(dtype, normal(rng) * std::exp2(static_cast<int>(rng() % 7) - 3));
  return v;
}

// The result must be within half an ulp (plus fp32 accumulation slack, relative to the sum of the
// magnitudes) of the exact fp64 sum: that is what one rounding gives, and what n-1 successive
// 16-bit roundings do not.
int64_t count_inaccurate(ScalarType dtype, const std::vector<double>& exact,
                         const std::vector<double>& magnitude, const std::vector<double>& got) {
  int64_t bad = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    double bound = 0.5 * ulp(dtype, exact[i]) + magnitude[i] * 1e-6;
    if (std::fabs(got[i] - exact[i]) > bound) ++bad;
  }
  return bad;
}

class HalfPrecisionAccuracy : public ::testing::TestWithParam<ScalarType> {};

TEST_P(HalfPrecisionAccuracy, AllReduceSumIsOneRoundingOfTheExactSum) {
  const ScalarType dtype = GetParam();
  const int n = world().size(), me = world().rank();
  for (int64_t count : {int64_t{4099}, int64_t{200003}}) {  // widened path and alltoall path
    std::vector<double> exact(count, 0.0), magnitude(count, 0.0), naive(count, 0.0), got(count);
    for (int r = 0; r < n; ++r) {
      auto in = random_inputs(dtype, r, count);
      for (int64_t i = 0; i < count; ++i) {
        exact[i] += in[i];
        magnitude[i] += std::fabs(in[i]);
        naive[i] = r == 0 ? in[i] : round_to(dtype, naive[i] + in[i]);  // what a 16-bit ring does
      }
    }
    TypedBuffer buf(dtype, count);
    auto mine = random_inputs(dtype, me, count);
    for (int64_t i = 0; i < count; ++i) buf.set(i, mine[i]);
    world().all_reduce(buf.buffer(), ReduceOp::kSum);
    for (int64_t i = 0; i < count; ++i) got[i] = buf.get(i);
    EXPECT_EQ(count_inaccurate(dtype, exact, magnitude, got), 0) << "count " << count;
    if (n >= 3) {  // the bound is strict enough to catch repeated 16-bit rounding
      EXPECT_GT(count_inaccurate(dtype, exact, magnitude, naive), 0);
    }
  }
}

TEST_P(HalfPrecisionAccuracy, ReduceScatterSumIsOneRoundingOfTheExactSum) {
  const ScalarType dtype = GetParam();
  const int n = world().size(), me = world().rank();
  for (int64_t count : {int64_t{513}, int64_t{50001}}) {
    std::vector<double> exact(count, 0.0), magnitude(count, 0.0), got(count);
    for (int r = 0; r < n; ++r) {
      auto in = random_inputs(dtype, r, count * n);
      for (int64_t k = 0; k < count; ++k) {
        exact[k] += in[me * count + k];
        magnitude[k] += std::fabs(in[me * count + k]);
      }
    }
    TypedBuffer in(dtype, count * n), out(dtype, count);
    auto mine = random_inputs(dtype, me, count * n);
    for (int64_t i = 0; i < count * n; ++i) in.set(i, mine[i]);
    world().reduce_scatter(out.buffer(), in.buffer(), ReduceOp::kSum);
    for (int64_t k = 0; k < count; ++k) got[k] = out.get(k);
    EXPECT_EQ(count_inaccurate(dtype, exact, magnitude, got), 0) << "count " << count;
  }
}

INSTANTIATE_TEST_SUITE_P(SixteenBit, HalfPrecisionAccuracy,
                         ::testing::Values(ScalarType::BFloat16, ScalarType::Half),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

// ---------------------------------------------------------------- async, ordering, split

TEST(AsyncCollectives, ComputeWhileInFlightAndCompleteInIssueOrder) {
  const int n = world().size(), me = world().rank();
  const int64_t count = 1 << 22;
  std::vector<float> a(count), b(count);
  std::vector<double> c(1000);
  for (int64_t i = 0; i < count; ++i) {
    a[i] = static_cast<float>(value(ScalarType::Float, me, i));
    b[i] = static_cast<float>(value(ScalarType::Float, me, i + 5));
  }
  std::vector<double> gathered(c.size() * n);
  WorkHandle first = world().all_reduce_async(comm_buffer(a.data(), count), ReduceOp::kSum);
  WorkHandle second = world().all_reduce_async(comm_buffer(b.data(), count), ReduceOp::kMax);
  // Compute on this thread while both are in flight; the buffers of the collectives are untouched.
  double local = 0;
  for (int64_t i = 0; i < count; ++i) local += std::sqrt(static_cast<double>(i));
  for (size_t i = 0; i < c.size(); ++i) c[i] = me * 1000.0 + static_cast<double>(i);
  WorkHandle third =
      world().all_gather_async(comm_buffer(gathered.data(), static_cast<int64_t>(gathered.size())),
                               comm_buffer(c.data(), static_cast<int64_t>(c.size())));
  third->wait();  // waiting out of order is allowed; completion is in issue order
  EXPECT_TRUE(first->is_completed());
  EXPECT_TRUE(second->is_completed());
  EXPECT_TRUE(first->wait_for(std::chrono::milliseconds(0)));
  second->wait();
  EXPECT_GT(local, 0.0);
  for (int64_t i = 0; i < count; i += 4099) {
    ASSERT_EQ(a[i], reduce_expected(ScalarType::Float, ReduceOp::kSum, n, i));
    ASSERT_EQ(b[i], reduce_expected(ScalarType::Float, ReduceOp::kMax, n, i + 5)) << i;
  }
  for (int r = 0; r < n; ++r) ASSERT_EQ(gathered[r * c.size() + 7], r * 1000.0 + 7);
}

TEST(AsyncCollectives, BarrierCompletes) {
  WorkHandle work = world().barrier_async();
  EXPECT_TRUE(work->wait_for(std::chrono::seconds(60)));
}

TEST(Split, SubCommunicatorsReduceOnlyTheirMembers) {
  const int n = world().size(), me = world().rank();
  auto sub = world().split(me % 2, -me);  // key reverses the order inside each group
  int members = 0;
  for (int r = me % 2; r < n; r += 2) ++members;
  ASSERT_EQ(sub->size(), members);
  // Ranks of the same color ordered by key -me: the highest world rank comes first.
  int expected_rank = 0;
  for (int r = me % 2; r < n; r += 2)
    if (r > me) ++expected_rank;
  EXPECT_EQ(sub->rank(), expected_rank);
  int64_t mine = me + 1, total = 0;
  for (int r = me % 2; r < n; r += 2) total += r + 1;
  sub->all_reduce(comm_buffer(&mine, 1), ReduceOp::kSum);
  EXPECT_EQ(mine, total);
  EXPECT_THAT(sub->name(), ::testing::HasSubstr("split(color="));
}

TEST(Abandon, LaterCollectivesFailWithoutTouchingMpi) {
  auto child = world().split(0, world().rank());
  float value = 1;
  child->all_reduce(comm_buffer(&value, 1), ReduceOp::kSum);  // works before
  EXPECT_EQ(value, static_cast<float>(world().size()));
  child->abandon();
  WorkHandle work = child->all_reduce_async(comm_buffer(&value, 1), ReduceOp::kSum);
  EXPECT_THAT([&] { work->wait(); },
              ::testing::ThrowsMessage<RuntimeFailure>(::testing::HasSubstr("abandoned")));
  EXPECT_THAT([&] { child->barrier(); },
              ::testing::ThrowsMessage<RuntimeFailure>(::testing::HasSubstr("abandoned")));
  EXPECT_EQ(value, static_cast<float>(world().size()));  // untouched
}

TEST(Contract, BadCallsAreUserErrorsNamingTheCollective) {
  const int n = world().size();
  std::vector<float> small(3), big(3 * n + 1);
  EXPECT_THAT(
      [&] { world().all_gather(comm_buffer(big.data(), 3 * n + 1), comm_buffer(small.data(), 3)); },
      ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("all_gather")));
  EXPECT_THAT(
      [&] {
        world().reduce_scatter(comm_buffer(small.data(), 3), comm_buffer(big.data(), 3 * n + 1),
                               ReduceOp::kSum);
      },
      ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("reduce_scatter")));
  std::vector<int32_t> ints(4);
  EXPECT_THAT([&] { world().all_reduce(comm_buffer(ints.data(), 4), ReduceOp::kAvg); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("avg")));
  EXPECT_THAT(
      [&] { world().all_reduce(comm_buffer(small.data(), 3, DeviceType::kCuda), ReduceOp::kSum); },
      ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("CPU buffers")));
  EXPECT_THAT([&] { world().broadcast(comm_buffer(small.data(), 3), n); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("root")));
  // None of these reached MPI: the communicator still works.
  float one = 1;
  world().all_reduce(comm_buffer(&one, 1), ReduceOp::kSum);
  EXPECT_EQ(one, static_cast<float>(n));
}

}  // namespace
}  // namespace ptrain
