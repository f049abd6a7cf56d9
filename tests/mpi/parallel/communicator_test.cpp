// The Communicator contract against values every rank computes independently (no rank trusts
// another's output): each rank knows what every other rank's input is, so it computes the expected
// result of each collective itself, in fp64. The contract tests (CollectiveTest, CommContractTest)
// run on every backend of the build (comm_test_backend.h); the tests of MpiCommunicator's own
// promises (one rounding of 16-bit sums, NaN propagation, wait() on the host, errors naming the
// world rank) run on the MPI world only.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"
#include "tests/mpi/mpi_test_env.h"
#include "tests/mpi/parallel/comm_test_backend.h"

namespace ptrain::test {

// ---------------------------------------------------------------- backends

namespace {

// Collectives on CPU buffers, the world of mpi_test_main.cpp.
class MpiTestBackend final : public CommTestBackend {
 public:
  std::string name() const override { return "mpi"; }
  std::string unavailable_reason() override { return ""; }
  Communicator& world() override { return test::world(); }
  DeviceType device() const override { return DeviceType::kCpu; }
  std::unique_ptr<BackendMemory> allocate(int64_t) override { return nullptr; }
  bool rounds_once() const override { return true; }
};

}  // namespace

CommTestBackend& mpi_test_backend() {
  static MpiTestBackend backend;
  return backend;
}

std::vector<c10::ScalarType> all_dtypes() {
  using c10::ScalarType;
  return {ScalarType::Float, ScalarType::Double, ScalarType::BFloat16, ScalarType::Half,
          ScalarType::Int,   ScalarType::Long,   ScalarType::Byte};
}

std::string backend_test_name(const ::testing::TestParamInfo<CommTestBackend*>& info) {
  return info.param->name();
}

std::string dtype_test_name(
    const ::testing::TestParamInfo<std::tuple<CommTestBackend*, c10::ScalarType>>& info) {
  return c10::toString(std::get<1>(info.param));
}

namespace {

using c10::ScalarType;

// ---------------------------------------------------------------- typed buffers

// Values live on the host; a buffer made for a backend with memory of its own (NCCL) mirrors them
// there: buffer() copies the host values in when they changed, and the first read after it copies
// the backend's values out (after the collective, which wait() ordered before that copy).
class TypedBuffer {
 public:
  // Host memory only.
  TypedBuffer(ScalarType dtype, int64_t numel)
      : dtype_(dtype), numel_(numel), bytes_(numel * c10::elementSize(dtype) + 1) {}
  // The memory `backend`'s collectives work on.
  TypedBuffer(CommTestBackend& backend, ScalarType dtype, int64_t numel)
      : TypedBuffer(dtype, numel) {
    memory_ = backend.allocate(static_cast<int64_t>(bytes_.size()));
    device_ = backend.device();
  }

  CommBuffer buffer() {
    if (!memory_) return CommBuffer{bytes_.data(), numel_, dtype_, DeviceType::kCpu};
    if (newer_ == Newer::kHost) memory_->upload(bytes_.data(), host_bytes());
    newer_ = Newer::kBackend;
    return CommBuffer{memory_->data(), numel_, dtype_, device_};
  }
  int64_t numel() const { return numel_; }

  void set(int64_t i, double v) {
    pull();
    if (memory_) newer_ = Newer::kHost;
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

  double get(int64_t i) {
    pull();
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
  enum class Newer { kNeither, kHost, kBackend };  // which copy may hold values the other lacks

  int64_t host_bytes() const { return numel_ * static_cast<int64_t>(c10::elementSize(dtype_)); }
  void pull() {
    if (!memory_ || newer_ != Newer::kBackend) return;
    memory_->download(bytes_.data(), host_bytes());
    newer_ = Newer::kNeither;
  }

  ScalarType dtype_;
  int64_t numel_;
  std::vector<uint8_t> bytes_;
  std::unique_ptr<BackendMemory> memory_;  // null: the collectives use bytes_
  DeviceType device_ = DeviceType::kCpu;
  Newer newer_ = Newer::kHost;
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

// The sum of the inputs' magnitudes at element i.
double magnitude(ScalarType dtype, int world_size, int64_t i) {
  double sum = 0;
  for (int r = 0; r < world_size; ++r) sum += std::fabs(value(dtype, r, i));
  return sum;
}

// What a backend that rounds at each step (NCCL) may add to an average: n roundings, each within
// an ulp of the inputs' total magnitude. Sums and maxes of these inputs are exact on any backend.
double step_rounding_slack(const CommTestBackend& backend, ScalarType dtype, ReduceOp op,
                           int world_size, int64_t i) {
  if (backend.rounds_once() || op != ReduceOp::kAvg) return 0.0;
  return world_size * ulp(dtype, magnitude(dtype, world_size, i));
}

void expect_close(ScalarType dtype, ReduceOp op, double expected, double got, const char* what,
                  int64_t i, double slack = 0.0) {
  // Sums and maxes are exact; an average may be off by the one rounding of sum * (1/n).
  double tolerance =
      std::max(op == ReduceOp::kAvg && (dtype == ScalarType::BFloat16 || dtype == ScalarType::Half)
                   ? ulp(dtype, expected)
                   : 0.0,
               slack);
  ASSERT_LE(std::fabs(expected - got), tolerance)
      << what << " element " << i << " dtype " << c10::toString(dtype) << " op "
      << reduce_op_name(op) << " on rank " << world().rank();
}

// Odd sizes; 40001 x 2-byte elements per rank pushes the 16-bit paths past their small-buffer
// cutoff.
const std::vector<int64_t> kSizes = {1, 3, 17, 1000, 40001};

// ---------------------------------------------------------------- contract, every backend

TEST_P(CollectiveTest, AllGatherPlacesEachRanksInput) {
  const ScalarType dtype = this->dtype();
  const int n = comm().size(), me = comm().rank();
  for (int64_t count : kSizes) {
    TypedBuffer in(backend(), dtype, count), out(backend(), dtype, count * n);
    for (int64_t i = 0; i < count; ++i) in.set(i, value(dtype, me, i));
    comm().all_gather(out.buffer(), in.buffer());
    for (int r = 0; r < n; ++r)
      for (int64_t i = 0; i < count; ++i)
        ASSERT_EQ(out.get(r * count + i), value(dtype, r, i)) << "from rank " << r << " i " << i;
  }
}

TEST_P(CollectiveTest, AllGatherInPlace) {
  const ScalarType dtype = this->dtype();
  const int n = comm().size(), me = comm().rank();
  const int64_t count = 1001;
  TypedBuffer out(backend(), dtype, count * n);
  for (int64_t i = 0; i < count; ++i) out.set(me * count + i, value(dtype, me, i));
  CommBuffer whole = out.buffer();
  comm().all_gather(whole, whole.slice(me * count, count));
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(out.get(r * count + i), value(dtype, r, i));
}

TEST_P(CollectiveTest, ReduceScatterGivesEachRankItsReducedChunk) {
  const ScalarType dtype = this->dtype();
  const int n = comm().size(), me = comm().rank();
  std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kMax};
  if (c10::isFloatingType(dtype)) ops.push_back(ReduceOp::kAvg);
  for (ReduceOp op : ops) {
    for (int64_t count : kSizes) {
      TypedBuffer in(backend(), dtype, count * n), out(backend(), dtype, count);
      for (int64_t i = 0; i < count * n; ++i) in.set(i, value(dtype, me, i));
      comm().reduce_scatter(out.buffer(), in.buffer(), op);
      for (int64_t k = 0; k < count; ++k)
        expect_close(dtype, op, reduce_expected(dtype, op, n, me * count + k), out.get(k),
                     "reduce_scatter", k,
                     step_rounding_slack(backend(), dtype, op, n, me * count + k));
    }
  }
}

TEST_P(CollectiveTest, AllReduceEveryOpAndOddSizes) {
  const ScalarType dtype = this->dtype();
  const int n = comm().size(), me = comm().rank();
  std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kMax};
  if (c10::isFloatingType(dtype)) ops.push_back(ReduceOp::kAvg);
  for (ReduceOp op : ops) {
    for (int64_t count :
         {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{1000}, int64_t{65537}, int64_t{100003}}) {
      TypedBuffer buf(backend(), dtype, count);
      for (int64_t i = 0; i < count; ++i) buf.set(i, value(dtype, me, i));
      comm().all_reduce(buf.buffer(), op);
      for (int64_t i = 0; i < count; ++i)
        expect_close(dtype, op, reduce_expected(dtype, op, n, i), buf.get(i), "all_reduce", i,
                     step_rounding_slack(backend(), dtype, op, n, i));
    }
  }
}

TEST_P(CollectiveTest, BroadcastFromEveryRoot) {
  const ScalarType dtype = this->dtype();
  const int n = comm().size(), me = comm().rank();
  for (int root = 0; root < n; ++root) {
    for (int64_t count : kSizes) {
      TypedBuffer buf(backend(), dtype, count);
      for (int64_t i = 0; i < count; ++i) buf.set(i, value(dtype, me, i));
      comm().broadcast(buf.buffer(), root);
      for (int64_t i = 0; i < count; ++i) ASSERT_EQ(buf.get(i), value(dtype, root, i));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Mpi, CollectiveTest,
                         ::testing::Combine(::testing::Values(&mpi_test_backend()),
                                            ::testing::ValuesIn(all_dtypes())),
                         dtype_test_name);

TEST_P(CommContractTest, LargeAllReduceOfFpBuffersPastTheChunkedCutoffWithUnevenChunks) {
  const int n = comm().size(), me = comm().rank();
  for (ScalarType dtype : {ScalarType::Float, ScalarType::Double}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      // 32 MiB + one element: the chunked path, with a remainder chunk when n > 1.
      const int64_t count = (int64_t{32} << 20) / c10::elementSize(dtype) + 1;
      TypedBuffer buf(backend(), dtype, count);
      for (int64_t i = 0; i < count; ++i) buf.set(i, value(dtype, me, i));
      comm().all_reduce(buf.buffer(), op);
      for (int64_t i = 0; i < count; i += 997)
        expect_close(dtype, op, reduce_expected(dtype, op, n, i), buf.get(i), "all_reduce", i,
                     step_rounding_slack(backend(), dtype, op, n, i));
      expect_close(dtype, op, reduce_expected(dtype, op, n, count - 1), buf.get(count - 1),
                   "all_reduce", count - 1,
                   step_rounding_slack(backend(), dtype, op, n, count - 1));
    }
  }
}

TEST_P(CommContractTest, LargeReduceScatterWithChunksSpanningSeveralSegments) {
  const int n = comm().size(), me = comm().rank();
  for (ScalarType dtype : {ScalarType::Float, ScalarType::BFloat16}) {
    // Two and a bit 4 MiB segments per chunk.
    const int64_t count = (int64_t{4} << 20) / c10::elementSize(dtype) / n * 2 + 3;
    TypedBuffer in(backend(), dtype, count * n), out(backend(), dtype, count);
    for (int64_t i = 0; i < count * n; ++i) in.set(i, value(dtype, me, i));
    comm().reduce_scatter(out.buffer(), in.buffer(), ReduceOp::kSum);
    for (int64_t k = 0; k < count; ++k)
      expect_close(dtype, ReduceOp::kSum, reduce_expected(dtype, ReduceOp::kSum, n, me * count + k),
                   out.get(k), "reduce_scatter", k);
  }
}

TEST_P(CommContractTest, AsyncCollectivesComputeWhileInFlightAndCompleteInIssueOrder) {
  const int n = comm().size(), me = comm().rank();
  const int64_t count = 1 << 22;
  TypedBuffer a(backend(), ScalarType::Float, count), b(backend(), ScalarType::Float, count);
  TypedBuffer c(backend(), ScalarType::Double, 1000);
  for (int64_t i = 0; i < count; ++i) {
    a.set(i, value(ScalarType::Float, me, i));
    b.set(i, value(ScalarType::Float, me, i + 5));
  }
  TypedBuffer gathered(backend(), ScalarType::Double, c.numel() * n);
  WorkHandle first = comm().all_reduce_async(a.buffer(), ReduceOp::kSum);
  WorkHandle second = comm().all_reduce_async(b.buffer(), ReduceOp::kMax);
  // Compute on this thread while both are in flight; the buffers of the collectives are untouched.
  double local = 0;
  for (int64_t i = 0; i < count; ++i) local += std::sqrt(static_cast<double>(i));
  for (int64_t i = 0; i < c.numel(); ++i) c.set(i, me * 1000.0 + static_cast<double>(i));
  WorkHandle third = comm().all_gather_async(gathered.buffer(), c.buffer());
  third->synchronize();  // waiting out of order is allowed; completion is in issue order
  EXPECT_TRUE(first->is_completed());
  EXPECT_TRUE(second->is_completed());
  EXPECT_TRUE(first->wait_for(std::chrono::milliseconds(0)));
  second->wait();
  EXPECT_GT(local, 0.0);
  for (int64_t i = 0; i < count; i += 4099) {
    ASSERT_EQ(a.get(i), reduce_expected(ScalarType::Float, ReduceOp::kSum, n, i));
    ASSERT_EQ(b.get(i), reduce_expected(ScalarType::Float, ReduceOp::kMax, n, i + 5)) << i;
  }
  for (int r = 0; r < n; ++r) ASSERT_EQ(gathered.get(r * c.numel() + 7), r * 1000.0 + 7);
}

TEST_P(CommContractTest, AsyncBarrierCompletes) {
  WorkHandle work = comm().barrier_async();
  EXPECT_TRUE(work->wait_for(std::chrono::seconds(60)));
}

TEST_P(CommContractTest, SplitSubCommunicatorsReduceOnlyTheirMembers) {
  const int n = comm().size(), me = comm().rank();
  auto sub = comm().split(me % 2, -me);  // key reverses the order inside each group
  int members = 0;
  for (int r = me % 2; r < n; r += 2) ++members;
  ASSERT_EQ(sub->size(), members);
  // Ranks of the same color ordered by key -me: the highest world rank comes first.
  int expected_rank = 0;
  for (int r = me % 2; r < n; r += 2)
    if (r > me) ++expected_rank;
  EXPECT_EQ(sub->rank(), expected_rank);
  TypedBuffer mine(backend(), ScalarType::Long, 1);
  mine.set(0, me + 1);
  int64_t total = 0;
  for (int r = me % 2; r < n; r += 2) total += r + 1;
  sub->all_reduce(mine.buffer(), ReduceOp::kSum);
  EXPECT_EQ(mine.get(0), total);
  EXPECT_THAT(sub->name(), ::testing::MatchesRegex(".*/split[0-9]+\\(color=[01]\\)"));
}

TEST_P(CommContractTest, AbandonFailsLaterCollectivesWithoutTouchingTheirBuffers) {
  auto child = comm().split(0, comm().rank());
  TypedBuffer value(backend(), ScalarType::Float, 1);
  value.set(0, 1);
  child->all_reduce(value.buffer(), ReduceOp::kSum);  // works before
  EXPECT_EQ(value.get(0), static_cast<float>(comm().size()));
  child->abandon();
  WorkHandle work = child->all_reduce_async(value.buffer(), ReduceOp::kSum);
  EXPECT_THAT([&] { work->wait(); },
              ::testing::ThrowsMessage<RuntimeFailure>(::testing::HasSubstr("abandoned")));
  EXPECT_THAT([&] { child->barrier(); },
              ::testing::ThrowsMessage<RuntimeFailure>(::testing::HasSubstr("abandoned")));
  EXPECT_EQ(value.get(0), static_cast<float>(comm().size()));  // untouched
}

TEST_P(CommContractTest, BadCallsAreUserErrorsNamingTheCollective) {
  const int n = comm().size();
  TypedBuffer small(backend(), ScalarType::Float, 3), big(backend(), ScalarType::Float, 3 * n + 1);
  EXPECT_THAT([&] { comm().all_gather(big.buffer(), small.buffer()); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("all_gather")));
  EXPECT_THAT([&] { comm().reduce_scatter(small.buffer(), big.buffer(), ReduceOp::kSum); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("reduce_scatter")));
  TypedBuffer ints(backend(), ScalarType::Int, 4);
  EXPECT_THAT([&] { comm().all_reduce(ints.buffer(), ReduceOp::kAvg); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("avg")));
  // The backend's buffers, labelled with the other device.
  const bool host = backend().device() == DeviceType::kCpu;
  CommBuffer elsewhere = small.buffer();
  elsewhere.device = host ? DeviceType::kCuda : DeviceType::kCpu;
  EXPECT_THAT([&] { comm().all_reduce(elsewhere, ReduceOp::kSum); },
              ::testing::ThrowsMessage<UserError>(
                  ::testing::HasSubstr(host ? "CPU buffers" : "CUDA buffers")));
  EXPECT_THAT([&] { comm().broadcast(small.buffer(), n); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("root")));
  // None of these reached the backend: the communicator still works.
  TypedBuffer one(backend(), ScalarType::Float, 1);
  one.set(0, 1);
  comm().all_reduce(one.buffer(), ReduceOp::kSum);
  EXPECT_EQ(one.get(0), static_cast<float>(n));
}

INSTANTIATE_TEST_SUITE_P(Mpi, CommContractTest, ::testing::Values(&mpi_test_backend()),
                         backend_test_name);

// ---------------------------------------------------------------- MpiCommunicator only

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

// ---------------------------------------------------------------- MPI work, errors

TEST(MpiWork, WaitBlocksTheHostUntilTheCollectiveIsComplete) {
  // The host is MPI's compute stream: once wait() returns, the CPU buffer holds the result.
  const int n = world().size(), me = world().rank();
  std::vector<float> a(1 << 22);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(value(ScalarType::Float, me, i));
  WorkHandle work = world().all_reduce_async(comm_buffer(a.data(), static_cast<int64_t>(a.size())),
                                             ReduceOp::kSum);
  work->wait();
  EXPECT_TRUE(work->is_completed());
  for (size_t i = 0; i < a.size(); i += 4099)
    ASSERT_EQ(a[i], reduce_expected(ScalarType::Float, ReduceOp::kSum, n, i)) << i;
}

TEST(MpiWork, TheComputeStreamIsAcceptedAndIgnored) {
  int not_a_stream = 0;
  world().set_compute_stream(ComputeStream{&not_a_stream});
  float one = 1;
  world().all_reduce(comm_buffer(&one, 1), ReduceOp::kSum);
  world().set_compute_stream(ComputeStream{});
  EXPECT_EQ(one, static_cast<float>(world().size()));
}

TEST(MpiErrors, AFailedCollectiveNamesTheCallAndTheWorldRankAndHost) {
  const int me = world().rank();
  if (world().size() < 2) GTEST_SKIP() << "a failing collective needs two ranks";
  // Pairs of ranks, the higher world rank first: a sub-communicator rank differs from the world
  // rank the message must name.
  auto pair = world().split(me / 2, -me);
  if (pair->size() < 2) return;  // the odd rank out
  // The two ranks disagree on the count: the root sends two elements, the other expects one, and
  // MPI reports the truncation on the receiving rank.
  std::vector<int32_t> data(2, 7);
  if (pair->rank() == 0) {
    pair->broadcast(comm_buffer(data.data(), 2), 0);
    return;
  }
  EXPECT_THAT([&] { pair->broadcast(comm_buffer(data.data(), 1), 0); },
              ::testing::ThrowsMessage<RuntimeFailure>(::testing::AllOf(
                  ::testing::HasSubstr("MPI call MPI_Bcast("),
                  ::testing::HasSubstr(fmt::format("(rank {} on host {})", me, host_name())),
                  ::testing::HasSubstr("parallel/mpi_communicator.cpp:"))));
}

TEST(MpiErrors, ACheckWithoutACommunicatorAsksMpiForTheRank) {
  // MPI's argument check fails this locally (a negative count), before any communication.
  EXPECT_THAT(
      [] { PTRAIN_MPI_CHECK(MPI_Bcast(nullptr, -1, MPI_INT, 0, MPI_COMM_WORLD)); },
      ::testing::ThrowsMessage<RuntimeFailure>(::testing::AllOf(
          ::testing::HasSubstr(
              "MPI call MPI_Bcast(nullptr, -1, MPI_INT, 0, MPI_COMM_WORLD) failed"),
          ::testing::HasSubstr(fmt::format("(rank {} on host {})", world().rank(), host_name())),
          ::testing::HasSubstr("communicator_test.cpp:"))));
}

}  // namespace
}  // namespace ptrain::test
