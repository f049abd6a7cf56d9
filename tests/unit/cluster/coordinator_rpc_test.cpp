// The coordinator over real gRPC on loopback: authentication, request bounds, the ranks' client
// (registration, heartbeats, commands, reports queued while the coordinator is down).
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "cluster/coordinator_client.h"
#include "cluster/coordinator_server.h"
#include "cluster/coordinator_service.h"
#include "cluster/job_state.h"
#include "test_support.h"

namespace ptrain {
namespace {

std::shared_ptr<spdlog::logger> quiet() {
  return std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
}

CoordinatorServerOptions server_options(const std::string& dir, const std::string& listen) {
  CoordinatorServerOptions options;
  options.listen = listen;
  options.state_path = dir + "/coordinator.db";
  options.heartbeat_interval_s = 0.05;
  return options;
}

// Polls `condition` until it holds or `seconds` pass; answers whether it held.
template <typename Condition>
bool eventually(Condition condition, double seconds = 20) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

grpc::Status get_status(const RpcClientOptions& rpc, v1::JobStatus* status) {
  auto stub = v1::Coordinator::NewStub(make_rpc_channel(rpc));
  v1::GetJobStatusRequest request;
  return stub->GetJobStatus(make_rpc_context(rpc).get(), request, status);
}

TEST(CoordinatorRpc, TokenIsRequiredOnEveryCall) {
  CoordinatorServerOptions options = server_options(testing::fresh_dir(), "127.0.0.1:0");
  options.auth_token = "s3cret";
  CoordinatorServer server(options, quiet());
  RpcClientOptions rpc;
  rpc.address = server.address();
  v1::JobStatus status;
  EXPECT_EQ(get_status(rpc, &status).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  rpc.auth_token = "s3cre";
  EXPECT_EQ(get_status(rpc, &status).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  rpc.auth_token = "s3cret!";
  EXPECT_EQ(get_status(rpc, &status).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  rpc.auth_token = "s3cret";
  EXPECT_TRUE(get_status(rpc, &status).ok());
  // Commands need it too.
  auto stub = v1::Coordinator::NewStub(make_rpc_channel(rpc));
  v1::RequestStopRequest stop;
  v1::RequestStopResponse stopped;
  rpc.auth_token = "";
  EXPECT_EQ(stub->RequestStop(make_rpc_context(rpc).get(), stop, &stopped).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(server.job().status().pending_commands_size(), 0);
}

TEST(CoordinatorRpc, OversizedAndUnboundedRequestsAreRefused) {
  CoordinatorServer server(server_options(testing::fresh_dir(), "127.0.0.1:0"), quiet());
  RpcClientOptions rpc;
  rpc.address = server.address();
  auto stub = v1::Coordinator::NewStub(make_rpc_channel(rpc));
  v1::RegisterRankRequest request;
  request.set_job_id("job");
  request.set_launch_id("l");
  request.set_world(2);
  request.set_host(std::string(300, 'h'));  // a name over 256 bytes
  v1::RegisterRankResponse response;
  grpc::Status status = stub->RegisterRank(make_rpc_context(rpc).get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("host"), std::string::npos) << status.error_message();
  request.set_host("h");
  request.set_job_id(std::string(2 << 20, 'j'));  // over the message limit
  status = stub->RegisterRank(make_rpc_context(rpc).get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A long message inside a repeated field is found too.
  v1::HeartbeatRequest beat;
  beat.set_job_id("job");
  beat.add_progress();
  EXPECT_EQ(check_request_bounds(beat), "");
  v1::ReportEventRequest event;
  event.set_message(std::string(5000, 'm'));
  EXPECT_NE(check_request_bounds(event), "");
  // Nothing was registered, and the service still answers.
  v1::JobStatus job;
  ASSERT_TRUE(get_status(rpc, &job).ok());
  EXPECT_EQ(job.attempts_size(), 0);
}

CoordinatorClientOptions client_options(const std::string& address, int rank, int world) {
  CoordinatorClientOptions options;
  options.rpc.address = address;
  options.rpc.rpc_timeout_s = 2;
  options.job_id = "job";
  options.launch_id = "launch";
  options.rank = rank;
  options.world = world;
  options.host = "localhost";
  options.pid = 1;
  options.total_steps = 50;
  options.heartbeat_interval_s = 0.05;
  return options;
}

TEST(CoordinatorRpc, ClientsRegisterHeartbeatAndHearCommands) {
  CoordinatorServer server(server_options(testing::fresh_dir(), "127.0.0.1:0"), quiet());
  CoordinatorClient rank0(client_options(server.address(), 0, 2), quiet());
  CoordinatorClient rank1(client_options(server.address(), 1, 2), quiet());
  for (int64_t step = 1; step <= 3; ++step) {
    v1::Progress progress;
    progress.set_step(step);
    progress.set_loss(1.0 / static_cast<double>(step));
    rank0.add_progress(progress);
  }
  rank0.set_rank_state(3, 123, 0);
  rank1.set_rank_state(3, 456, 0);
  ASSERT_TRUE(eventually([&] {
    const v1::JobStatus s = server.job().status();
    return s.step() == 3 && s.ranks_size() == 2 && s.ranks(1).rss_bytes() == 456;
  }));
  EXPECT_EQ(rank0.attempt(), 1);
  EXPECT_EQ(rank1.attempt(), 1);
  EXPECT_EQ(server.job().metrics(0).size(), 3u);

  const int64_t id = server.job().request_command(v1::Command::CHECKPOINT, "test").id();
  ASSERT_TRUE(eventually([&] { return rank1.command_vote().checkpoint; }));
  CoordinatorClient::CommandVote vote = rank1.command_vote();
  EXPECT_FALSE(vote.stop);
  EXPECT_EQ(vote.newest, id);
  rank1.set_handled(vote.newest);
  EXPECT_FALSE(rank1.command_vote().checkpoint);
  EXPECT_EQ(rank1.handled(), id);

  // A commit that does not name the command leaves it pending; the one that does carries it out.
  v1::ReportCheckpointRequest commit;
  commit.set_kind(v1::ReportCheckpointRequest::COMMITTED);
  commit.set_step(2);
  commit.set_dir("/x/step-2");
  commit.set_handled_command(id - 1);
  EXPECT_TRUE(rank0.report_commit(commit, 10));
  EXPECT_EQ(server.job().status().pending_commands_size(), 1);
  commit.set_step(3);
  commit.set_dir("/x/step-3");
  commit.set_handled_command(id);
  EXPECT_TRUE(rank0.report_commit(commit, 10));
  EXPECT_EQ(server.job().status().last_checkpoint().step(), 3);
  EXPECT_EQ(server.job().status().pending_commands_size(), 0);
}

TEST(CoordinatorRpc, ReportsWaitForACoordinatorThatRestarts) {
  const std::string dir = testing::fresh_dir();
  auto server = std::make_unique<CoordinatorServer>(server_options(dir, "127.0.0.1:0"), quiet());
  const std::string address = server->address();
  CoordinatorClient rank0(client_options(address, 0, 1), quiet());
  ASSERT_TRUE(eventually([&] { return rank0.connected(); }));
  server.reset();  // the coordinator goes away
  ASSERT_TRUE(eventually([&] { return !rank0.connected(); }));

  // A commit while it is down does not wait for it, and is delivered once it is back.
  v1::ReportCheckpointRequest commit;
  commit.set_kind(v1::ReportCheckpointRequest::COMMITTED);
  commit.set_step(7);
  commit.set_dir("/x/step-7");
  const auto before = std::chrono::steady_clock::now();
  EXPECT_FALSE(rank0.report_commit(commit, 30));
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(10));
  for (int64_t step = 1; step <= 4; ++step) {
    v1::Progress progress;
    progress.set_step(step);
    rank0.add_progress(progress);
  }
  server = std::make_unique<CoordinatorServer>(server_options(dir, address), quiet());
  ASSERT_TRUE(rank0.flush(30));
  const v1::JobStatus status = server->job().status();
  EXPECT_EQ(status.last_checkpoint().step(), 7);
  EXPECT_EQ(status.step(), 4);
  EXPECT_EQ(status.attempts_size(), 1);  // the same attempt went on
  EXPECT_EQ(server->job().metrics(0).size(), 4u);
}

TEST(CoordinatorRpc, ASecondCoordinatorCannotShareAPort) {
  const std::string dir = testing::fresh_dir();
  std::filesystem::create_directories(dir + "/a");
  std::filesystem::create_directories(dir + "/b");
  CoordinatorServer first(server_options(dir + "/a", "127.0.0.1:0"), quiet());
  EXPECT_THROW(CoordinatorServer(server_options(dir + "/b", first.address()), quiet()), UserError);
}

}  // namespace
}  // namespace ptrain
