// The ptrain command line (launcher/ptrain_commands.h), the output-directory rule
// (core/file_util.h), the once-per-job error report (launcher/error_report.h) and the wording
// helper (core/logging.h).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "launcher/error_report.h"
#include "launcher/ptrain_commands.h"
#include "test_support.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;
using ::ptrain::testing::fresh_dir;

// Runs `cli` over `args` (argv[0] first); stderr and stdout as the command line printed them.
struct CliRun {
  int code = -1;
  std::string out, err;
};

CliRun run_cli(CommandLine& cli, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  CliRun run;
  run.code = cli.run(static_cast<int>(args.size()), argv.data());
  run.out = ::testing::internal::GetCapturedStdout();
  run.err = ::testing::internal::GetCapturedStderr();
  return run;
}

// A command line with one command of each kind and one path flag on each.
struct TestCommands {
  CommandLine cli{"test"};
  std::string path;
  int64_t count = 3;
  bool ran = false;
  TestCommands() {
    CLI::App* one = cli.add_command("one", "A one-process command", [this] {
      ran = true;
      return 0;
    });
    add_path_option(one, "--out", path, "Output directory", PathKind::kDirectory);
    one->add_option("--count", count, "A count");
    cli.add_job_command("job", "A job command", ConfigArgument::kOptional, JobRecord::kNone,
                        [](RankSession&, const ResolvedConfig&) { return 0; });
  }
};

TEST(CommandLine, UnknownCommandIsNamedAndTheCommandsListed) {
  TestCommands t;
  CliRun run = run_cli(t.cli, {"ptrain", "jbo"});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find("unknown command 'jbo'; did you mean 'job'?; the commands are: one, job"),
            std::string::npos)
      << run.err;
  EXPECT_EQ(run.err.find("A subcommand is required"), std::string::npos) << run.err;
  run = run_cli(t.cli, {"ptrain"});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find("the commands are: one, job"), std::string::npos) << run.err;
}

TEST(CommandLine, EmptyPathIsAUsageErrorNamingTheFlag) {
  TestCommands t;
  CliRun run = run_cli(t.cli, {"ptrain", "one", "--out", ""});
  EXPECT_EQ(run.code, 2);
  EXPECT_FALSE(t.ran);
  EXPECT_NE(run.err.find("--out: expected a path, got an empty string"), std::string::npos)
      << run.err;
  // The job config's path too, before any rank session (nothing written, MPI not started).
  run = run_cli(t.cli, {"ptrain", "job", "--config", ""});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find("--config: expected a path, got an empty string"), std::string::npos)
      << run.err;
}

TEST(CommandLine, PathOfTheWrongKindIsAUsageError) {
  TestCommands t;
  const fs::path dir = fresh_dir();
  std::ofstream(dir / "file") << "x";
  CliRun run = run_cli(t.cli, {"ptrain", "one", "--out", (dir / "file").string()});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find("is not a directory"), std::string::npos) << run.err;
  run = run_cli(t.cli, {"ptrain", "job", "--config", dir.string()});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find("is a directory; expected a file"), std::string::npos) << run.err;
}

TEST(CommandLine, EveryCommandTakesLogLevelAndChecksIt) {
  TestCommands t;
  CliRun run = run_cli(t.cli, {"ptrain", "one", "--log-level", "debug"});
  EXPECT_EQ(run.code, 0) << run.err;
  EXPECT_TRUE(t.ran);
  run = run_cli(t.cli, {"ptrain", "one", "--log-level", "loud"});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find("unknown log level 'loud'"), std::string::npos) << run.err;
}

TEST(CommandLine, HelpShowsDefaults) {
  TestCommands t;
  CliRun run = run_cli(t.cli, {"ptrain", "one", "--help"});
  EXPECT_EQ(run.code, 0);
  EXPECT_NE(run.out.find("--count INT=3 "), std::string::npos) << run.out;
}

TEST(CommandLine, VersionNamesTheBuild) {
  TestCommands t;
  CliRun run = run_cli(t.cli, {"ptrain", "--version"});
  EXPECT_EQ(run.code, 0);
  for (const char* line :
       {"ptrain ", "\ngit commit: ", "\nlibtorch: ", "\nMPI: ", "\nNCCL: ", "\nCUDA: "})
    EXPECT_NE(run.out.find(line), std::string::npos) << line << " in " << run.out;
}

TEST(OutputDirectory, NewDirectoryIsCreatedAndRemovedUnlessKept) {
  const fs::path dir = fresh_dir();
  {
    OutputDirectory out((dir / "a/b").string(), false, "--out");
    EXPECT_TRUE(fs::is_directory(dir / "a/b"));
  }
  EXPECT_FALSE(fs::exists(dir / "a")) << "a failed command left its output directory behind";
  {
    OutputDirectory out((dir / "a/b").string(), false, "--out");
    out.keep();
  }
  EXPECT_TRUE(fs::is_directory(dir / "a/b"));
  OutputDirectory again((dir / "a/b").string(), false, "--out");  // empty: fine
}

TEST(OutputDirectory, NonEmptyDirectoryNeedsForceAndAFileIsRefused) {
  const fs::path dir = fresh_dir();
  std::ofstream(dir / "model.safetensors") << "weights";
  try {
    OutputDirectory out(dir.string(), false, "init-model: --out");
    FAIL() << "a non-empty directory was accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("init-model: --out '" + dir.string() +
                                         "' exists and is not empty (pass --force"),
              std::string::npos)
        << e.what();
  }
  { OutputDirectory forced(dir.string(), true, "--out"); }
  EXPECT_TRUE(fs::exists(dir / "model.safetensors")) << "an existing directory was removed";
  EXPECT_THROW(OutputDirectory((dir / "model.safetensors").string(), true, "--out"), UserError);
  EXPECT_THROW(OutputDirectory("", false, "--out"), UserError);
}

TEST(OutputDirectory, UnwritablePlaceIsAUserError) {
  // /proc refuses new directories even to root: bad input (exit 2), not a runtime failure.
  try {
    OutputDirectory out("/proc/ptrain-test/out", false, "export: --out");
    FAIL() << "/proc accepted a directory";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot create the directory"), std::string::npos)
        << e.what();
  }
}

TEST(ErrorReport, FirstClaimOfAMarkerPrintsLaterOnesStaySilent) {
  // This process was not started by a launcher (its parent is ctest or a shell): it always prints.
  EXPECT_EQ(error_marker_path(), "");
  EXPECT_TRUE(claim_error_report());
  EXPECT_TRUE(claim_error_report());
  const std::string marker = (fresh_dir() / "ptrain-error-job").string();
  EXPECT_TRUE(claim_error_marker(marker));
  EXPECT_FALSE(claim_error_marker(marker));
  EXPECT_FALSE(claim_error_marker(marker));
  // A marker that cannot be created (no such directory): print rather than lose the error.
  EXPECT_TRUE(claim_error_marker((fresh_dir() / "missing/marker").string()));
  EXPECT_TRUE(claim_error_marker(""));
}

TEST(Wording, CountedNouns) {
  EXPECT_EQ(counted(1, "row"), "1 row");
  EXPECT_EQ(counted(0, "row"), "0 rows");
  EXPECT_EQ(counted(3, "thread"), "3 threads");
  EXPECT_EQ(counted(2, "sample use"), "2 sample uses");
  EXPECT_EQ(counted(2, "child", "children"), "2 children");
}

// A job command that asks for the full record (as `train` will) gets its log file and, when it
// calls record_config(), config.resolved.yaml headed by the hash validate-config computes. MPI
// starts here (a singleton) and is finalised by the session: the only session of this binary.
TEST(JobRecord, RecordedConfigCarriesTheValidatedHash) {
  const fs::path dir = fresh_dir();
  std::ofstream(dir / "job.yaml") << "output_dir: " << (dir / "out").string() << "\n";
  const std::string hash = load_config((dir / "job.yaml").string(), {}).hash;
  CommandLine cli("test");
  cli.add_job_command("record", "Records its config", ConfigArgument::kRequired,
                      JobRecord::kLogsAndConfig, [](RankSession& session, const ResolvedConfig&) {
                        session.record_config();
                        return 0;
                      });
  CliRun run = run_cli(cli, {"ptrain", "record", "--config", (dir / "job.yaml").string()});
  ASSERT_EQ(run.code, 0) << run.err;
  std::ifstream resolved(dir / "out/config.resolved.yaml");
  std::string header;
  std::getline(resolved, header);
  EXPECT_NE(header.find("hash " + hash), std::string::npos) << header << " vs " << hash;
  EXPECT_TRUE(fs::exists(dir / "out/logs/rank-0.log"));
}

}  // namespace
}  // namespace ptrain
