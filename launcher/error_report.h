// Printing a user error once per job instead of once per rank.
//
// When every rank of a job meets the same bad input (a missing model, a bad data row), each would
// print the same line: 64 of them at mpirun -np 64. The ranks cannot agree through MPI on the
// error path (some may be blocked in a collective, some have not initialised MPI yet), so they
// agree through the filesystem: the first process of the job on this host to create the job's
// marker file (open with O_CREAT | O_EXCL) prints, the others stay silent (run_guarded() leaves
// the ending of the job to the one that printed). Only the ranks a launcher started directly take
// part (the parent process is mpirun, orted, prterun, prted, slurmstepd, hydra_pmi_proxy, ...):
// commands a script runs one after the other share its job id and its pid, and each must print.
// The job is named by its launcher: PMIX_NAMESPACE (Open MPI 4+, PRRTE, Slurm with PMIx), else
// OMPI_MCA_ess_base_jobid or OMPI_MCA_orte_ess_jobid (Open MPI), else SLURM_JOB_ID and
// SLURM_STEP_ID; the marker's name adds the uid and the launcher process (its pid and start time),
// so a job id that a later job reuses never silences that job. Markers live in /dev/shm (else
// /tmp); a claim removes the markers whose launcher process has ended. Any other process, or one
// that cannot create the marker, prints, as before. With several hosts, each host prints once.
#pragma once

#include <string>

namespace ptrain {

// Whether this process is the one to print a user error of its job: true for the first process
// of the job on this host to ask, and for a process that belongs to no launched job.
bool claim_error_report();

// The path of this job's marker file, or "" when this process is not a rank a launcher started.
std::string error_marker_path();

// claim_error_report() for the marker at `path`: true when this call created it, when `path` is
// "" (no job to agree with), or when it cannot be created for any reason but another process
// having created it first.
bool claim_error_marker(const std::string& path);

}  // namespace ptrain
