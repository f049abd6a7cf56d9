// JobState: the coordinator's rules, on a real store with a hand-driven clock.
#include "cluster/job_state.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_support.h"

namespace ptrain {
namespace {

struct Job {
  explicit Job(const std::string& dir) : store(dir + "/coordinator.db") { reopen(); }
  void reopen() {
    JobStateOptions options;
    options.heartbeat_timeout_s = 30;
    options.clock = [this] { return clock; };
    state = std::make_unique<JobState>(store, options);
  }
  double clock = 1000;
  CoordinatorStore store;
  std::unique_ptr<JobState> state;
};

v1::RegisterRankRequest registration(int rank, int world, const std::string& launch,
                                     int64_t first_step = 0) {
  v1::RegisterRankRequest r;
  r.set_job_id("job");
  r.set_launch_id(launch);
  r.set_rank(rank);
  r.set_world(world);
  r.set_host("host" + std::to_string(rank));
  r.set_pid(100 + rank);
  r.set_config_hash("0123456789abcdef");
  r.set_first_step(first_step);
  r.set_total_steps(rank == 0 ? 100 : 0);
  return r;
}

int register_all(JobState& job, int world, const std::string& launch, int64_t first_step = 0) {
  int attempt = 0;
  for (int r = 0; r < world; ++r) {
    v1::RegisterRankResponse response;
    EXPECT_TRUE(job.register_rank(registration(r, world, launch, first_step), &response).ok());
    attempt = response.attempt();
  }
  return attempt;
}

v1::HeartbeatRequest beat(int attempt, int rank, int64_t step, int64_t last_command = 0) {
  v1::HeartbeatRequest h;
  h.set_job_id("job");
  h.set_attempt(attempt);
  h.set_rank(rank);
  h.set_step(step);
  h.set_rss_bytes(1 << 20);
  h.set_last_command_id(last_command);
  if (rank == 0) {
    v1::Progress& p = *h.add_progress();
    p.set_step(step);
    p.set_loss(10.0 / static_cast<double>(step + 1));
    p.set_learning_rate(1e-4);
    p.set_step_seconds(2);
  }
  return h;
}

v1::ReportCheckpointRequest commit(int attempt, int64_t step, int64_t handled_command = 0) {
  v1::ReportCheckpointRequest c;
  c.set_job_id("job");
  c.set_attempt(attempt);
  c.set_rank(0);
  c.set_kind(v1::ReportCheckpointRequest::COMMITTED);
  c.set_step(step);
  c.set_dir("/out/checkpoints/step-" + std::to_string(step));
  c.set_bytes(4096);
  c.set_files(3);
  c.set_handled_command(handled_command);
  return c;
}

TEST(JobState, LaunchesOpenAttemptsAndStatesFollowTheJob) {
  Job job(testing::fresh_dir());
  EXPECT_EQ(job.state->status().state(), v1::STARTING);
  const int attempt = register_all(*job.state, 3, "launch-a");
  EXPECT_EQ(attempt, 1);
  v1::HeartbeatResponse response;
  EXPECT_EQ(job.state->status().state(), v1::STARTING);  // no step yet
  EXPECT_EQ(job.state->status().registered_ranks(), 3);
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, 5), &response).ok());
  v1::JobStatus status = job.state->status();
  EXPECT_EQ(status.state(), v1::RUNNING);
  EXPECT_EQ(status.step(), 5);
  EXPECT_EQ(status.total_steps(), 100);
  EXPECT_EQ(status.world(), 3);
  ASSERT_EQ(status.ranks_size(), 3);
  EXPECT_EQ(status.ranks(2).host(), "host2");

  // A rank's file written: checkpointing until the commit.
  v1::ReportCheckpointRequest written = commit(attempt, 6);
  written.set_kind(v1::ReportCheckpointRequest::WRITTEN);
  written.set_rank(1);
  ASSERT_TRUE(job.state->report_checkpoint(written).ok());
  EXPECT_EQ(job.state->status().state(), v1::CHECKPOINTING);
  ASSERT_TRUE(job.state->report_checkpoint(commit(attempt, 6)).ok());
  status = job.state->status();
  EXPECT_EQ(status.state(), v1::RUNNING);
  EXPECT_EQ(status.last_checkpoint().step(), 6);
  EXPECT_EQ(status.last_checkpoint().world(), 3);

  // The same launch registering again (a reconnect) stays in attempt 1; a new launch opens 2 and
  // ends 1 as superseded.
  v1::RegisterRankResponse again;
  ASSERT_TRUE(job.state->register_rank(registration(1, 3, "launch-a"), &again).ok());
  EXPECT_EQ(again.attempt(), 1);
  EXPECT_EQ(register_all(*job.state, 2, "launch-b", 6), 2);
  status = job.state->status();
  ASSERT_EQ(status.attempts_size(), 2);
  EXPECT_EQ(status.attempts(0).end_reason(), "superseded");
  EXPECT_EQ(status.attempts(1).first_step(), 6);
  EXPECT_EQ(status.world(), 2);
  // The old launch and its attempt are refused; an unknown attempt must register again.
  v1::RegisterRankResponse refused;
  EXPECT_EQ(job.state->register_rank(registration(0, 3, "launch-a"), &refused).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(job.state->heartbeat(beat(1, 0, 7), &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(job.state->heartbeat(beat(3, 0, 7), &response).error_code(),
            grpc::StatusCode::NOT_FOUND);

  v1::ReportEventRequest end;
  end.set_job_id("job");
  end.set_attempt(2);
  end.set_kind(v1::ReportEventRequest::ATTEMPT_END);
  end.set_step(100);
  end.set_reason("finished");
  ASSERT_TRUE(job.state->report_event(end).ok());
  EXPECT_EQ(job.state->status().state(), v1::FINISHED);
  end.set_reason("failed");
  // A failure after the end changes nothing; a failed attempt is FAILED.
  ASSERT_TRUE(job.state->report_event(end).ok());
  EXPECT_EQ(job.state->status().state(), v1::FINISHED);
  end.set_attempt(register_all(*job.state, 2, "launch-c", 6));
  ASSERT_TRUE(job.state->report_event(end).ok());
  EXPECT_EQ(job.state->status().state(), v1::FAILED);
}

TEST(JobState, RefusesRequestsOutsideTheJob) {
  Job job(testing::fresh_dir());
  v1::RegisterRankResponse response;
  EXPECT_EQ(job.state->register_rank(registration(3, 3, "l"), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(job.state->register_rank(registration(0, 0, "l"), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(job.state->register_rank(registration(0, 2, ""), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  const int attempt = register_all(*job.state, 2, "l");
  v1::HeartbeatResponse beat_response;
  EXPECT_EQ(job.state->heartbeat(beat(attempt, 2, 1), &beat_response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(job.state->heartbeat(beat(attempt, -1, 1), &beat_response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::RegisterRankRequest other = registration(0, 2, "l");
  other.set_job_id("another-job");
  EXPECT_EQ(job.state->register_rank(other, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  // Nothing of that reached the status.
  const v1::JobStatus status = job.state->status();
  EXPECT_EQ(status.job_id(), "job");
  EXPECT_EQ(status.attempts_size(), 1);
  EXPECT_EQ(status.world(), 2);
}

TEST(JobState, CommandsAreAnsweredUntilCarriedOut) {
  Job job(testing::fresh_dir());
  const int attempt = register_all(*job.state, 2, "l");
  const v1::Command checkpoint = job.state->request_command(v1::Command::CHECKPOINT, "now");
  v1::HeartbeatResponse response;
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 1, 1), &response).ok());
  ASSERT_EQ(response.commands_size(), 1);
  EXPECT_EQ(response.commands(0).id(), checkpoint.id());
  EXPECT_EQ(response.commands(0).kind(), v1::Command::CHECKPOINT);
  // A rank that has handled it is not told again; one that has not still is.
  response.Clear();
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 1, 2, checkpoint.id()), &response).ok());
  EXPECT_EQ(response.commands_size(), 0);
  response.Clear();
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, 2), &response).ok());
  EXPECT_EQ(response.commands_size(), 1);
  // A commit that does not name it (a save from before it, reported late) leaves it pending; the
  // one that does carries it out. A second request meanwhile is the same command.
  ASSERT_TRUE(job.state->report_checkpoint(commit(attempt, 3, checkpoint.id() - 1)).ok());
  EXPECT_EQ(job.state->status().pending_commands_size(), 1);
  EXPECT_EQ(job.state->request_command(v1::Command::CHECKPOINT, "again").id(), checkpoint.id());
  ASSERT_TRUE(job.state->report_checkpoint(commit(attempt, 4, checkpoint.id())).ok());
  response.Clear();
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, 3), &response).ok());
  EXPECT_EQ(response.commands_size(), 0);
  EXPECT_EQ(job.state->status().pending_commands_size(), 0);

  // A stop stays pending across a coordinator restart, until the attempt ends.
  const v1::Command stop = job.state->request_command(v1::Command::STOP, "maintenance");
  EXPECT_GT(stop.id(), checkpoint.id());
  ASSERT_TRUE(job.state->report_checkpoint(commit(attempt, 5, stop.id())).ok());  // not a stop
  job.reopen();
  response.Clear();
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 1, 4), &response).ok());
  ASSERT_EQ(response.commands_size(), 1);
  EXPECT_EQ(response.commands(0).kind(), v1::Command::STOP);
  v1::ReportEventRequest end;
  end.set_job_id("job");
  end.set_attempt(attempt);
  end.set_kind(v1::ReportEventRequest::ATTEMPT_END);
  end.set_step(4);
  end.set_reason("stopped");
  ASSERT_TRUE(job.state->report_event(end).ok());
  EXPECT_EQ(job.state->status().pending_commands_size(), 0);
  EXPECT_EQ(job.state->status().state(), v1::FINISHED);
}

TEST(JobState, SilentRanksAreLostAndComeBack) {
  Job job(testing::fresh_dir());
  const int attempt = register_all(*job.state, 3, "l");
  v1::HeartbeatResponse response;
  job.clock += 20;
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, 1), &response).ok());
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 2, 1), &response).ok());
  job.clock += 20;  // rank 1: 40 s silent, the others 20 s
  job.state->flush();
  v1::JobStatus status = job.state->status();
  EXPECT_EQ(status.lost_ranks(), 1);
  EXPECT_EQ(status.heartbeat_timeout_s(), 30);
  EXPECT_TRUE(status.ranks(1).lost());
  EXPECT_FALSE(status.ranks(0).lost());
  EXPECT_DOUBLE_EQ(status.ranks(1).heartbeat_age_s(), 40);
  // max_ranks shows the lost rank first.
  status = job.state->status(2);
  ASSERT_EQ(status.ranks_size(), 2);
  EXPECT_EQ(status.ranks(0).rank(), 1);
  EXPECT_EQ(status.ranks(1).rank(), 0);
  bool lost_event = false;
  for (const v1::Event& e : job.state->events(0, 100))
    lost_event |= e.kind() == "rank_lost" && e.rank() == 1;
  EXPECT_TRUE(lost_event);
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 1, 1), &response).ok());
  EXPECT_EQ(job.state->status().lost_ranks(), 0);
  job.state->flush();  // the ranks heard from again are said here, one event for many
  const std::vector<v1::Event> events = job.state->events(0, 100);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind(), "rank_back");
  EXPECT_EQ(events.back().rank(), 1);
}

TEST(JobState, ARetriedReportIsTakenOnce) {
  Job job(testing::fresh_dir());
  const int attempt = register_all(*job.state, 2, "l");
  v1::ReportEventRequest eval;
  eval.set_job_id("job");
  eval.set_attempt(attempt);
  eval.set_rank(0);
  eval.set_kind(v1::ReportEventRequest::EVAL);
  eval.set_step(3);
  eval.set_eval_loss(2.5);
  eval.set_sequence(7);
  ASSERT_TRUE(job.state->report_event(eval).ok());
  eval.set_eval_loss(9);  // the same report again: ignored
  ASSERT_TRUE(job.state->report_event(eval).ok());
  v1::ReportCheckpointRequest committed = commit(attempt, 4);
  committed.set_sequence(7);  // not newer than the last from rank 0: a repeat
  ASSERT_TRUE(job.state->report_checkpoint(committed).ok());
  committed.set_sequence(8);
  ASSERT_TRUE(job.state->report_checkpoint(committed).ok());
  ASSERT_TRUE(job.state->report_checkpoint(committed).ok());
  int evals = 0, commits = 0;
  for (const v1::Event& e : job.state->events(0, 100)) {
    evals += e.kind() == "eval";
    commits += e.kind() == "checkpoint_committed";
  }
  EXPECT_EQ(evals, 1);
  EXPECT_EQ(commits, 1);
  EXPECT_DOUBLE_EQ(job.state->status().eval_loss(), 2.5);
}

TEST(JobState, RestartKeepsTheJob) {
  const std::string dir = testing::fresh_dir();
  int attempt = 0;
  {
    Job job(dir);
    attempt = register_all(*job.state, 2, "l");
    v1::HeartbeatResponse response;
    for (int step = 1; step <= 5; ++step) {
      job.clock += 2;
      ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, step), &response).ok());
      ASSERT_TRUE(job.state->heartbeat(beat(attempt, 1, step), &response).ok());
    }
    ASSERT_TRUE(job.state->report_checkpoint(commit(attempt, 4)).ok());
    v1::ReportEventRequest eval;
    eval.set_job_id("job");
    eval.set_attempt(attempt);
    eval.set_kind(v1::ReportEventRequest::EVAL);
    eval.set_step(5);
    eval.set_eval_loss(1.5);
    ASSERT_TRUE(job.state->report_event(eval).ok());
    job.state->flush();
    const v1::JobStatus status = job.state->status();
    // ETA: 95 steps left at 2 s a step.
    EXPECT_NEAR(status.eta_s(), 190, 1e-6);
  }
  Job job(dir);  // a new coordinator on the same state
  const v1::JobStatus status = job.state->status();
  EXPECT_EQ(status.job_id(), "job");
  EXPECT_EQ(status.step(), 5);
  EXPECT_DOUBLE_EQ(status.loss(), 10.0 / 6);
  EXPECT_DOUBLE_EQ(status.eval_loss(), 1.5);
  EXPECT_EQ(status.last_checkpoint().step(), 4);
  EXPECT_EQ(status.attempts_size(), 1);
  ASSERT_EQ(status.ranks_size(), 2);
  EXPECT_EQ(status.ranks(1).host(), "host1");
  EXPECT_EQ(status.ranks(1).heartbeats(), 5);
  EXPECT_EQ(status.state(), v1::RUNNING);
  const std::vector<v1::MetricPoint> points = job.state->metrics(0);
  ASSERT_EQ(points.size(), 5u);
  EXPECT_DOUBLE_EQ(points.back().loss(), 10.0 / 6);
  EXPECT_DOUBLE_EQ(points.back().eval_loss(), 1.5);
  EXPECT_TRUE(std::isnan(points.front().eval_loss()));
  // The running attempt goes on: its ranks heartbeat without registering again.
  v1::HeartbeatResponse response;
  EXPECT_TRUE(job.state->heartbeat(beat(attempt, 1, 6), &response).ok());
}

TEST(JobState, ResumeFromAnEarlierStepIsTheJobsProgress) {
  Job job(testing::fresh_dir());
  int attempt = register_all(*job.state, 2, "first");
  v1::HeartbeatResponse response;
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, 80), &response).ok());
  // The second launch resumes from the checkpoint of step 50.
  attempt = register_all(*job.state, 2, "second", 50);
  EXPECT_EQ(job.state->status().step(), 50);
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, 51), &response).ok());
  const v1::JobStatus status = job.state->status();
  EXPECT_EQ(status.step(), 51);
  EXPECT_DOUBLE_EQ(status.loss(), 10.0 / 52);
  EXPECT_EQ(status.attempts(1).last_step(), 51);
  EXPECT_NEAR(status.eta_s(), 49 * 2.0, 1e-9);
}

TEST(JobState, StepsAndWorldsOutOfBoundsAreRefused) {
  Job job(testing::fresh_dir());
  v1::RegisterRankResponse registered;
  EXPECT_EQ(job.state->register_rank(registration(0, 1 << 17, "l"), &registered).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  const int attempt = register_all(*job.state, 2, "l");
  v1::HeartbeatResponse response;
  EXPECT_EQ(job.state->heartbeat(beat(attempt, 1, -5), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(job.state->heartbeat(beat(attempt, 0, int64_t{1} << 62), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::ReportCheckpointRequest late = commit(attempt, 3);
  late.set_rank(-12345);
  EXPECT_EQ(job.state->report_checkpoint(late).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(job.state->status().step(), 0);
  EXPECT_EQ(job.state->status().last_checkpoint().step(), 0);
}

}  // namespace
}  // namespace ptrain
