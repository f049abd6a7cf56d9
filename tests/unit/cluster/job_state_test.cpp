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

// ---------------------------------------------------------------- the supervisor's reports

v1::ReportLaunchRequest launch_report(const std::string& launch, const std::string& cause,
                                      bool restart, int64_t step = 0) {
  v1::ReportLaunchRequest r;
  r.set_launch_id(launch);
  r.set_cause(cause);
  r.set_message("the command ended with exit code 137");
  r.set_exit_code(137);
  r.set_restart(restart);
  r.set_restart_in_s(5);
  r.set_restarts(1);
  r.set_max_restarts(3);
  r.set_step(step);
  return r;
}

v1::ReportEventRequest attempt_end(int attempt, const std::string& reason, int64_t step) {
  v1::ReportEventRequest end;
  end.set_job_id("job");
  end.set_attempt(attempt);
  end.set_kind(v1::ReportEventRequest::ATTEMPT_END);
  end.set_step(step);
  end.set_reason(reason);
  return end;
}

TEST(JobState, AReportedLaunchEndsItsAttemptAndTheJobRestarts) {
  const std::string dir = testing::fresh_dir();
  {
    Job job(dir);
    const int attempt = register_all(*job.state, 2, "launch-a");
    v1::HeartbeatResponse beat_response;
    ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, 5), &beat_response).ok());
    ASSERT_EQ(job.state->status().state(), v1::RUNNING);
    job.clock = 1050;
    v1::ReportLaunchResponse response;
    ASSERT_TRUE(
        job.state->report_launch(launch_report("launch-a", "rank_lost", true, 6), &response).ok());
    EXPECT_EQ(response.attempt(), 1);
    const v1::JobStatus status = job.state->status();
    EXPECT_EQ(status.state(), v1::RESTARTING);
    ASSERT_EQ(status.attempts_size(), 1);
    const v1::Attempt& a = status.attempts(0);
    EXPECT_DOUBLE_EQ(a.ended_unix_s(), 1050);
    EXPECT_EQ(a.end_reason(), "rank_lost");
    EXPECT_EQ(a.end_message(), "the command ended with exit code 137");
    EXPECT_EQ(a.cause(), "rank_lost");
    EXPECT_EQ(a.cause_message(), "the command ended with exit code 137");
    EXPECT_EQ(a.exit_code(), 137);
    EXPECT_TRUE(a.restart());
    EXPECT_EQ(a.last_step(), 6);
    EXPECT_EQ(status.step(), 6);
    EXPECT_EQ(status.lost_ranks(), 0);  // an ended attempt has no lost ranks
    const std::vector<v1::Event> events = job.state->events(0, 100);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind(), "launch_ended");
    EXPECT_EQ(events.back().severity(), "error");
    EXPECT_EQ(events.back().message(),
              "launch launch-a (attempt 1) ended: rank_lost: the command ended with exit code "
              "137; restarting in 5.0 s (restart 1 of 3)");
  }
  // A new coordinator over the same store keeps the supervisor's word.
  Job job(dir);
  v1::JobStatus status = job.state->status();
  EXPECT_EQ(status.state(), v1::RESTARTING);
  ASSERT_EQ(status.attempts_size(), 1);
  EXPECT_EQ(status.attempts(0).cause(), "rank_lost");
  EXPECT_EQ(status.attempts(0).cause_message(), "the command ended with exit code 137");
  EXPECT_EQ(status.attempts(0).exit_code(), 137);
  EXPECT_TRUE(status.attempts(0).restart());
  // The restarted launch opens attempt 2.
  EXPECT_EQ(register_all(*job.state, 2, "launch-b", 4), 2);
  status = job.state->status();
  EXPECT_EQ(status.state(), v1::STARTING);
  EXPECT_TRUE(status.attempts(0).restart());
  EXPECT_FALSE(status.attempts(1).restart());
}

TEST(JobState, ALaunchGivenUpIsFailedAFinishedOneFinished) {
  Job job(testing::fresh_dir());
  int attempt = register_all(*job.state, 2, "launch-a");
  v1::ReportLaunchResponse response;
  v1::ReportLaunchRequest gave_up = launch_report("launch-a", "exit", false, 3);
  gave_up.set_restarts(3);
  ASSERT_TRUE(job.state->report_launch(gave_up, &response).ok());
  v1::JobStatus status = job.state->status();
  EXPECT_EQ(status.state(), v1::FAILED);
  EXPECT_EQ(status.attempts(0).end_reason(), "exit");
  EXPECT_FALSE(status.attempts(0).restart());
  EXPECT_EQ(job.state->events(0, 100).back().message(),
            "launch launch-a (attempt 1) ended: exit: the command ended with exit code 137; the "
            "supervisor gives up after 3 restarts");

  // The ranks ended their attempt "finished", then the command exited 0.
  attempt = register_all(*job.state, 2, "launch-b");
  EXPECT_EQ(attempt, 2);
  job.clock += 10;
  ASSERT_TRUE(job.state->report_event(attempt_end(attempt, "finished", 100)).ok());
  const double ended_at = job.clock;
  job.clock += 1;
  v1::ReportLaunchRequest finished = launch_report("launch-b", "finished", false, 100);
  finished.set_exit_code(0);
  finished.set_message("the command ended with exit code 0");
  ASSERT_TRUE(job.state->report_launch(finished, &response).ok());
  EXPECT_EQ(response.attempt(), 2);
  status = job.state->status();
  EXPECT_EQ(status.state(), v1::FINISHED);
  const v1::Attempt& a = status.attempts(1);
  EXPECT_EQ(a.end_reason(), "finished");  // the ranks' end stands
  EXPECT_DOUBLE_EQ(a.ended_unix_s(), ended_at);
  EXPECT_EQ(a.cause(), "finished");
  EXPECT_EQ(a.exit_code(), 0);
  EXPECT_FALSE(a.restart());
  EXPECT_EQ(job.state->events(0, 100).back().severity(), "info");
  EXPECT_EQ(job.state->events(0, 100).back().message(),
            "launch launch-b (attempt 2) ended: finished: the command ended with exit code 0");

  // The ranks said "finished" but the command failed after them: the supervisor's word decides.
  attempt = register_all(*job.state, 2, "launch-c");
  ASSERT_TRUE(job.state->report_event(attempt_end(attempt, "finished", 100)).ok());
  ASSERT_EQ(job.state->status().state(), v1::FINISHED);
  ASSERT_TRUE(job.state->report_launch(launch_report("launch-c", "exit", false), &response).ok());
  status = job.state->status();
  EXPECT_EQ(status.attempts(2).end_reason(), "finished");
  EXPECT_EQ(status.state(), v1::FAILED);
}

TEST(JobState, ALaunchWhoseRanksNeverRegisteredIsAnAttemptOfItsOwn) {
  Job job(testing::fresh_dir());
  const int first = register_all(*job.state, 3, "launch-a");
  ASSERT_TRUE(job.state->report_checkpoint(commit(first, 4)).ok());
  v1::ReportLaunchResponse response;
  ASSERT_TRUE(job.state->report_launch(launch_report("launch-a", "exit", true, 5), &response).ok());

  // Launch b crashed before any rank registered.
  job.clock = 1100;
  v1::ReportLaunchRequest b = launch_report("launch-b", "exit", true, 4);
  b.set_started_unix_s(1090);
  b.set_exit_code(1);
  ASSERT_TRUE(job.state->report_launch(b, &response).ok());
  EXPECT_EQ(response.attempt(), 2);
  v1::JobStatus status = job.state->status();
  ASSERT_EQ(status.attempts_size(), 2);
  const v1::Attempt& a = status.attempts(1);
  EXPECT_EQ(a.number(), 2);
  EXPECT_EQ(a.launch_id(), "launch-b");
  EXPECT_EQ(a.world(), 0);
  EXPECT_DOUBLE_EQ(a.started_unix_s(), 1090);
  EXPECT_DOUBLE_EQ(a.ended_unix_s(), 1100);
  EXPECT_EQ(a.end_reason(), "exit");
  EXPECT_EQ(a.first_step(), 4);  // the last committed checkpoint's
  EXPECT_EQ(a.cause(), "exit");
  EXPECT_EQ(a.exit_code(), 1);
  EXPECT_TRUE(a.restart());
  EXPECT_EQ(status.state(), v1::RESTARTING);
  EXPECT_EQ(status.world(), 0);
  EXPECT_EQ(status.ranks_size(), 0);

  // An attempt still running when another launch of the same job is reported ends
  // "superseded"; a report that names no job leaves it alone.
  EXPECT_EQ(register_all(*job.state, 2, "launch-c", 4), 3);
  EXPECT_EQ(
      job.state->report_launch(launch_report("launch-d", "exit", false), &response).error_code(),
      grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(job.state->status().attempts_size(), 3);
  v1::ReportLaunchRequest d = launch_report("launch-d", "exit", false);
  d.set_job_id("job");
  ASSERT_TRUE(job.state->report_launch(d, &response).ok());
  EXPECT_EQ(response.attempt(), 4);
  status = job.state->status();
  ASSERT_EQ(status.attempts_size(), 4);
  EXPECT_EQ(status.attempts(2).end_reason(), "superseded");
  EXPECT_EQ(status.attempts(2).cause(), "");
  EXPECT_EQ(status.attempts(3).world(), 0);
  EXPECT_DOUBLE_EQ(status.attempts(3).started_unix_s(), 1100);  // none given: now
  EXPECT_EQ(status.state(), v1::FAILED);
  // A late report of the superseded launch records its cause but restarts nothing.
  ASSERT_TRUE(job.state->report_launch(launch_report("launch-c", "exit", true), &response).ok());
  EXPECT_EQ(response.attempt(), 3);
  status = job.state->status();
  EXPECT_EQ(status.attempts(2).end_reason(), "superseded");
  EXPECT_EQ(status.attempts(2).cause(), "exit");
  EXPECT_FALSE(status.attempts(2).restart());
  EXPECT_EQ(status.state(), v1::FAILED);
  const std::vector<v1::Event> events = job.state->events(0, 1000);
  EXPECT_NE(events.back().message().find("; a later launch has superseded it"), std::string::npos)
      << events.back().message();
}

TEST(JobState, ALaunchReportNeedsItsIdAndCause) {
  Job job(testing::fresh_dir());
  register_all(*job.state, 2, "launch-a");
  v1::ReportLaunchResponse response;
  EXPECT_EQ(job.state->report_launch(launch_report("", "exit", true), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(job.state->report_launch(launch_report("launch-a", "", true), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(
      job.state->report_launch(launch_report("launch-a", "exit", true, -1), &response).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);
  v1::ReportLaunchRequest other = launch_report("launch-a", "exit", true);
  other.set_job_id("another-job");
  EXPECT_EQ(job.state->report_launch(other, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  const v1::JobStatus status = job.state->status();
  ASSERT_EQ(status.attempts_size(), 1);
  EXPECT_DOUBLE_EQ(status.attempts(0).ended_unix_s(), 0);
  EXPECT_EQ(status.attempts(0).cause(), "");
  EXPECT_EQ(status.state(), v1::STARTING);
}

TEST(JobState, AttemptsRecordHowTheyStarted) {
  const std::string dir = testing::fresh_dir();
  {
    Job job(dir);
    // Three ranks resume from step 10: processes started at 950, 940 and (unknown) 0; their
    // checkpoint loads took 3.5, 7.25 and 1 s.
    const double starts[] = {950, 940, 0}, loads[] = {3.5, 7.25, 1};
    const double clocks[] = {1000, 1001, 1002.5};
    int attempt = 0;
    for (int r = 0; r < 3; ++r) {
      job.clock = clocks[r];
      v1::RegisterRankRequest request = registration(r, 3, "l", 10);
      request.set_process_start_unix_s(starts[r]);
      request.set_resume_seconds(loads[r]);
      v1::RegisterRankResponse response;
      ASSERT_TRUE(job.state->register_rank(request, &response).ok());
      attempt = response.attempt();
      const v1::Attempt a = job.state->status().attempts(0);
      EXPECT_DOUBLE_EQ(a.registered_unix_s(), r < 2 ? 0 : 1002.5) << "after rank " << r;
      EXPECT_DOUBLE_EQ(a.process_start_unix_s(), r == 0 ? 950 : 940) << "after rank " << r;
      EXPECT_DOUBLE_EQ(a.resume_seconds(), r == 0 ? 3.5 : 7.25) << "after rank " << r;
    }
    // Rank 1 registering again (a reconnect) moves nothing.
    job.clock = 1003;
    v1::RegisterRankResponse response;
    ASSERT_TRUE(job.state->register_rank(registration(1, 3, "l", 10), &response).ok());
    EXPECT_DOUBLE_EQ(job.state->status().attempts(0).registered_unix_s(), 1002.5);

    // The first step past first_step, as the rank's clock says it completed.
    job.clock = 1020;
    v1::HeartbeatRequest h = beat(attempt, 0, 10);
    h.mutable_progress(0)->set_unix_s(1005);  // step 10: the resume point, no step yet
    v1::HeartbeatResponse beat_response;
    ASSERT_TRUE(job.state->heartbeat(h, &beat_response).ok());
    EXPECT_DOUBLE_EQ(job.state->status().attempts(0).first_step_unix_s(), 0);
    h = beat(attempt, 0, 12);
    h.mutable_progress(0)->set_step(11);
    h.mutable_progress(0)->set_unix_s(1007.5);
    v1::Progress& later = *h.add_progress();
    later.set_step(12);
    later.set_unix_s(1009);
    ASSERT_TRUE(job.state->heartbeat(h, &beat_response).ok());
    EXPECT_DOUBLE_EQ(job.state->status().attempts(0).first_step_unix_s(), 1007.5);
  }
  Job job(dir);
  const v1::Attempt a = job.state->status().attempts(0);
  EXPECT_DOUBLE_EQ(a.process_start_unix_s(), 940);
  EXPECT_DOUBLE_EQ(a.resume_seconds(), 7.25);
  EXPECT_DOUBLE_EQ(a.registered_unix_s(), 1002.5);
  EXPECT_DOUBLE_EQ(a.first_step_unix_s(), 1007.5);
}

TEST(JobState, AFirstStepWithoutTheRanksClockTakesTheCoordinators) {
  Job job(testing::fresh_dir());
  const int attempt = register_all(*job.state, 1, "l");
  job.clock = 1234;
  v1::HeartbeatResponse response;
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 0, 1), &response).ok());  // no unix_s
  EXPECT_DOUBLE_EQ(job.state->status().attempts(0).first_step_unix_s(), 1234);
}

// logging_steps above 1: no progress point dates the first step; a rank's heartbeat whose step
// is past first_step does, at its arrival.
TEST(JobState, AFirstStepSeenOnlyInAHeartbeatIsDatedByItsArrival) {
  Job job(testing::fresh_dir());
  const int attempt = register_all(*job.state, 2, "l");
  v1::HeartbeatResponse response;
  job.clock = 1100;
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 1, 0), &response).ok());  // no step yet
  EXPECT_DOUBLE_EQ(job.state->status().attempts(0).first_step_unix_s(), 0);
  job.clock = 1111;
  ASSERT_TRUE(job.state->heartbeat(beat(attempt, 1, 3), &response).ok());  // rank 1: no progress
  EXPECT_DOUBLE_EQ(job.state->status().attempts(0).first_step_unix_s(), 1111);
}

TEST(JobState, ARankThatNeverRegistersIsLostAfterTheTimeout) {
  Job job(testing::fresh_dir());
  v1::RegisterRankResponse registered;
  ASSERT_TRUE(job.state->register_rank(registration(0, 2, "l"), &registered).ok());  // at 1000
  auto lost_events = [&] {
    int n = 0;
    for (const v1::Event& e : job.state->events(0, 100)) n += e.kind() == "rank_lost";
    return n;
  };
  v1::HeartbeatResponse response;
  job.clock = 1020;
  ASSERT_TRUE(job.state->heartbeat(beat(registered.attempt(), 0, 0), &response).ok());
  job.clock = 1029;  // 29 s after the attempt opened: not yet
  job.state->flush();
  v1::JobStatus status = job.state->status();
  EXPECT_EQ(status.lost_ranks(), 0);
  EXPECT_EQ(status.registered_ranks(), 1);
  ASSERT_EQ(status.ranks_size(), 2);
  EXPECT_FALSE(status.ranks(1).lost());
  EXPECT_DOUBLE_EQ(status.ranks(1).heartbeat_age_s(), 29);
  EXPECT_EQ(lost_events(), 0);
  job.clock = 1031;  // 31 s: lost
  job.state->flush();
  status = job.state->status();
  EXPECT_EQ(status.lost_ranks(), 1);
  EXPECT_TRUE(status.ranks(1).lost());
  EXPECT_FALSE(status.ranks(0).lost());
  EXPECT_EQ(lost_events(), 1);
  EXPECT_EQ(job.state->events(0, 100).back().rank(), 1);
}

}  // namespace
}  // namespace ptrain
