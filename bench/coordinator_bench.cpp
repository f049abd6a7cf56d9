#include "bench/coordinator_bench.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "bench/bench_common.h"
#include "cluster/rank_simulator.h"
#include "core/error.h"

namespace ptrain::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBaseline =
    "grpc.health.v1.Health/Check (an empty unary RPC) on the same coordinator, from as many "
    "connections at the same rate";

// ---------------------------------------------------------------- the coordinator process

[[noreturn]] void fail(const char* call, const std::string& what) {
  throw RuntimeFailure(fmt::format("{} {} failed: {}", call, what, std::strerror(errno)));
}

// CPU time and resident memory of a process, from /proc.
struct ProcessUsage {
  double cpu_seconds = 0;  // user + system, every thread
  int64_t rss_bytes = 0;
};

// ptrain-coordinator as a child process: it serves on a free loopback port with its state in
// `state_dir`, pinned to `cpu` (unless -1), its log in state_dir/coordinator.log. The constructor
// returns once it serves (RuntimeFailure when it exits first or does not serve within 30 s);
// stop() (or the destructor) sends SIGTERM and waits, SIGKILL after 10 s.
class CoordinatorProcess {
 public:
  CoordinatorProcess(const std::string& binary, const std::string& state_dir, int cpu);
  ~CoordinatorProcess() { stop(); }
  CoordinatorProcess(const CoordinatorProcess&) = delete;
  CoordinatorProcess& operator=(const CoordinatorProcess&) = delete;

  const std::string& address() const { return address_; }
  ProcessUsage usage() const;
  // Answers its exit status (as waitpid() reports it); -1 when it had to be killed.
  int stop();

 private:
  pid_t pid_ = -1;
  std::string address_, log_path_;
  int exit_status_ = -1;
};

ProcessUsage read_process_usage(pid_t pid) {
  ProcessUsage usage;
  const std::string stat_path = fmt::format("/proc/{}/stat", pid);
  std::ifstream stat(stat_path);
  if (!stat) fail("open", stat_path);
  std::string line;
  std::getline(stat, line);
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const auto name_end = line.rfind(')');
  PTRAIN_ASSERT(name_end != std::string::npos, "{} has no command name: {}", stat_path, line);
  std::istringstream fields(line.substr(name_end + 2));
  std::vector<std::string> field;
  for (std::string f; field.size() < 13 && fields >> f;) field.push_back(f);
  PTRAIN_ASSERT(field.size() == 13, "{} is too short: {}", stat_path, line);
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  usage.cpu_seconds = static_cast<double>(std::stoll(field[11]) + std::stoll(field[12])) / ticks;

  const std::string status_path = fmt::format("/proc/{}/status", pid);
  std::ifstream status(status_path);
  if (!status) fail("open", status_path);
  for (std::string entry; std::getline(status, entry);)
    if (entry.rfind("VmRSS:", 0) == 0) usage.rss_bytes = std::stoll(entry.substr(6)) * 1024;
  return usage;
}

CoordinatorProcess::CoordinatorProcess(const std::string& binary, const std::string& state_dir,
                                       int cpu) {
  PTRAIN_CHECK(fs::is_regular_file(binary), "no coordinator binary at {}", binary);
  const std::string address_file = (fs::path(state_dir) / "address").string();
  log_path_ = (fs::path(state_dir) / "coordinator.log").string();
  fs::remove(address_file);
  std::vector<std::string> args = {binary,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--state",
                                   (fs::path(state_dir) / "coordinator.db").string(),
                                   "--address-file",
                                   address_file};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) fail("open", log_path_);
  pid_ = ::fork();
  if (pid_ < 0) fail("fork", "for " + binary);
  if (pid_ == 0) {
    // The child: only async-signal-safe calls until exec.
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (::sched_setaffinity(0, sizeof(set), &set) != 0) ::_exit(126);
    }
    if (::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!fs::exists(address_file)) {
    int status = 0;
    const bool exited = ::waitpid(pid_, &status, WNOHANG) == pid_;
    if (exited || Clock::now() > deadline) {
      if (!exited) stop();
      pid_ = -1;
      std::ifstream log(log_path_);
      std::ostringstream text;
      text << log.rdbuf();
      throw RuntimeFailure(fmt::format("{} did not start serving{} (its log: {})", binary,
                                       exited ? "" : " within 30 s", text.str()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::ifstream in(address_file);
  std::getline(in, address_);
  PTRAIN_ASSERT(!address_.empty(), "{} wrote an empty address file", binary);
}

ProcessUsage CoordinatorProcess::usage() const {
  return read_process_usage(pid_);
}

// Never throws (the destructor calls it): a failed kill() means the child is gone already, which
// waitpid() then reaps; a failed waitpid() answers -1.
int CoordinatorProcess::stop() {
  if (pid_ < 0) return exit_status_;
  ::kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  exit_status_ = -1;
  for (int status = 0;;) {
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) exit_status_ = status;
    if (done != 0) break;
    if (Clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
  return exit_status_;
}

// ---------------------------------------------------------------- the phases

double load_average_1m() {
  std::ifstream in("/proc/loadavg");
  double one_minute = 0;
  in >> one_minute;
  return one_minute;
}

void sleep_seconds(double s) {
  std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

// This process (and the threads it starts from now on) runs on every CPU it may use but `cpu`,
// which is left to the coordinator.
void leave_cpu_to_coordinator(int cpu) {
  cpu_set_t allowed;
  if (::sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
    throw RuntimeFailure(fmt::format("sched_getaffinity failed: {}", std::strerror(errno)));
  PTRAIN_CHECK(
      cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed) && CPU_COUNT(&allowed) >= 2,
      "--coordinator-cpu {} must be one of at least two CPUs this process may use ({} "
      "allowed); -1 runs the coordinator unpinned",
      cpu, CPU_COUNT(&allowed));
  CPU_CLR(cpu, &allowed);
  if (::sched_setaffinity(0, sizeof(allowed), &allowed) != 0)
    throw RuntimeFailure(fmt::format("sched_setaffinity failed: {}", std::strerror(errno)));
}

std::string make_work_dir(const CoordinatorBenchOptions& o) {
  if (!o.work_dir.empty()) {
    fs::create_directories(o.work_dir);
    return o.work_dir;
  }
  std::string pattern = (fs::temp_directory_path() / "ptrain-bench-coordinator-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr)
    throw RuntimeFailure(fmt::format("mkdtemp {} failed: {}", pattern, std::strerror(errno)));
  return pattern;
}

// One simulated load over its measured window.
struct Phase {
  int registered = 0;
  double register_s = 0;  // connecting and registering every rank
  SimulatorWindow window;
  double cpu_fraction = 0;         // the coordinator's CPU seconds per wall second
  double client_cpu_fraction = 0;  // this process's (the simulator's), the same way
  int64_t rss_bytes = 0;           // the coordinator's at the window's end
};

Phase run_phase(const CoordinatorProcess& coordinator, const RankSimulatorOptions& simulated,
                const CoordinatorBenchOptions& o) {
  Phase phase;
  RankSimulator simulator(simulated);
  const auto start = Clock::now();
  phase.registered = simulator.start();
  phase.register_s = seconds_since(start);
  sleep_seconds(o.warmup_s);
  simulator.take_window();
  const ProcessUsage before = coordinator.usage();
  const ProcessUsage self_before = read_process_usage(::getpid());
  sleep_seconds(o.seconds);
  phase.window = simulator.take_window();
  const ProcessUsage after = coordinator.usage();
  const ProcessUsage self_after = read_process_usage(::getpid());
  phase.cpu_fraction = (after.cpu_seconds - before.cpu_seconds) / phase.window.seconds;
  phase.client_cpu_fraction =
      (self_after.cpu_seconds - self_before.cpu_seconds) / phase.window.seconds;
  phase.rss_bytes = after.rss_bytes;
  simulator.stop();
  return phase;
}

nlohmann::json failures_json(const CallStats& stats) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [code, count] : stats.failures) out[code] = count;
  return out;
}

nlohmann::json result_line(int ranks, const Phase& load, const Phase& baseline,
                           const CoordinatorBenchOptions& o, double load_average) {
  const CallStats& calls = load.window.ranks;
  const CallStats& polls = load.window.pollers;
  const CallStats& empty = baseline.window.ranks;
  const double p99 = calls.quantile_ms(0.99), baseline_p99 = empty.quantile_ms(0.99);
  return {
      {"suite", "coordinator"},
      {"machine", machine_json()},
      {"ranks", ranks},
      {"registered", load.registered},
      {"register_s", load.register_s},
      {"connections", ranks},
      {"interval_s", o.interval_s},
      {"seconds", load.window.seconds},
      {"calls", calls.ok + calls.failed},
      {"calls_per_s", static_cast<double>(calls.ok + calls.failed) / load.window.seconds},
      {"failed", calls.failed},
      {"failures", failures_json(calls)},
      {"late", calls.late},
      {"p50_ms", calls.quantile_ms(0.5)},
      {"p99_ms", p99},
      {"max_ms", calls.quantile_ms(1.0)},
      {"cpu_fraction", load.cpu_fraction},
      {"coordinator_cpu", o.coordinator_cpu},
      {"coordinator_rss_bytes", load.rss_bytes},
      {"client_cpu_fraction", load.client_cpu_fraction},
      {"pollers", o.pollers},
      {"poll_max_ranks", o.poll_max_ranks},
      {"polls", polls.ok + polls.failed},
      {"poll_failed", polls.failed},
      {"poll_p50_ms", polls.quantile_ms(0.5)},
      {"poll_p99_ms", polls.quantile_ms(0.99)},
      {"baseline", kBaseline},
      {"baseline_calls", empty.ok + empty.failed},
      {"baseline_calls_per_s",
       static_cast<double>(empty.ok + empty.failed) / baseline.window.seconds},
      {"baseline_failed", empty.failed},
      {"baseline_late", empty.late},
      {"baseline_p50_ms", empty.quantile_ms(0.5)},
      {"baseline_p99_ms", baseline_p99},
      {"baseline_cpu_fraction", baseline.cpu_fraction},
      // A time: the speed ratio (docs/benchmarks.md), of the p99 the target is stated in.
      {"vs_baseline", baseline_p99 / p99},
      {"loadavg_1m", load_average},
  };
}

}  // namespace

int run_coordinator_bench(const CoordinatorBenchOptions& o) {
  PTRAIN_CHECK(o.seconds > 0 && o.warmup_s >= 0,
               "--seconds must be positive, --warmup not negative");
  const std::string coordinator_binary =
      (fs::read_symlink("/proc/self/exe").parent_path() / "ptrain-coordinator").string();
  PTRAIN_CHECK(
      fs::exists(coordinator_binary),
      "ptrain-bench coordinator runs '{}', which does not exist (build ptrain-coordinator)",
      coordinator_binary);
  if (o.coordinator_cpu >= 0) leave_cpu_to_coordinator(o.coordinator_cpu);
  const std::string work = make_work_dir(o);

  for (int ranks : o.ranks) {
    const std::string state = (fs::path(work) / fmt::format("ranks-{}", ranks)).string();
    fs::remove_all(state);
    fs::create_directories(state);
    const double load_average = load_average_1m();
    CoordinatorProcess coordinator(coordinator_binary, state, o.coordinator_cpu);

    RankSimulatorOptions simulated;
    simulated.rpc.address = coordinator.address();
    simulated.ranks = ranks;
    simulated.interval_s = o.interval_s;
    simulated.threads = o.threads;
    simulated.call = RankCall::kEmpty;
    const Phase baseline = run_phase(coordinator, simulated, o);

    simulated.call = RankCall::kHeartbeat;
    simulated.pollers = o.pollers;
    simulated.poll_interval_s = o.interval_s;
    simulated.poll_max_ranks = o.poll_max_ranks;
    const Phase load = run_phase(coordinator, simulated, o);
    const int exit_status = coordinator.stop();
    if (!WIFEXITED(exit_status) || WEXITSTATUS(exit_status) != 0)
      throw RuntimeFailure(
          fmt::format("ptrain-coordinator did not stop cleanly (wait status {}); "
                      "its log: {}/coordinator.log",
                      exit_status, state));
    print_result(result_line(ranks, load, baseline, o, load_average));
  }
  if (o.work_dir.empty()) fs::remove_all(work);
  return 0;
}

}  // namespace ptrain::bench
