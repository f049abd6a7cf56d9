#include "cluster/rank_simulator.h"

#include <grpcpp/generic/generic_stub.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "ptrain/v1/coordinator.grpc.pb.h"

namespace ptrain {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kHealthCheck = "/grpc.health.v1.Health/Check";
constexpr int kConnectBatch = 256;
constexpr double kConnectTimeoutS = 10;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

double milliseconds_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// A channel with a TCP connection of its own: gRPC shares one connection among channels with the
// same arguments, and real ranks each have their own.
std::shared_ptr<grpc::Channel> own_connection(const RpcClientOptions& rpc) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(rpc.address, grpc::InsecureChannelCredentials(), args);
}

// Connects every channel, at most kConnectBatch at once (a burst of thousands of connects
// overflows the listen backlog and turns into SYN retries); RuntimeFailure when one cannot.
template <class Connection>
void connect_all(const std::vector<Connection>& connections, const std::string& address) {
  for (size_t first = 0; first < connections.size(); first += kConnectBatch) {
    const size_t last = std::min(connections.size(), first + kConnectBatch);
    for (size_t i = first; i < last; ++i) connections[i].channel->GetState(/*try_to_connect=*/true);
    const auto deadline = std::chrono::system_clock::now() +
                          std::chrono::milliseconds(static_cast<int>(kConnectTimeoutS * 1000));
    for (size_t i = first; i < last; ++i)
      if (!connections[i].channel->WaitForConnected(deadline))
        throw RuntimeFailure(fmt::format(
            "the rank simulator could not connect to the coordinator at {} within {} s ({} of {} "
            "connections open)",
            address, kConnectTimeoutS, i, connections.size()));
  }
}

std::string code_name(grpc::StatusCode code) {
  return describe_status(grpc::Status(code, ""));
}

v1::Progress progress_at(int64_t step, double interval_s) {
  v1::Progress progress;
  progress.set_step(step);
  progress.set_total_steps(1000000);
  progress.set_loss(2.5 / (1.0 + 0.01 * static_cast<double>(step)));
  progress.set_learning_rate(1e-4);
  progress.set_grad_norm(1.0);
  progress.set_tokens_per_second(1e4);
  progress.set_mfu(0.4);
  progress.set_step_seconds(interval_s);
  progress.set_batch_tokens(4096);
  return progress;
}

}  // namespace

double CallStats::quantile_ms(double q) const {
  if (latencies_ms.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> sorted = latencies_ms;
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  const size_t index = std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1);
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<ptrdiff_t>(index), sorted.end());
  return sorted[index];
}

// ------------------------------------------------------------------ calls and their state

// One outstanding call; its address is the completion-queue tag. The responses of every kind sit
// side by side: a call is a few hundred bytes and only the outstanding ones exist.
struct RankSimulator::Call {
  enum class Kind { kRegister, kRankCall, kPoll };
  Call(Kind kind, int index, const RpcClientOptions& rpc)
      : kind(kind), index(index), context(make_rpc_context(rpc)) {}

  Kind kind;
  int index;         // the rank, or the poller
  int64_t step = 0;  // a heartbeat's
  Clock::time_point sent;
  std::unique_ptr<grpc::ClientContext> context;
  grpc::Status status;
  v1::RegisterRankResponse registered;
  v1::HeartbeatResponse heartbeat;
  v1::JobStatus job_status;
  grpc::ByteBuffer health;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::RegisterRankResponse>> register_reader;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::HeartbeatResponse>> heartbeat_reader;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::JobStatus>> status_reader;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> health_reader;
};

struct RankSimulator::RankState {
  RankTally tally;
  int64_t newest_command = 0;
  bool in_flight = false;  // one call at a time, as a real rank
  bool due = false;        // the next one came due meanwhile
};

struct RankSimulator::Queue {
  grpc::CompletionQueue cq;
};

// A TCP connection and its stubs (a stub registers its methods with the channel: made once).
struct RankSimulator::Connection {
  explicit Connection(const RpcClientOptions& rpc)
      : channel(own_connection(rpc)),
        coordinator(v1::Coordinator::NewStub(channel)),
        generic(std::make_unique<grpc::GenericStub>(channel)) {}
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Coordinator::Stub> coordinator;
  std::unique_ptr<grpc::GenericStub> generic;
};

// ------------------------------------------------------------------ the simulator

RankSimulator::RankSimulator(RankSimulatorOptions options) : options_(std::move(options)) {
  PTRAIN_CHECK(options_.ranks >= 1, "the rank simulator needs at least one rank");
  PTRAIN_CHECK(options_.interval_s > 0 && options_.poll_interval_s > 0,
               "the rank simulator's intervals must be positive");
  PTRAIN_CHECK(options_.threads >= 1 && options_.max_registering >= 1 && options_.pollers >= 0,
               "the rank simulator needs a thread, a registration at a time and pollers >= 0");
  PTRAIN_CHECK(options_.rpc.tls_ca.empty(), "the rank simulator speaks plaintext only (got {})",
               options_.rpc.tls_ca);
  const int connections =
      options_.connections <= 0 ? options_.ranks : std::min(options_.connections, options_.ranks);
  rank_connections_.reserve(static_cast<size_t>(connections));
  for (int i = 0; i < connections; ++i) rank_connections_.emplace_back(options_.rpc);
  poller_connections_.reserve(static_cast<size_t>(options_.pollers));
  for (int i = 0; i < options_.pollers; ++i) poller_connections_.emplace_back(options_.rpc);
  ranks_.resize(static_cast<size_t>(options_.ranks));
  polling_.assign(static_cast<size_t>(options_.pollers), false);
  poll_late_.assign(static_cast<size_t>(options_.pollers), false);
  for (int i = 0; i < options_.threads; ++i) queues_.push_back(std::make_unique<Queue>());
  for (auto& queue : queues_) queue_threads_.emplace_back([this, q = queue.get()] { drain(*q); });
}

RankSimulator::~RankSimulator() {
  stop();
}

RankSimulator::Queue& RankSimulator::queue_for(int index) {
  return *queues_[static_cast<size_t>(index) % queues_.size()];
}

RankSimulator::Connection& RankSimulator::rank_connection(int rank) {
  return rank_connections_[static_cast<size_t>(rank) % rank_connections_.size()];
}

int RankSimulator::start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    PTRAIN_ASSERT(!started_, "RankSimulator::start() called twice");
    started_ = true;
  }
  connect_all(rank_connections_, options_.rpc.address);
  connect_all(poller_connections_, options_.rpc.address);
  int registered = 0;
  if (options_.call == RankCall::kHeartbeat) {
    const int first = std::min(options_.max_registering, options_.ranks);
    {
      std::lock_guard<std::mutex> lock(mu_);
      next_registration_ = first;
    }
    for (int r = 0; r < first; ++r) register_rank(r);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return registrations_done_ == options_.ranks; });
    for (const RankState& rank : ranks_) registered += rank.tally.registered ? 1 : 0;
  } else {
    std::lock_guard<std::mutex> lock(mu_);
    for (RankState& rank : ranks_) rank.tally.registered = true;
    registered = options_.ranks;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    window_start_ = Clock::now();
  }
  scheduler_ = std::thread([this] { schedule(); });
  return registered;
}

void RankSimulator::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return outstanding_ == 0; });
  }
  for (auto& queue : queues_) queue->cq.Shutdown();
  for (std::thread& thread : queue_threads_) thread.join();
}

SimulatorWindow RankSimulator::take_window() {
  std::lock_guard<std::mutex> lock(mu_);
  SimulatorWindow window;
  const auto now = Clock::now();
  window.seconds = std::chrono::duration<double>(now - window_start_).count();
  window_start_ = now;
  std::swap(window.ranks, rank_stats_);
  std::swap(window.pollers, poller_stats_);
  return window;
}

std::vector<RankTally> RankSimulator::tallies() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RankTally> out;
  out.reserve(ranks_.size());
  for (const RankState& rank : ranks_) out.push_back(rank.tally);
  return out;
}

int RankSimulator::attempt() const {
  std::lock_guard<std::mutex> lock(mu_);
  return attempt_;
}

// ------------------------------------------------------------------ issuing calls

void RankSimulator::register_rank(int rank) {
  v1::RegisterRankRequest request;
  request.set_job_id(options_.job_id);
  request.set_launch_id(options_.launch_id);
  request.set_rank(rank);
  request.set_world(options_.ranks);
  request.set_host(fmt::format("sim-{}", rank / 8));
  request.set_pid(100000 + rank);
  request.set_config_hash("0123456789abcdef");
  request.set_total_steps(1000000);
  auto* call = new Call(Call::Kind::kRegister, rank, options_.rpc);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++outstanding_;
  }
  call->sent = Clock::now();
  call->register_reader = rank_connection(rank).coordinator->PrepareAsyncRegisterRank(
      call->context.get(), request, &queue_for(rank).cq);
  call->register_reader->StartCall();
  call->register_reader->Finish(&call->registered, &call->status, call);
}

void RankSimulator::send_rank_call(int rank) {
  int64_t step = 0, newest_command = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    RankTally& tally = ranks_[static_cast<size_t>(rank)].tally;
    step = ++tally.sent;
    tally.last_sent_step = step;
    newest_command = ranks_[static_cast<size_t>(rank)].newest_command;
    ++outstanding_;
  }
  auto* call = new Call(Call::Kind::kRankCall, rank, options_.rpc);
  call->step = step;
  Connection& connection = rank_connection(rank);
  grpc::CompletionQueue* cq = &queue_for(rank).cq;
  if (options_.call == RankCall::kEmpty) {
    // A valid buffer of no bytes (a default ByteBuffer would send no message at all).
    grpc::Slice nothing;
    call->sent = Clock::now();
    call->health_reader = connection.generic->PrepareUnaryCall(call->context.get(), kHealthCheck,
                                                               grpc::ByteBuffer(&nothing, 1), cq);
    call->health_reader->StartCall();
    call->health_reader->Finish(&call->health, &call->status, call);
    return;
  }
  v1::HeartbeatRequest request;
  request.set_job_id(options_.job_id);
  request.set_attempt(attempt());
  request.set_rank(rank);
  request.set_step(step);
  request.set_rss_bytes((int64_t{2} << 30) + step * 4096);
  request.set_last_command_id(newest_command);
  if (rank == 0) *request.add_progress() = progress_at(step, options_.interval_s);
  call->sent = Clock::now();
  call->heartbeat_reader =
      connection.coordinator->PrepareAsyncHeartbeat(call->context.get(), request, cq);
  call->heartbeat_reader->StartCall();
  call->heartbeat_reader->Finish(&call->heartbeat, &call->status, call);
}

void RankSimulator::poll(int poller) {
  v1::GetJobStatusRequest request;
  request.set_max_ranks(options_.poll_max_ranks);
  auto* call = new Call(Call::Kind::kPoll, poller, options_.rpc);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++outstanding_;
  }
  call->sent = Clock::now();
  call->status_reader =
      poller_connections_[static_cast<size_t>(poller)].coordinator->PrepareAsyncGetJobStatus(
          call->context.get(), request, &queue_for(poller).cq);
  call->status_reader->StartCall();
  call->status_reader->Finish(&call->job_status, &call->status, call);
}

// ------------------------------------------------------------------ the schedule

// Rank r's k-th call is due at start + (k + r / ranks) * interval: one event every
// interval / ranks, round robin over the ranks; the same for the pollers.
void RankSimulator::schedule() {
  const auto start = Clock::now();
  const double rank_gap = options_.interval_s / options_.ranks;
  const double poll_gap = options_.pollers > 0 ? options_.poll_interval_s / options_.pollers : 0;
  int64_t rank_event = 0, poll_event = 0;
  std::vector<int> to_send, to_poll;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const auto now = Clock::now();
    for (; start + seconds(rank_gap * static_cast<double>(rank_event)) <= now; ++rank_event) {
      const int r = static_cast<int>(rank_event % options_.ranks);
      RankState& rank = ranks_[static_cast<size_t>(r)];
      if (!rank.tally.registered) continue;
      if (!rank.in_flight) {
        rank.in_flight = true;
        to_send.push_back(r);
      } else if (!rank.due) {
        rank.due = true;
        ++rank_stats_.late;
      }
    }
    for (;
         options_.pollers > 0 && start + seconds(poll_gap * static_cast<double>(poll_event)) <= now;
         ++poll_event) {
      const int p = static_cast<int>(poll_event % options_.pollers);
      // A dashboard that is still waiting skips a refresh rather than queueing one.
      if (!polling_[static_cast<size_t>(p)]) {
        polling_[static_cast<size_t>(p)] = true;
        to_poll.push_back(p);
      } else if (!poll_late_[static_cast<size_t>(p)]) {
        poll_late_[static_cast<size_t>(p)] = true;
        ++poller_stats_.late;
      }
    }
    lock.unlock();
    for (int r : to_send) send_rank_call(r);
    for (int p : to_poll) poll(p);
    to_send.clear();
    to_poll.clear();
    lock.lock();
    auto next = start + seconds(rank_gap * static_cast<double>(rank_event));
    if (options_.pollers > 0)
      next = std::min(next, start + seconds(poll_gap * static_cast<double>(poll_event)));
    // Calls go out in batches of at least a millisecond: 16k ranks at 1 Hz is one every 61 us.
    next = std::max(next, Clock::now() + std::chrono::milliseconds(1));
    cv_.wait_until(lock, next, [&] { return stopping_; });
  }
}

// ------------------------------------------------------------------ completions

void RankSimulator::drain(Queue& queue) {
  void* tag = nullptr;
  bool ok = false;
  while (queue.cq.Next(&tag, &ok)) finish(*static_cast<Call*>(tag));
}

void RankSimulator::finish(Call& call) {
  const double latency_ms = milliseconds_since(call.sent);
  const bool ok = call.status.ok();
  int follow_up = -1;  // a registration or a due rank call to send next
  Call::Kind kind = call.kind;
  {
    std::lock_guard<std::mutex> lock(mu_);
    switch (call.kind) {
      case Call::Kind::kRegister: {
        RankState& rank = ranks_[static_cast<size_t>(call.index)];
        rank.tally.registered = ok;
        if (ok) attempt_ = std::max(attempt_, call.registered.attempt());
        if (!ok) rank_stats_.failures["RegisterRank " + code_name(call.status.error_code())]++;
        ++registrations_done_;
        if (next_registration_ < options_.ranks && !stopping_) follow_up = next_registration_++;
        break;
      }
      case Call::Kind::kRankCall: {
        RankState& rank = ranks_[static_cast<size_t>(call.index)];
        rank_stats_.latencies_ms.push_back(latency_ms);
        if (ok) {
          ++rank_stats_.ok;
          ++rank.tally.acknowledged;
          rank.tally.last_acknowledged_step = call.step;
          for (const v1::Command& command : call.heartbeat.commands())
            rank.newest_command = std::max(rank.newest_command, command.id());
        } else {
          ++rank_stats_.failed;
          ++rank.tally.failed;
          rank_stats_.failures[code_name(call.status.error_code())]++;
        }
        rank.in_flight = rank.due && !stopping_;
        rank.due = false;
        if (rank.in_flight) follow_up = call.index;
        break;
      }
      case Call::Kind::kPoll:
        poller_stats_.latencies_ms.push_back(latency_ms);
        if (ok) {
          ++poller_stats_.ok;
        } else {
          ++poller_stats_.failed;
          poller_stats_.failures[code_name(call.status.error_code())]++;
        }
        polling_[static_cast<size_t>(call.index)] = false;
        poll_late_[static_cast<size_t>(call.index)] = false;
        break;
    }
  }
  delete &call;
  if (follow_up >= 0) {
    if (kind == Call::Kind::kRegister)
      register_rank(follow_up);
    else
      send_rank_call(follow_up);
  }
  std::lock_guard<std::mutex> lock(mu_);
  --outstanding_;
  // Waiters: start() for the registrations, stop() for the last outstanding call.
  cv_.notify_all();
}

}  // namespace ptrain
