#include "cluster/job_process.h"

#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/file_util.h"

extern char** environ;

namespace ptrain {
namespace {

// The session of process `pid` (field 6 of /proc/PID/stat), or -1 when it is gone or a zombie.
pid_t session_of(pid_t pid) {
  const std::vector<std::string> fields = proc_stat_fields(pid);  // state, ppid, pgrp, session
  if (fields.size() < 4 || fields[0] == "Z" || fields[0] == "X") return -1;
  return static_cast<pid_t>(std::stol(fields[3]));
}

}  // namespace

JobProcess::JobProcess(const std::vector<std::string>& argv,
                       const std::vector<std::pair<std::string, std::string>>& env) {
  PTRAIN_CHECK(!argv.empty(), "no command to run");
  // Orphans of the session come to this process, which reaps them in poll().
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    throw RuntimeFailure(fmt::format("prctl(PR_SET_CHILD_SUBREAPER): {}", std::strerror(errno)));

  std::map<std::string, std::string> merged;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const char* eq = std::strchr(*entry, '=');
    if (eq != nullptr) merged[std::string(*entry, static_cast<size_t>(eq - *entry))] = eq + 1;
  }
  for (const auto& [key, value] : env) merged[key] = value;
  std::vector<std::string> env_text;
  for (const auto& [key, value] : merged) env_text.push_back(key + "=" + value);
  std::vector<char*> envp, args;
  for (std::string& text : env_text) envp.push_back(text.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (std::string& arg : argv_copy) args.push_back(arg.data());
  args.push_back(nullptr);

  posix_spawnattr_t attr;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  if (posix_spawnattr_init(&attr) != 0 || posix_spawnattr_setsigmask(&attr, &none) != 0 ||
      posix_spawnattr_setsigdefault(&attr, &all) != 0 ||
      posix_spawnattr_setflags(
          &attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) != 0)
    throw RuntimeFailure("posix_spawnattr: cannot set the new session and the signals");
  const int failed = posix_spawnp(&pid_, args[0], nullptr, &attr, args.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  if (failed != 0)
    throw UserError(detail::with_location(
        fmt::format("cannot run '{}': {}", argv[0], std::strerror(failed)), __FILE__, __LINE__));
}

JobProcess::~JobProcess() {
  try {
    if (pid_ > 0) kill_all(5.0);
  } catch (const std::exception&) {
    // A destructor cannot report; the owner's teardown already did.
  }
}

bool JobProcess::poll() {
  int status = 0;
  for (pid_t reaped; (reaped = waitpid(-1, &status, WNOHANG)) > 0;)
    if (reaped == pid_) {
      ended_ = true;
      wait_status_ = status;
    }
  return ended_;
}

std::string JobProcess::describe(int wait_status) {
  if (WIFEXITED(wait_status)) return fmt::format("exit code {}", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status))
    return fmt::format("killed by signal {} ({})", WTERMSIG(wait_status),
                       strsignal(WTERMSIG(wait_status)));
  return fmt::format("wait status {}", wait_status);
}

int JobProcess::shell_code(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 255;
}

std::vector<pid_t> JobProcess::members() const {
  std::vector<pid_t> found;
  if (pid_ <= 0) return found;
  DIR* proc = opendir("/proc");
  // Without /proc nothing can be found, and "none left" would be a lie that doubles the job.
  if (proc == nullptr)
    throw RuntimeFailure(fmt::format("cannot list /proc: {}", std::strerror(errno)));
  while (dirent* entry = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    if (session_of(static_cast<pid_t>(pid)) == pid_) found.push_back(static_cast<pid_t>(pid));
  }
  closedir(proc);
  return found;
}

void JobProcess::send(pid_t pid, int signal) {
  ::kill(pid, signal);
}

bool JobProcess::kill_all(double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    const std::vector<pid_t> alive = members();
    if (alive.empty()) break;
    for (pid_t member : alive) send(member, SIGKILL);
    poll();
    if (std::chrono::steady_clock::now() > deadline) return false;
    // A killed process leaves /proc (or turns zombie) within moments; look again shortly.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The command itself may still wait to be reaped.
  while (!poll() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return true;
}

std::string JobProcess::program_name(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(file, name);
  return name;
}

}  // namespace ptrain
