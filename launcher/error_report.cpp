#include "launcher/error_report.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/file_util.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// The launcher's name for this job, or "" outside a launched job.
std::string job_id() {
  std::string id = env("PMIX_NAMESPACE");
  if (id.empty()) id = env("OMPI_MCA_ess_base_jobid");
  if (id.empty()) id = env("OMPI_MCA_orte_ess_jobid");
  if (id.empty() && !env("SLURM_JOB_ID").empty())
    id = env("SLURM_JOB_ID") + "." + env("SLURM_STEP_ID");
  // Only characters that are safe in a file name.
  for (char& c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  return id;
}

// A process's start time (clock ticks since boot, /proc/PID/stat field 22), or "" when it is gone.
std::string start_time(long pid) {
  const std::vector<std::string> fields = proc_stat_fields(pid);
  return fields.size() > 19 ? fields[19] : "";
}

// Whether `pid` is a launcher's process that starts ranks (mpirun and Open MPI's daemons, PRRTE's,
// Slurm's step daemon, MPICH's proxy): only its direct children are the ranks of one job. A rank
// started through a script has the script as parent, and so does every later command the script
// runs in the same job allocation: those are not coordinated (each prints).
bool is_launcher(long pid) {
  std::ifstream in(fmt::format("/proc/{}/comm", pid));
  std::string name;
  std::getline(in, name);
  for (const char* launcher : {"mpirun", "mpiexec", "orterun", "orted", "prterun", "prted", "prte",
                               "slurmstepd", "hydra_pmi_proxy"})
    if (name == launcher) return true;
  return false;
}

std::string marker_dir() {
  return ::access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
}

std::string marker_prefix() {
  return fmt::format("ptrain-error-{}-", ::getuid());
}

// Markers of this user whose launcher process (the name's last two fields) has ended.
void remove_stale_markers(const std::string& dir) {
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(marker_prefix(), 0) != 0) continue;
    const size_t start_dash = name.rfind('-');
    const size_t pid_dash = name.rfind('-', start_dash - 1);
    if (pid_dash == std::string::npos || pid_dash <= marker_prefix().size()) continue;
    const long pid = std::strtol(name.c_str() + pid_dash + 1, nullptr, 10);
    if (start_time(pid) != name.substr(start_dash + 1)) fs::remove(entry.path(), ec);
  }
}

}  // namespace

std::string error_marker_path() {
  const std::string job = job_id();
  const long launcher = static_cast<long>(::getppid());
  if (job.empty() || !is_launcher(launcher)) return "";
  const std::string started = start_time(launcher);
  if (started.empty()) return "";
  return fmt::format("{}/{}{}-{}-{}", marker_dir(), marker_prefix(), job, launcher, started);
}

bool claim_error_report() {
  return claim_error_marker(error_marker_path());
}

bool claim_error_marker(const std::string& path) {
  if (path.empty()) return true;
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
    remove_stale_markers(fs::path(path).parent_path().string());
    return true;
  }
  // Another process of the job created it first; any other failure: print rather than lose it.
  return errno != EEXIST;
}

}  // namespace ptrain
