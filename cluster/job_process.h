// JobProcess: the job command ptrain-launch runs (mpirun, srun or ptrain itself), in a session of
// its own, so that everything it starts can be found and stopped: Open MPI puts every rank in a
// process group of its own, but all of them stay in the session the command began. Nothing outside
// that session is ever signalled.
//
// The supervisor is the session's subreaper (prctl PR_SET_CHILD_SUBREAPER): a rank orphaned by a
// launcher that died is reparented to it and reaped here, not left a zombie.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace ptrain {

class JobProcess {
 public:
  // Starts argv[0] (looked up on PATH) with `env` added to this process's environment, in a new
  // session, with every signal unblocked and default. UserError naming the program when it cannot
  // be run (not found, not executable).
  JobProcess(const std::vector<std::string>& argv,
             const std::vector<std::pair<std::string, std::string>>& env);
  // Kills what is left of the session.
  ~JobProcess();
  JobProcess(const JobProcess&) = delete;
  JobProcess& operator=(const JobProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Reaps the command if it has ended, and any other child of this process: orphaned members of
  // the session (the owner starts no other children of its own). Answers whether the command
  // has ended. Never blocks.
  bool poll();
  bool ended() const { return ended_; }
  // The command's wait status (valid once ended()).
  int wait_status() const { return wait_status_; }
  // "exit code 3", "killed by signal 9 (Killed)".
  static std::string describe(int wait_status);
  // 0-255 as a shell reports it: the exit code, or 128 + the signal.
  static int shell_code(int wait_status);

  // The processes of the session still alive, the command included. RuntimeFailure when /proc
  // cannot be read.
  std::vector<pid_t> members() const;
  // Sends `signal` to the members for which `select(pid)` is true.
  template <typename Select>
  void signal_members(int signal, Select select) const {
    for (pid_t member : members())
      if (select(member)) send(member, signal);
  }
  // SIGKILL to every member, repeated until none is left (or `timeout_s` passes); reaps the
  // command. Answers whether the session is empty; RuntimeFailure when /proc cannot be read.
  bool kill_all(double timeout_s);

  // The executable's name of a process ("mpirun"), "" when it is gone.
  static std::string program_name(pid_t pid);

 private:
  static void send(pid_t pid, int signal);
  pid_t pid_ = -1;
  bool ended_ = false;
  int wait_status_ = 0;
};

}  // namespace ptrain
