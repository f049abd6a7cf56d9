// ptrain-status: a job's status from its coordinator, as a table for people or JSON for scripts
// (docs/status.md).
//
//   ptrain-status --coordinator HOST:PORT              the table once (GetJobStatus, GetMetrics)
//   ptrain-status --coordinator HOST:PORT --json       the JobStatus as one line of JSON
//   ptrain-status --coordinator HOST:PORT --watch      follows WatchJobStatus until the job ends
//
// --watch redraws in place on a terminal and otherwise prints every update after the last (one
// JSON line each with --json). A broken stream is reopened with backoff; the stream's deadline is
// kWatchRenewSeconds and it is reopened when that passes, so no call ever runs without one. It
// ends with exit code 0 once the job is FINISHED or FAILED (printed first), or on Ctrl-C.
// Exit codes (core/error.h): 2 for bad flags or an unreadable token or PEM file; 3 when the
// coordinator cannot be asked (unreachable, refused the token, ...): the message names its
// address and the gRPC status.
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/rpc_channel.h"
#include "cluster/status_format.h"
#include "core/error.h"
#include "ptrain/v1/coordinator.grpc.pb.h"

namespace ptrain {
namespace {

// A stream's deadline: then it is reopened. Short enough that a coordinator host that vanished
// without closing the connection shows within a minute even when the job has nothing to report.
constexpr double kWatchRenewSeconds = 60;
constexpr int kMetricsEveryUpdates = 5;      // --watch re-fetches the loss history this often...
constexpr double kMetricsEverySeconds = 10;  // ...or after this long, whichever comes first
constexpr double kFirstBackoffSeconds = 0.5;
constexpr double kMaxBackoffSeconds = 10;
constexpr int kDefaultWidth = 100;  // the table's width when stdout is not a terminal

struct StatusOptions {
  RpcClientOptions rpc;
  std::string token_file;
  bool watch = false;
  bool json = false;
  double interval_s = 1;
  int max_ranks = 16;
  bool all_ranks = false;  // --json without --max-ranks: ask for every rank
  int width = 0;           // 0: the terminal's
  bool no_color = false;
};

// ------------------------------------------------------------------------ Ctrl-C in --watch

// Ctrl-C and SIGTERM end a watch with exit code 0. The signals are blocked in every thread (gRPC's
// are started later and inherit the mask) and taken by a watcher thread with sigwait(), which
// cancels the call in flight: ClientContext::TryCancel() is not async-signal-safe, so it cannot
// run in a signal handler. The thread runs until the process ends and shares what it touches.
class StopSignal {
 public:
  StopSignal() : state_(std::make_shared<State>()) {
    sigemptyset(&state_->signals);
    sigaddset(&state_->signals, SIGINT);
    sigaddset(&state_->signals, SIGTERM);
    const int rc = pthread_sigmask(SIG_BLOCK, &state_->signals, nullptr);
    PTRAIN_ASSERT(rc == 0, "pthread_sigmask: error {}", rc);
    std::thread([state = state_] { wait_for_signal(*state); }).detach();
  }

  bool requested() const { return state_->stop; }

  // Waits `seconds`; false when a stop came first.
  bool sleep(double seconds) {
    std::unique_lock<std::mutex> lock(state_->mutex);
    return !state_->woken.wait_for(lock, std::chrono::duration<double>(seconds),
                                   [this] { return state_->stop.load(); });
  }

  // The call a stop cancels; nullptr when none is in flight.
  void set_call(grpc::ClientContext* call) {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->call = call;
    if (state_->stop && call) call->TryCancel();
  }

 private:
  struct State {
    sigset_t signals;
    std::atomic<bool> stop{false};
    std::mutex mutex;
    std::condition_variable woken;
    grpc::ClientContext* call = nullptr;
  };

  static void wait_for_signal(State& state) {
    int signal = 0;
    while (sigwait(&state.signals, &signal) != 0) {
    }
    std::lock_guard<std::mutex> lock(state.mutex);
    state.stop = true;
    if (state.call) state.call->TryCancel();
    state.woken.notify_all();
  }

  std::shared_ptr<State> state_;
};

// ------------------------------------------------------------------------------ the output

// Where the statuses go: standard output, redrawn in place on a terminal under --watch.
class Screen {
 public:
  explicit Screen(const StatusOptions& options)
      : options_(options), terminal_(::isatty(STDOUT_FILENO) == 1) {}

  // Columns of the table: --width, else the terminal's (it may have been resized), else 100.
  int width() const {
    if (options_.width > 0) return options_.width;
    const winsize size = terminal_size();
    return size.ws_col > 0 ? size.ws_col : kDefaultWidth;
  }

  void show(const v1::JobStatus& status, const std::vector<v1::MetricPoint>& history) {
    if (options_.json) {
      std::fputs((status_json(status) + "\n").c_str(), stdout);
      std::fflush(stdout);
      return;
    }
    StatusFormatOptions format;
    format.width = width();
    format.color = terminal_ && !options_.no_color;
    format.max_ranks = options_.max_ranks;
    const std::string table = format_status_table(status, history, format);
    if (!options_.watch || !terminal_) {
      std::fputs(((shown_ ? "\n" : "") + table).c_str(), stdout);
    } else {
      const winsize size = terminal_size();
      redraw(table, size.ws_row > 1 ? size.ws_row - 1 : 1 << 20);
    }
    std::fflush(stdout);
    shown_ = true;
  }

  // The status a --watch shows while it reconnects (stderr: a redraw later covers it).
  static void note(const std::string& text) {
    std::fputs(("ptrain-status: " + text + "\n").c_str(), stderr);
  }

 private:
  // Cursor home, each line over the old one (erasing its rest), then the screen below erased:
  // no flicker of a cleared screen between two tables. Lines past the screen's are left out so
  // the terminal never scrolls (which would break the next redraw).
  void redraw(const std::string& table, int rows) {
    std::string frame = shown_ ? "\x1b[H" : "\x1b[H\x1b[2J";
    size_t begin = 0;
    for (int row = 0; row < rows && begin < table.size(); ++row) {
      const size_t end = table.find('\n', begin);
      frame += table.substr(begin, end - begin) + "\x1b[K\n";
      begin = end == std::string::npos ? table.size() : end + 1;
    }
    std::fputs((frame + "\x1b[J").c_str(), stdout);
  }

  // Zeros when standard output is not a terminal.
  winsize terminal_size() const {
    winsize size{};
    if (!terminal_ || ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) != 0) size = winsize{};
    return size;
  }

  const StatusOptions& options_;
  const bool terminal_;
  bool shown_ = false;
};

// ----------------------------------------------------------------------------- the calls

class CoordinatorReader {
 public:
  explicit CoordinatorReader(const StatusOptions& options)
      : options_(options), stub_(v1::Coordinator::NewStub(make_rpc_channel(options.rpc))) {}

  int ranks_to_ask() const { return options_.all_ranks ? 0 : options_.max_ranks; }

  v1::JobStatus status() {
    v1::GetJobStatusRequest request;
    request.set_max_ranks(ranks_to_ask());
    v1::JobStatus status;
    const auto context = make_rpc_context(options_.rpc);
    check(stub_->GetJobStatus(context.get(), request, &status), "GetJobStatus");
    return status;
  }

  // The loss history for a table of `width` columns (`history` is kept when the call fails).
  grpc::Status metrics(int width, std::vector<v1::MetricPoint>& history) {
    v1::GetMetricsRequest request;
    request.set_max_points(width + 16);  // the sparkline is narrower than the table
    v1::GetMetricsResponse response;
    const auto context = make_rpc_context(options_.rpc);
    const grpc::Status result = stub_->GetMetrics(context.get(), request, &response);
    if (result.ok()) history.assign(response.points().begin(), response.points().end());
    return result;
  }

  v1::Coordinator::Stub& stub() { return *stub_; }

  // A RuntimeFailure naming the call, the coordinator and the gRPC status.
  void check(const grpc::Status& result, const char* call) const {
    if (result.ok()) return;
    std::string hint;
    if (result.error_code() == grpc::UNAUTHENTICATED)
      hint = " (give the coordinator's token with --token-file)";
    throw RuntimeFailure(fmt::format("{} to the coordinator at {} failed: {}{}", call,
                                     options_.rpc.address, describe_status(result), hint));
  }

 private:
  const StatusOptions& options_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

bool job_ended(const v1::JobStatus& status) {
  return status.state() == v1::FINISHED || status.state() == v1::FAILED;
}

// Failures a later try may not meet (the coordinator restarting, a network blip); the others
// (a wrong token, a server without the call) end the watch.
bool worth_retrying(const grpc::Status& result) {
  switch (result.error_code()) {
    case grpc::OK:
    case grpc::CANCELLED:
    case grpc::UNKNOWN:
    case grpc::DEADLINE_EXCEEDED:
    case grpc::RESOURCE_EXHAUSTED:
    case grpc::ABORTED:
    case grpc::INTERNAL:
    case grpc::UNAVAILABLE:
      return true;
    default:
      return false;
  }
}

int show_once(const StatusOptions& options) {
  CoordinatorReader coordinator(options);
  Screen screen(options);
  const v1::JobStatus status = coordinator.status();
  std::vector<v1::MetricPoint> history;
  if (!options.json) coordinator.check(coordinator.metrics(screen.width(), history), "GetMetrics");
  screen.show(status, history);
  return 0;
}

int watch(const StatusOptions& options) {
  StopSignal stop;  // before the channel: gRPC's threads inherit the blocked signals
  CoordinatorReader coordinator(options);
  Screen screen(options);
  std::vector<v1::MetricPoint> history;
  int updates_since_metrics = kMetricsEveryUpdates;
  auto metrics_fetched = std::chrono::steady_clock::now();
  double backoff = kFirstBackoffSeconds;

  v1::WatchJobStatusRequest request;
  request.set_max_ranks(coordinator.ranks_to_ask());
  request.set_min_interval_ms(static_cast<int>(std::max(100.0, options.interval_s * 1000)));
  while (!stop.requested()) {
    const auto context = make_rpc_context(options.rpc, kWatchRenewSeconds);
    stop.set_call(context.get());
    const auto stream = coordinator.stub().WatchJobStatus(context.get(), request);
    v1::JobStatus status;
    bool received = false, ended = false;
    while (!ended && stream->Read(&status)) {
      received = true;
      backoff = kFirstBackoffSeconds;
      const double since_metrics =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - metrics_fetched).count();
      ended = job_ended(status);
      if (!options.json && (++updates_since_metrics >= kMetricsEveryUpdates ||
                            since_metrics >= kMetricsEverySeconds || ended)) {
        // A failed refresh keeps the older history: the stream is what this watch follows.
        coordinator.metrics(screen.width(), history);
        updates_since_metrics = 0;
        metrics_fetched = std::chrono::steady_clock::now();
      }
      screen.show(status, history);
    }
    if (ended) context->TryCancel();
    while (stream->Read(&status)) {
    }
    const grpc::Status result = stream->Finish();
    stop.set_call(nullptr);
    if (ended || stop.requested()) return 0;
    if (received && result.error_code() == grpc::DEADLINE_EXCEEDED) continue;  // renewal
    if (!worth_retrying(result)) coordinator.check(result, "WatchJobStatus");
    Screen::note(fmt::format("watching the coordinator at {}: {}; trying again in {:.1f} s",
                             options.rpc.address, describe_status(result), backoff));
    if (!stop.sleep(backoff)) return 0;
    backoff = std::min(kMaxBackoffSeconds, backoff * 2);
  }
  return 0;
}

// ---------------------------------------------------------------------------- the command

void add_flags(CLI::App& app, StatusOptions& options, std::string& token) {
  app.add_option("--coordinator", options.rpc.address,
                 "the coordinator's HOST:PORT (a job writes it to outputs/coordinator.addr)")
      ->required();
  app.add_flag("--watch", options.watch,
               "follow the job until it finishes or fails (Ctrl-C to stop): redrawn in place on a "
               "terminal, one status after another otherwise");
  app.add_flag("--json", options.json,
               "print the JobStatus as one line of JSON (one line per update with --watch)");
  app.add_option("--interval", options.interval_s,
                 "--watch: at most one update per this many seconds")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  auto* token_file =
      app.add_option("--token-file", options.token_file,
                     "file whose first line is the coordinator's token (preferred over --token)");
  app.add_option("--token", token,
                 "the coordinator's token itself; other users can read it in `ps`, so prefer "
                 "--token-file")
      ->excludes(token_file);
  app.add_option("--tls-ca", options.rpc.tls_ca,
                 "PEM file of the CA to trust for the coordinator (TLS; plaintext without it)");
  auto* cert = app.add_option("--tls-cert", options.rpc.tls_cert,
                              "PEM client certificate for mutual TLS (needs --tls-key)");
  auto* key = app.add_option("--tls-key", options.rpc.tls_key, "PEM key of --tls-cert");
  cert->needs(key);
  key->needs(cert);
  app.add_option("--timeout", options.rpc.rpc_timeout_s, "deadline of each call, in seconds")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--max-ranks", options.max_ranks,
                 "rank rows shown, lost ranks first (with --json: ranks sent; default all)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--width", options.width,
                 "columns of the table (default: the terminal's, else 100)")
      ->check(CLI::Range(20, 1000));
  app.add_flag("--no-color", options.no_color, "no ANSI colours on a terminal");
}

int run_status(StatusOptions& options, const std::string& token) {
  options.rpc.auth_token = options.token_file.empty() ? token : read_token_file(options.token_file);
  return options.watch ? watch(options) : show_once(options);
}

}  // namespace
}  // namespace ptrain

int main(int argc, char** argv) {
  using namespace ptrain;
  StatusOptions options;
  std::string token;
  CLI::App app("ptrain-status: a job's status from its coordinator");
  add_flags(app, options, token);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    app.exit(e);
    return static_cast<int>(ExitCode::kBadInput);
  }
  options.all_ranks = options.json && app.count("--max-ranks") == 0;
  try {
    return run_status(options, token);
  } catch (const Error& e) {
    std::fprintf(stderr, "ptrain-status: %s\n", e.what());
    return static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ptrain-status: %s\n", e.what());
    return static_cast<int>(ExitCode::kRuntimeFailure);
  }
}
