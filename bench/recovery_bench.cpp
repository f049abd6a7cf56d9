#include "bench/recovery_bench.h"
#include "core/clock.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <spdlog/sinks/basic_file_sink.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "bench/bench_common.h"
#include "checkpoint/sharded_checkpoint.h"
#include "cluster/coordinator_server.h"
#include "cluster/job_process.h"
#include "cluster/job_state.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/host_port.h"
#include "tokenizer/tokenizer.h"

namespace ptrain::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBaseline =
    "cold start to first step: the same job under ptrain-launch with no failure, from the "
    "supervisor's start of the command to the first completed step";

double load_average_1m() {
  std::ifstream in("/proc/loadavg");
  double one_minute = 0;
  in >> one_minute;
  return one_minute;
}

// A file polled for a condition is looked at again after this.
void pause_between_polls() {
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

std::string tail_of(const std::string& path, size_t bytes = 4000) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  return all.size() > bytes ? "..." + all.substr(all.size() - bytes) : all;
}

// ---------------------------------------------------------------- child processes

// `argv` in a session of its own (cluster/job_process.h), its stdout and stderr in `log`.
std::unique_ptr<JobProcess> spawn_logged(const std::vector<std::string>& argv,
                                         const std::string& log) {
  std::vector<std::string> shell = {"/bin/sh", "-c", "exec \"$@\" >\"$0\" 2>&1", log};
  shell.insert(shell.end(), argv.begin(), argv.end());
  return std::make_unique<JobProcess>(shell, std::vector<std::pair<std::string, std::string>>{});
}

// Waits for `process` to end, up to `deadline`; false when it did not.
bool wait_until(JobProcess& process, Clock::time_point deadline) {
  while (!process.poll()) {
    if (Clock::now() > deadline) return false;
    pause_between_polls();
  }
  return true;
}

// SIGTERM (ptrain-launch passes it to the ranks and does not restart), then SIGKILL to what is
// left of the session after 30 s.
void stop(JobProcess& process) {
  if (process.poll()) return;
  ::kill(process.pid(), SIGTERM);
  if (!wait_until(process, Clock::now() + std::chrono::seconds(30))) process.kill_all(10);
}

// Runs `argv` to its end; RuntimeFailure with its log's tail unless it exits 0.
void run_to_end(const std::vector<std::string>& argv, const std::string& log, double timeout_s) {
  auto process = spawn_logged(argv, log);
  const bool ended =
      wait_until(*process, Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(timeout_s)));
  if (!ended) stop(*process);
  if (!ended || process->wait_status() != 0)
    throw RuntimeFailure(fmt::format("'{} {}' {}; {}:\n{}", argv[0], argv.size() > 1 ? argv[1] : "",
                                     ended ? JobProcess::describe(process->wait_status())
                                           : fmt::format("ran past {:g} s", timeout_s),
                                     log, tail_of(log)));
}

// ---------------------------------------------------------------- the job

struct Case {
  std::string mode;  // lora | qlora
  std::string preset;
  // Checkpoints every save_steps; the rank dies once kill_after steps completed (a checkpoint
  // committed before); the job plans max_steps.
  int save_steps = 1, kill_after = 2, max_steps = 3;
  int repeats = 1;
};

Case parse_case(const std::string& text, const RecoveryBenchOptions& o) {
  const auto colon = text.find(':');
  PTRAIN_CHECK(colon != std::string::npos,
               "--cases: expected mode:preset (e.g. qlora:1b), got '{}'", text);
  Case c;
  c.mode = text.substr(0, colon);
  c.preset = text.substr(colon + 1);
  PTRAIN_CHECK(c.mode == "lora" || c.mode == "qlora",
               "--cases '{}': the mode must be lora or qlora", text);
  // A tiny step takes milliseconds: the kill lands well after the checkpoint and well before the
  // next. A larger preset's step takes seconds: one step past the first checkpoint.
  const bool fast = c.preset == "tiny";
  if (fast) {
    c.save_steps = 20;
    c.kill_after = 23;
    c.max_steps = 60;
  }
  c.repeats = o.repeats > 0 ? o.repeats : fast ? 3 : 1;
  return c;
}

// The runs name their own output_dir (--set); `output_dir` is the preprocessing's.
std::string job_yaml(const Case& c, const std::string& model_dir, const std::string& data,
                     const std::string& prepared, const std::string& output_dir,
                     const RecoveryBenchOptions& o) {
  const bool qlora = c.mode == "qlora";
  return fmt::format(
      "base_model: {}\nadapter: {}\nload_in_4bit: {}\nlora_target_linear: true\n"
      "datasets:\n  - path: {}\n    type: alpaca\ndataset_prepared_path: {}\nval_set_size: 0\n"
      "sequence_len: {}\nsample_packing: true\nmax_steps: {}\nsave_steps: {}\nlogging_steps: 1\n"
      "learning_rate: {}\nseed: 0\ndevice: cpu\noutput_dir: {}\n",
      model_dir, c.mode, qlora ? "true" : "false", data, prepared, o.seq, c.max_steps, c.save_steps,
      qlora ? "0.0002" : "0.002", output_dir);
}

// The process of rank `rank` of the job writing `out` (its command line holds output_dir=OUT, its
// environment OMPI_COMM_WORLD_RANK), -1 when none runs.
pid_t find_rank(const std::string& out, int rank) {
  const std::string out_arg = "output_dir=" + out;
  const std::string rank_var = fmt::format("OMPI_COMM_WORLD_RANK={}", rank);
  auto has_entry = [](const std::string& path, const std::string& wanted) {
    std::ifstream in(path, std::ios::binary);
    for (std::string entry; std::getline(in, entry, '\0');)
      if (entry == wanted) return true;
    return false;
  };
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream comm(entry.path() / "comm");
    std::string program;
    std::getline(comm, program);
    if (program != "ptrain") continue;
    if (has_entry((entry.path() / "cmdline").string(), out_arg) &&
        has_entry((entry.path() / "environ").string(), rank_var))
      return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

int steps_logged(const std::string& metrics) {
  std::ifstream in(metrics);
  int steps = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find("\"type\":\"step\"") != std::string::npos) ++steps;
  return steps;
}

// ---------------------------------------------------------------- one supervised run

struct Paths {
  std::string ptrain, launch, config;
};

struct SupervisedRun {
  nlohmann::json summary;  // ptrain-launch --summary-json
  v1::JobStatus status;    // the coordinator's, after the job
  double kill_unix_s = 0;
  int kill_step = 0;
  const v1::Attempt& attempt(int launch) const {
    const std::string id = summary.at("launches").at(launch - 1).at("launch_id");
    for (const v1::Attempt& a : status.attempts())
      if (a.launch_id() == id) return a;
    throw RuntimeFailure(
        fmt::format("the coordinator has no attempt of launch {} ({})", launch, id));
  }
  double launch_time(int launch, const char* key) const {
    return summary.at("launches").at(launch - 1).at(key).get<double>();
  }
};

// The job under ptrain-launch in `dir`, with a coordinator served here. `kill`: rank
// options.kill_rank gets SIGKILL once c.kill_after steps completed and the checkpoint of step
// c.save_steps committed; else the job runs one step.
SupervisedRun supervise(const Paths& paths, const Case& c, const std::string& dir, bool kill,
                        const RecoveryBenchOptions& o) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string out = dir + "/out";
  CoordinatorServerOptions served;
  served.listen = "127.0.0.1:0";
  served.state_path = dir + "/coordinator.db";
  auto log = std::make_shared<spdlog::logger>(
      "coordinator", std::make_shared<spdlog::sinks::basic_file_sink_mt>(dir + "/coordinator.log"));
  CoordinatorServer coordinator(served, log);

  std::vector<std::string> argv = {paths.launch,
                                   "--coordinator",
                                   dial_address(coordinator.address(), "127.0.0.1"),
                                   "--summary-json",
                                   dir + "/summary.json",
                                   "--backoff",
                                   fmt::format("{}", o.backoff_s),
                                   "--max-restarts",
                                   kill ? "1" : "0",
                                   "--",
                                   o.mpirun,
                                   "--oversubscribe",
                                   "--bind-to",
                                   "none"};
  if (::getuid() == 0) argv.push_back("--allow-run-as-root");
  const std::vector<std::string> job = {
      "-np",   std::to_string(o.ranks), paths.ptrain, "train", "--config", paths.config,
      "--set", "output_dir=" + out};
  argv.insert(argv.end(), job.begin(), job.end());
  // The baseline times the first step only.
  if (!kill) argv.insert(argv.end(), {"--set", "max_steps=1"});
  const std::string launch_log = dir + "/launch.log";
  auto launch = spawn_logged(argv, launch_log);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o.run_timeout_s));
  auto fail = [&](const std::string& what) {
    stop(*launch);
    return RuntimeFailure(
        fmt::format("{}: {}; {}:\n{}", dir, what, launch_log, tail_of(launch_log)));
  };

  SupervisedRun run;
  if (kill) {
    const std::string metrics = out + "/metrics.jsonl";
    const std::string committed = committed_dir(out + "/checkpoints", c.save_steps);
    pid_t victim = -1;
    for (;;) {
      if (launch->poll()) throw fail("ptrain-launch ended before the kill");
      if (Clock::now() > deadline) throw fail("the job never reached the step to kill at");
      run.kill_step = steps_logged(metrics);
      // Looked up once the ranks train (and before the step to kill at, so the kill follows it
      // at once).
      if (victim < 0 && run.kill_step > 0) {
        victim = find_rank(out, o.kill_rank);
        if (victim < 0)
          throw fail(fmt::format("no process of rank {} writes {}", o.kill_rank, out));
      }
      if (victim > 0 && run.kill_step >= c.kill_after && fs::is_directory(committed)) break;
      pause_between_polls();
    }
    run.kill_unix_s = unix_now();
    if (::kill(victim, SIGKILL) != 0)
      throw fail(fmt::format("kill({}, SIGKILL) failed: {}", victim, std::strerror(errno)));
  }
  if (!wait_until(*launch, deadline)) throw fail(fmt::format("ran past {:g} s", o.run_timeout_s));
  if (launch->wait_status() != 0)
    throw fail("ptrain-launch ended with " + JobProcess::describe(launch->wait_status()));
  run.summary = nlohmann::json::parse(read_text_file(dir + "/summary.json"));
  run.status = coordinator.job().status();
  const auto& launches = run.summary.at("launches");
  const size_t expected = kill ? 2 : 1;
  if (launches.size() != expected || launches.back().at("cause") != "finished")
    throw fail(fmt::format("expected {} launch{}, the last finished; the summary: {}", expected,
                           kill ? "es" : "", run.summary.dump()));
  if (run.attempt(static_cast<int>(expected)).first_step_unix_s() <= 0)
    throw fail("the coordinator saw no completed step of the last launch");
  return run;
}

// ---------------------------------------------------------------- figures

// A launch from the supervisor's start of its command to its first completed step, in parts.
struct StartFigures {
  double total_s = 0;            // start of the command -> first step completed
  double process_start_s = 0;    // -> every rank registered, less the checkpoint load
  double spawn_s = 0;            // of which: -> the first rank process existed (mpirun)
  double rank_init_s = 0;        // of which: -> registered (runtime, MPI, data, model load)
  double checkpoint_load_s = 0;  // the slowest rank's
  double first_step_s = 0;       // registered -> first step completed
};

StartFigures start_figures(const SupervisedRun& run, int launch) {
  const v1::Attempt& a = run.attempt(launch);
  const double started = run.launch_time(launch, "started_unix_s");
  const double registered = a.registered_unix_s() > 0 ? a.registered_unix_s() : a.started_unix_s();
  StartFigures f;
  f.total_s = a.first_step_unix_s() - started;
  f.checkpoint_load_s = a.resume_seconds();
  f.process_start_s = registered - started - f.checkpoint_load_s;
  f.spawn_s = a.process_start_unix_s() > 0 ? a.process_start_unix_s() - started : 0;
  f.rank_init_s = f.process_start_s - f.spawn_s;
  f.first_step_s = a.first_step_unix_s() - registered;
  return f;
}

struct Repeat {
  double death_to_step_s = 0;
  nlohmann::json line;  // this repeat's figures
};

Repeat recovery_figures(const SupervisedRun& run) {
  const double detected = run.launch_time(1, "detected_unix_s");
  const double torn_down = run.launch_time(1, "torn_down_unix_s");
  const StartFigures restart = start_figures(run, 2);
  const v1::Attempt& resumed = run.attempt(2);
  const nlohmann::json& supervisor = run.summary.at("launches").at(1).at("recovery");
  Repeat r;
  r.death_to_step_s = resumed.first_step_unix_s() - run.kill_unix_s;
  r.line = {
      {"death_to_step_s", r.death_to_step_s},
      {"detection_s", detected - run.kill_unix_s},
      {"teardown_s", torn_down - detected},
      {"backoff_s", run.launch_time(2, "started_unix_s") - torn_down},
      {"process_start_s", restart.process_start_s},
      {"spawn_s", restart.spawn_s},
      {"rank_init_s", restart.rank_init_s},
      {"checkpoint_load_s", restart.checkpoint_load_s},
      {"first_step_s", restart.first_step_s},
      {"kill_step", run.kill_step},
      {"resumed_from_step", resumed.first_step()},
      {"first_launch_cold_start_s", start_figures(run, 1).total_s},
      // The supervisor's own account: its failure time is when it saw the pid gone.
      {"supervisor_failure_lag_s", run.launch_time(1, "failure_unix_s") - run.kill_unix_s},
      {"supervisor_total_s", supervisor.at("total_s")},
  };
  return r;
}

template <class T>
const T& median_of(std::vector<T>& items, double T::*key) {
  std::sort(items.begin(), items.end(), [&](const T& a, const T& b) { return a.*key < b.*key; });
  return items[items.size() / 2];
}

struct Baseline {
  double total_s = 0;
  StartFigures parts;
};

// ---------------------------------------------------------------- set-up

std::string make_work_dir(const RecoveryBenchOptions& o) {
  if (!o.work_dir.empty()) {
    fs::create_directories(o.work_dir);
    return fs::absolute(o.work_dir).string();
  }
  std::string pattern = (fs::temp_directory_path() / "ptrain-bench-recovery-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr)
    throw RuntimeFailure(fmt::format("mkdtemp {} failed: {}", pattern, std::strerror(errno)));
  return pattern;
}

std::string find_repo(const RecoveryBenchOptions& o, const fs::path& bin) {
  const fs::path script = "examples/make_tiny_data.py";
  if (!o.repo.empty()) {
    PTRAIN_CHECK(fs::exists(fs::path(o.repo) / script), "--repo {}: no {} there", o.repo,
                 script.string());
    return fs::absolute(o.repo).string();
  }
  for (fs::path dir = bin; dir.has_relative_path(); dir = dir.parent_path())
    if (fs::exists(dir / script)) return dir.string();
  PTRAIN_CHECK(false, "no {} in a directory above {}: name the source tree with --repo",
               script.string(), bin.string());
  return "";
}

// The case's model (`ptrain init-model`, the byte tokenizer where the preset has none), its job
// config and the prepared data; answers the config's path.
std::string prepare_case(const Case& c, const std::string& ptrain, const std::string& work,
                         const std::string& data, const RecoveryBenchOptions& o) {
  const std::string dir = fmt::format("{}/{}-{}", work, c.mode, c.preset);
  const std::string model_dir = dir + "/model";
  fs::create_directories(dir);
  if (!fs::exists(model_dir + "/config.json"))
    run_to_end({ptrain, "init-model", "--preset", c.preset, "--out", model_dir},
               dir + "/init-model.log", o.run_timeout_s);
  if (!fs::exists(model_dir + "/tokenizer_config.json"))
    write_file_atomic(model_dir + "/tokenizer_config.json", byte_tokenizer_config_json());
  const std::string config = dir + "/job.yaml";
  write_file_atomic(config, job_yaml(c, model_dir, data, work + "/prepared", dir + "/out", o));
  run_to_end({ptrain, "preprocess", "--config", config}, dir + "/preprocess.log", o.run_timeout_s);
  return config;
}

}  // namespace

int run_recovery_bench(const RecoveryBenchOptions& o) {
  PTRAIN_CHECK(o.ranks >= 2, "--ranks must be at least 2 (one rank dies, the others stay)");
  PTRAIN_CHECK(o.kill_rank >= 0 && o.kill_rank < o.ranks, "--kill-rank must be below --ranks");
  PTRAIN_CHECK(o.backoff_s >= 0, "--backoff must not be negative");
  const fs::path bin = fs::read_symlink("/proc/self/exe").parent_path();
  Paths paths;
  paths.ptrain = (bin / "ptrain").string();
  paths.launch = (bin / "ptrain-launch").string();
  for (const std::string& binary : {paths.ptrain, paths.launch})
    PTRAIN_CHECK(fs::exists(binary), "ptrain-bench recovery runs '{}', which does not exist",
                 binary);
  std::vector<Case> cases;
  for (const std::string& text : o.cases) cases.push_back(parse_case(text, o));
  const std::string repo = find_repo(o, bin);
  const std::string work = make_work_dir(o);
  run_to_end({"python3", repo + "/examples/make_tiny_data.py", work + "/data", "--rows", "400"},
             work + "/make_tiny_data.log", o.run_timeout_s);
  const nlohmann::json machine = machine_json();

  for (const Case& c : cases) {
    paths.config = prepare_case(c, paths.ptrain, work, work + "/data/alpaca.jsonl", o);
    const double load_before = load_average_1m();
    std::vector<Baseline> baselines;
    std::vector<Repeat> repeats;
    nlohmann::json all_totals = nlohmann::json::array(), all_baselines = nlohmann::json::array();
    for (int i = 0; i < c.repeats; ++i) {
      const std::string dir = fmt::format("{}/{}-{}/run-{}", work, c.mode, c.preset, i + 1);
      const SupervisedRun cold = supervise(paths, c, dir + "-baseline", false, o);
      baselines.push_back({start_figures(cold, 1).total_s, start_figures(cold, 1)});
      repeats.push_back(recovery_figures(supervise(paths, c, dir + "-recovery", true, o)));
      all_baselines.push_back(baselines.back().total_s);
      all_totals.push_back(repeats.back().death_to_step_s);
    }
    const Baseline& baseline = median_of(baselines, &Baseline::total_s);
    const Repeat& median = median_of(repeats, &Repeat::death_to_step_s);
    nlohmann::json line = {
        {"suite", "recovery"},
        {"machine", machine},
        {"preset", c.preset},
        {"mode", c.mode},
        {"ranks", o.ranks},
        {"seq", o.seq},
        {"save_steps", c.save_steps},
        {"killed_rank", o.kill_rank},
        {"backoff_setting_s", o.backoff_s},
        {"repeats", c.repeats},
    };
    line.update(median.line);
    line.update(nlohmann::json{
        {"death_to_step_s_all", all_totals},
        {"baseline", kBaseline},
        {"baseline_s", baseline.total_s},
        {"baseline_process_start_s", baseline.parts.process_start_s},
        {"baseline_spawn_s", baseline.parts.spawn_s},
        {"baseline_rank_init_s", baseline.parts.rank_init_s},
        {"baseline_first_step_s", baseline.parts.first_step_s},
        {"baseline_s_all", all_baselines},
        // A time: the speed ratio (docs/benchmarks.md), cold start / recovery.
        {"vs_baseline", baseline.total_s / median.death_to_step_s},
        {"restart_overhead_s", median.death_to_step_s - baseline.total_s},
        {"loadavg_1m", load_before},
        {"loadavg_1m_end", load_average_1m()},
    });
    print_result(line);
  }
  if (!o.keep && o.work_dir.empty()) fs::remove_all(work);
  return 0;
}

}  // namespace ptrain::bench
