// 2,000 simulated ranks (cluster/rank_simulator.h) heartbeat at 1 Hz for a minute against a
// coordinator: no update is lost and memory stays flat.
//
// "No lost update": every heartbeat the coordinator answered OK shows in its status, per rank:
// the heartbeat count equals the simulator's acknowledged count and the step is the newest step
// sent; the same holds in the state it wrote at shutdown (a second coordinator over the same file).
// The reference is the simulator's own tally of what it sent and what was acknowledged, never the
// coordinator's earlier answers. No assertion is on time or latency: the schedule only decides how
// many heartbeats are sent.
//
// "Memory flat": the heap in use (tcmalloc's count of allocated bytes, which every ptrain binary
// links) after the first 10 s and at the end. Not RSS: tcmalloc keeps freed memory
// (core/tcmalloc_settings.cpp), so RSS is a high-water mark that one stall of a busy machine
// raises for good (measured: +20 MiB in one step at a load average of 10, flat after). The server
// runs in this process to be read that way; the simulator's share is flat too (its latency
// samples are handed over at every reading). The ranks share one connection: one each would need
// 4,000 descriptors in this process, more than a default limit of 1,024.
#include <gperftools/malloc_extension.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/coordinator_server.h"
#include "cluster/rank_simulator.h"
#include "cluster/rpc_channel.h"
#include "ptrain/v1/coordinator.grpc.pb.h"
#include "test_support.h"

namespace ptrain {
namespace {

constexpr int kRanks = 2000;
constexpr int kSeconds = 60;
// The first memory reading: every rank has registered and sent several heartbeats, so the rank
// table, gRPC's buffers and SQLite's page cache are at their working size.
constexpr int kSettledSeconds = 10;
constexpr int kReadEverySeconds = 5;
// The last reading comes after the simulator stopped, with no call in flight. What the heap may
// still gain by then: SQLite's page cache as the database grows (at most 2 MiB, the default
// cache_size). Measured: 1.1 MiB in use, +-0.1 MiB from 10 s to 60 s. A leak of 40 bytes per
// heartbeat adds 100,000 x 40 B = 3.8 MiB over the 50 s after the first reading: this bound (one
// of ~95 B, a string kept per heartbeat, failed it by 9 MiB).
constexpr int64_t kMaxHeapGrowthBytes = int64_t{4} << 20;

std::shared_ptr<spdlog::logger> quiet() {
  return std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
}

int64_t heap_in_use() {
  size_t bytes = 0;
  EXPECT_TRUE(
      MallocExtension::instance()->GetNumericProperty("generic.current_allocated_bytes", &bytes))
      << "the test binary does not run on tcmalloc (ptrain_executable links it)";
  return static_cast<int64_t>(bytes);
}

v1::JobStatus every_rank(const std::string& address) {
  RpcClientOptions rpc;
  rpc.address = address;
  auto stub = v1::Coordinator::NewStub(make_rpc_channel(rpc));
  v1::GetJobStatusRequest request;
  request.set_max_ranks(0);
  v1::JobStatus status;
  const grpc::Status result = stub->GetJobStatus(make_rpc_context(rpc).get(), request, &status);
  EXPECT_TRUE(result.ok()) << describe_status(result);
  return status;
}

// Ranks whose coordinator view differs from the simulator's tally: "" when none, else the count
// and the first few.
std::string lost_updates(const v1::JobStatus& status, const std::vector<RankTally>& tallies) {
  if (status.ranks_size() != static_cast<int>(tallies.size()))
    return "the status shows " + std::to_string(status.ranks_size()) + " ranks, not " +
           std::to_string(tallies.size());
  int wrong = 0;
  std::string first;
  for (const v1::RankHealth& health : status.ranks()) {
    const RankTally& tally = tallies.at(static_cast<size_t>(health.rank()));
    if (health.heartbeats() == tally.acknowledged && health.step() == tally.last_sent_step)
      continue;
    if (++wrong <= 5)
      first += " rank " + std::to_string(health.rank()) + ": " +
               std::to_string(health.heartbeats()) + " heartbeats at step " +
               std::to_string(health.step()) + ", acknowledged " +
               std::to_string(tally.acknowledged) + " up to step " +
               std::to_string(tally.last_sent_step) + ";";
  }
  return wrong == 0 ? "" : std::to_string(wrong) + " ranks differ:" + first;
}

TEST(HeartbeatLoad, TwoThousandRanksForAMinuteLoseNothingAndKeepMemoryFlat) {
  CoordinatorServerOptions server_options;
  server_options.state_path = testing::fresh_dir().string() + "/coordinator.db";
  auto server = std::make_unique<CoordinatorServer>(server_options, quiet());

  RankSimulatorOptions options;
  options.rpc.address = server->address();
  options.ranks = kRanks;
  options.interval_s = 1;
  options.connections = 1;
  RankSimulator simulator(options);
  ASSERT_EQ(simulator.start(), kRanks);

  int64_t failed = 0;
  std::map<std::string, int64_t> failures;
  auto collect = [&] {
    const SimulatorWindow window = simulator.take_window();
    failed += window.ranks.failed;
    for (const auto& [code, count] : window.ranks.failures) failures[code] += count;
  };
  std::vector<int64_t> heap;  // every kReadEverySeconds from kSettledSeconds on, and at the end
  for (int t = kSettledSeconds; t <= kSeconds; t += kReadEverySeconds) {
    std::this_thread::sleep_for(
        std::chrono::seconds(t == kSettledSeconds ? kSettledSeconds : kReadEverySeconds));
    collect();
    heap.push_back(heap_in_use());
  }
  simulator.stop();
  collect();
  heap.push_back(heap_in_use());  // nothing in flight now
  const std::vector<RankTally> tallies = simulator.tallies();

  EXPECT_EQ(failed, 0);
  for (const auto& [code, count] : failures) ADD_FAILURE() << count << " x " << code;
  int64_t acknowledged = 0;
  for (const RankTally& tally : tallies) {
    acknowledged += tally.acknowledged;
    EXPECT_EQ(tally.acknowledged, tally.sent);
  }
  // The load really ran: on the schedule each rank sends ~kSeconds heartbeats; a quarter of that
  // is far below what even a slow machine delivers, and far above a stalled simulator.
  EXPECT_GE(acknowledged, int64_t{kRanks} * kSeconds / 4);

  const v1::JobStatus live = every_rank(server->address());
  EXPECT_EQ(lost_updates(live, tallies), "");
  EXPECT_EQ(live.lost_ranks(), 0);

  std::string curve;
  for (int64_t bytes : heap) curve += std::to_string(bytes >> 10) + " KiB ";
  EXPECT_LT(heap.back() - heap.front(), kMaxHeapGrowthBytes) << "heap in use: " << curve;

  // What it wrote at shutdown, read back by a new coordinator over the same state.
  server.reset();
  CoordinatorServer restarted(server_options, quiet());
  EXPECT_EQ(lost_updates(every_rank(restarted.address()), tallies), "");
}

}  // namespace
}  // namespace ptrain
