// Unit tests for the job config: schema, loader errors, --set overrides, relations between keys,
// the resolved YAML and its hash. Every expectation below is written by hand from the schema in
// core/config_schema.cpp and the messages in core/config.cpp.
#include "core/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/config_schema.h"
#include "core/error.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

ResolvedConfig load(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return load_config_text(yaml, "job.yaml", overrides);
}

// The message of the UserError that loading `yaml` as job.yaml throws; a test failure otherwise.
std::string load_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    load(yaml, overrides);
  } catch (const UserError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a UserError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a UserError, but this config loaded:\n" << yaml;
  return "";
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// ---------------------------------------------------------------- defaults and hash

TEST(ConfigDefaults, EmptyPathGivesDefaultJob) {
  const ResolvedConfig r = load_config("");
  const JobConfig defaults;
  EXPECT_EQ(r.source, "<defaults>");
  EXPECT_THAT(r.warnings, IsEmpty());
  EXPECT_EQ(r.job.lora_r, defaults.lora_r);
  EXPECT_EQ(r.job.learning_rate, defaults.learning_rate);
  EXPECT_EQ(r.job.output_dir, defaults.output_dir);
  EXPECT_EQ(r.job.comm.backend, defaults.comm.backend);
  // The documented defaults, written out.
  EXPECT_EQ(r.job.base_model, "");
  EXPECT_EQ(r.job.adapter, "");
  EXPECT_EQ(r.job.lora_r, 8);
  EXPECT_EQ(r.job.lora_dropout, 0.05);
  EXPECT_EQ(r.job.learning_rate, 2e-4);
  EXPECT_EQ(r.job.sequence_len, 2048);
  EXPECT_EQ(r.job.lr_scheduler, "cosine");
  EXPECT_TRUE(r.job.bf16);
  EXPECT_EQ(r.job.seed, 42);
  EXPECT_EQ(r.job.output_dir, "./outputs");
  EXPECT_THAT(r.job.datasets, IsEmpty());
  EXPECT_EQ(r.job.comm.backend, "auto");
  EXPECT_EQ(r.job.comm.collective_timeout, 600.0);
  EXPECT_EQ(r.job.logging.level, "info");
  EXPECT_EQ(r.job.logging.console, "rank0");
}

TEST(ConfigHash, IsSixteenHexDigitsAndDeterministic) {
  const ResolvedConfig a = load_config("");
  EXPECT_THAT(a.hash, MatchesRegex("[0-9a-f]{16}"));
  EXPECT_EQ(a.hash, load_config("").hash);
  EXPECT_EQ(a.hash, load("").hash);
  // Spelling out a default value is the same config as leaving it out.
  EXPECT_EQ(a.hash, load("lora_r: 8\nbf16: true\n").hash);
}

TEST(ConfigHash, DifferentValueGivesDifferentHash) {
  EXPECT_NE(load("seed: 7\n").hash, load("seed: 8\n").hash);
  EXPECT_NE(load("comm:\n  backend: mpi\n").hash, load("comm:\n  backend: nccl\n").hash);
}

TEST(ConfigHash, KeyOrderDoesNotMatter) {
  const ResolvedConfig a =
      load("seed: 7\nlora_r: 16\ncomm:\n  collective_timeout: 30\n  backend: mpi\n");
  const ResolvedConfig b =
      load("comm:\n  backend: mpi\n  collective_timeout: 30\nlora_r: 16\nseed: 7\n");
  EXPECT_EQ(a.resolved_yaml, b.resolved_yaml);
  EXPECT_EQ(a.hash, b.hash);
  // Schema order: base_model first, then lora_r ... seed, and the sections last.
  const std::string& y = a.resolved_yaml;
  EXPECT_THAT(y, StartsWith("base_model: "));
  EXPECT_LT(y.find("\nlora_r: 16"), y.find("\nseed: 7"));
  EXPECT_LT(y.find("\nseed: 7"), y.find("\ncomm:"));
  EXPECT_LT(y.find("\ncomm:"), y.find("\nlogging:"));
}

// ---------------------------------------------------------------- error paths

// A config with exactly one problem, and a piece of the message it must give.
struct ErrorCase {
  std::string name;
  std::string yaml;
  std::vector<std::string> overrides;
  std::string expected;
};

void PrintTo(const ErrorCase& c, std::ostream* os) {
  *os << c.name;
}

ErrorCase in_file(std::string name, std::string yaml, std::string expected) {
  return {std::move(name), std::move(yaml), {}, std::move(expected)};
}

ErrorCase with_set(std::string name, std::vector<std::string> overrides, std::string expected) {
  return {std::move(name), "", std::move(overrides), std::move(expected)};
}

class ConfigErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigErrorTest, MessageNamesLocationAndKey) {
  const ErrorCase& c = GetParam();
  const std::string message = load_error(c.yaml, c.overrides);
  EXPECT_THAT(message, StartsWith("invalid config (1 problem):\n  "));
  EXPECT_THAT(message, HasSubstr(c.expected));
}

const ErrorCase kErrorCases[] = {
    in_file("UnknownRootKeySuggests", "base_model: m\nlora_rr: 8\n",
            "job.yaml:2:1: unknown key 'lora_rr'; did you mean 'lora_r'?"),
    in_file("UnknownSectionKeySuggests", "comm:\n  colective_timeout: 30\n",
            "job.yaml:2:3: unknown key 'comm.colective_timeout'; "
            "did you mean 'comm.collective_timeout'?"),
    in_file("IntGivenText", "lora_r: abc\n",
            "job.yaml:1:9: key 'lora_r' expects an integer in [1, 65536], got 'abc'"),
    in_file("BoolGivenMaybe", "bf16: maybe\n",
            "job.yaml:1:7: key 'bf16' expects a boolean (true or false), got 'maybe'"),
    in_file("FloatGivenList", "learning_rate: [1, 2]\n",
            "job.yaml:1:16: key 'learning_rate' expects a number in [0, 10], got a list"),
    in_file("IntOutOfRange", "micro_batch_size: 0\n",
            "job.yaml:1:19: key 'micro_batch_size' expects an integer in [1, 65536], "
            "got '0' (out of range)"),
    in_file("FloatOutOfRange", "lora_dropout: 1.5\n",
            "job.yaml:1:15: key 'lora_dropout' expects a number in [0, 0.999], "
            "got '1.5' (out of range)"),
    in_file("EnumSuggests", "lr_scheduler: cosin\n",
            "job.yaml:1:15: key 'lr_scheduler' expects one of 'cosine', 'linear', 'constant', "
            "'constant_with_warmup', got 'cosin'; did you mean 'cosine'?"),
    in_file("SectionGivenScalar", "comm: 5\n", "job.yaml:1:1: key 'comm' is a section"),
    in_file("DuplicateKey", "seed: 1\nlora_r: 4\nseed: 2\n",
            "job.yaml:3:1: key 'seed' is given twice (first at job.yaml:1:1)"),
    in_file("RootIsAList", "- lora_r\n- seed\n",
            "job.yaml: a config file must be a mapping of keys to values"),
    in_file("DatasetMissingPath", "datasets:\n  - type: alpaca\n",
            "job.yaml:2:5: datasets[0] is missing the required key 'path'"),
    in_file("DatasetUnknownKeySuggests", "datasets:\n  - path: a.jsonl\n    typ: completion\n",
            "job.yaml:3:5: unknown key 'datasets[0].typ'; did you mean 'type'?"),
    in_file("DatasetEntryNotAMapping", "datasets:\n  - a.jsonl\n",
            "job.yaml:2:5: datasets[0] must be a mapping"),
    in_file("DatasetsNotAList", "datasets: a.jsonl\n",
            "job.yaml:1:11: key 'datasets' expects a list of dataset entries ({path, type, ...}), "
            "got 'a.jsonl'"),
    with_set("SetUnknownKeySuggests", {"lora_rr=8"},
             "--set lora_rr=8: unknown key 'lora_rr'; did you mean 'lora_r'?"),
    with_set("SetMissingEquals", {"lora_r"}, "--set lora_r: expected --set key=value"),
    with_set("SetBadType", {"lora_r=abc"},
             "--set lora_r=abc: key 'lora_r' expects an integer in [1, 65536], got 'abc'"),
    with_set("SetEmptyOutputDir", {"output_dir="},
             "--set output_dir=: 'output_dir' must not be empty"),
    in_file("QloraWithout4bit", "adapter: qlora\nlora_target_linear: true\n",
            "job.yaml:1:1: 'adapter: qlora' needs 'load_in_4bit: true'"),
    with_set("QloraWithout4bitViaSet", {"adapter=qlora", "lora_target_linear=true"},
             "--set adapter=qlora: 'adapter: qlora' needs 'load_in_4bit: true'"),
    in_file("WarmupStepsAndRatio", "warmup_steps: 10\nwarmup_ratio: 0.1\n",
            "job.yaml:2:1: 'warmup_steps' and 'warmup_ratio' are exclusive"),
    in_file("SaveStepsAndSavesPerEpoch", "save_steps: 100\nsaves_per_epoch: 2\n",
            "job.yaml:2:1: 'save_steps' and 'saves_per_epoch' are exclusive"),
    in_file("TargetLinearWithoutAdapter", "seed: 1\nlora_target_linear: true\n",
            "job.yaml:2:1: LoRA targets are set but 'adapter' is empty"),
    in_file("LoraWithoutTargets", "adapter: lora\n",
            "job.yaml:1:1: 'adapter: lora' needs 'lora_target_linear: true' or "
            "'lora_target_modules'"),
    in_file("FractionalRowCount", "val_set_size: 2.5\n",
            "job.yaml:1:1: 'val_set_size' >= 1 is a row count and must be a whole number"),
    in_file("EmptyOutputDirInFile", "output_dir: \"\"\n",
            "job.yaml:1:1: 'output_dir' must not be empty"),
    // Issue 11: `key:` with nothing after it silently kept the default.
    in_file("EmptyValue", "learning_rate:\nseed: 1\n",
            "job.yaml:1:1: learning_rate has no value; remove the key for the default or give a "
            "value"),
    in_file("EmptyValueOnTheLastLine",
            "seed: 1\nlearning_rate:", "job.yaml:2:1: learning_rate has no value"),
    in_file("EmptyValueWithAComment", "learning_rate:   # peak\n",
            "job.yaml:1:1: learning_rate has no value"),
    in_file("EmptyValueInASection", "comm:\n  backend:\n",
            "job.yaml:2:3: comm.backend has no value"),
    in_file("EmptySection", "comm:\nseed: 1\n", "job.yaml:1:1: comm has no value"),
    in_file("EmptyValueInADataset", "datasets:\n  - path: a.jsonl\n    type:\n",
            "job.yaml:3:5: datasets[0].type has no value"),
    in_file("EmptyDatasets", "datasets:\n", "job.yaml:1:1: datasets has no value"),
    // Issue 11: a second document (after `---`) was silently dropped.
    in_file("SecondDocument", "seed: 1\n---\nlora_r: 4\n",
            "job.yaml:3:1: a second YAML document starts here (after a '---' line)"),
    in_file("SecondDocumentAfterAnEmptyOne", "---\n---\nlora_r: 4\n",
            "job.yaml:3:1: a second YAML document starts here"),
    // Coordinator relations: each names the key where it was given.
    in_file("TokenAndTokenFile", "coordinator:\n  auth_token: t\n  auth_token_file: /run/t\n",
            "job.yaml:3:3: 'coordinator.auth_token' and 'coordinator.auth_token_file' are "
            "exclusive"),
    with_set("TokenAndTokenFileViaSet",
             {"coordinator.auth_token_file=/run/t", "coordinator.auth_token=t"},
             "--set coordinator.auth_token_file=/run/t: 'coordinator.auth_token' and "
             "'coordinator.auth_token_file' are exclusive"),
    in_file("TokenIsThePlaceholder", "coordinator:\n  auth_token: <redacted>\n",
            "job.yaml:2:3: 'coordinator.auth_token' is '<redacted>', the placeholder"),
    in_file("TlsKeyWithoutCert", "coordinator:\n  tls_key: server.key\n",
            "job.yaml:2:3: 'coordinator.tls_key' needs 'coordinator.tls_cert'"),
    in_file("TlsCertWithoutKey", "coordinator:\n  tls_ca: ca.pem\n  tls_cert: server.pem\n",
            "job.yaml:3:3: 'coordinator.tls_cert' needs 'coordinator.tls_key'"),
    in_file("TlsClientCaWithoutCert", "coordinator:\n  tls_client_ca: ca.pem\n",
            "job.yaml:2:3: 'coordinator.tls_client_ca' needs 'coordinator.tls_cert'"),
    in_file("TlsClientKeyWithoutCert", "coordinator:\n  tls_ca: ca.pem\n  tls_client_key: c.key\n",
            "job.yaml:3:3: 'coordinator.tls_client_key' needs 'coordinator.tls_client_cert'"),
    in_file("TlsClientCertWithoutKey", "coordinator:\n  tls_ca: ca.pem\n  tls_client_cert: c.pem\n",
            "job.yaml:3:3: 'coordinator.tls_client_cert' needs 'coordinator.tls_client_key'"),
    in_file("TlsClientCertWithoutCa",
            "coordinator:\n  tls_client_key: c.key\n  tls_client_cert: c.pem\n",
            "job.yaml:3:3: 'coordinator.tls_client_cert' needs 'coordinator.tls_ca'"),
    in_file("InProcessTlsWithoutCa", "coordinator:\n  tls_cert: s.pem\n  tls_key: s.key\n",
            "job.yaml:2:3: 'coordinator.tls_cert' with no 'coordinator.address' makes rank 0's "
            "coordinator serve TLS only: the ranks need 'coordinator.tls_ca'"),
    in_file("ListenWithoutPort", "coordinator:\n  listen: localhost\n",
            "job.yaml:2:3: 'coordinator.listen' is 'localhost': expected host:port with a port "
            "number in [0, 65535]"),
    in_file("ListenWithoutHost", "coordinator:\n  listen: \":8080\"\n",
            "job.yaml:2:3: 'coordinator.listen' is ':8080': expected host:port"),
    in_file("ListenPortTooLarge", "coordinator:\n  listen: 127.0.0.1:65536\n",
            "job.yaml:2:3: 'coordinator.listen' is '127.0.0.1:65536': expected host:port"),
    in_file("ListenIpv6WithoutBrackets", "coordinator:\n  listen: \"::1:0\"\n",
            "job.yaml:2:3: 'coordinator.listen' is '::1:0': expected host:port"),
    in_file("ListenEmptyInProcess", "coordinator:\n  listen: \"\"\n",
            "job.yaml:2:3: 'coordinator.listen' is '': expected host:port"),
    in_file("MetricsListenPortNotANumber", "coordinator:\n  metrics_listen: 0.0.0.0:http\n",
            "job.yaml:2:3: 'coordinator.metrics_listen' is '0.0.0.0:http': expected host:port "
            "with a port number in [0, 65535]"),
    in_file("MetricsListenSignedPort", "coordinator:\n  metrics_listen: 0.0.0.0:+80\n",
            "job.yaml:2:3: 'coordinator.metrics_listen' is '0.0.0.0:+80'"),
    in_file("AddressPortZero", "coordinator:\n  address: 10.0.0.1:0\n",
            "job.yaml:2:3: 'coordinator.address' is '10.0.0.1:0': expected host:port with a port "
            "number in [1, 65535]"),
    with_set("AddressWithoutPortViaSet", {"coordinator.address=coord.example"},
             "--set coordinator.address=coord.example: 'coordinator.address' is "
             "'coord.example': expected host:port"),
    in_file("HeartbeatTimeoutTwiceTheInterval",
            "coordinator:\n  heartbeat_interval: 2\n  heartbeat_timeout: 4\n",
            "job.yaml:3:3: 'coordinator.heartbeat_timeout' (4 s) must be more than twice "
            "'coordinator.heartbeat_interval' (2 s)"),
    in_file("HeartbeatIntervalAgainstTheDefaultTimeout", "coordinator:\n  heartbeat_interval: 20\n",
            "job.yaml:2:3: 'coordinator.heartbeat_timeout' (30 s) must be more than twice "
            "'coordinator.heartbeat_interval' (20 s)"),
};

INSTANTIATE_TEST_SUITE_P(Config, ConfigErrorTest, ::testing::ValuesIn(kErrorCases),
                         [](const ::testing::TestParamInfo<ErrorCase>& info) {
                           return info.param.name;
                         });

TEST(ConfigErrors, UnknownKeyFarFromAnyNameHasNoSuggestion) {
  const std::string message = load_error("qqqqqqqqqqqq: 1\n");
  EXPECT_THAT(message, HasSubstr("job.yaml:1:1: unknown key 'qqqqqqqqqqqq'"));
  EXPECT_THAT(message, Not(HasSubstr("did you mean")));
}

TEST(ConfigErrors, InvalidYamlNamesFileLineAndColumn) {
  const std::string message = load_error("lora_r: 8\nseed: 1: 2\n");
  EXPECT_THAT(message, StartsWith("job.yaml:2:8: invalid YAML"));
}

TEST(ConfigErrors, LineNumbersCountCommentsAndBlankLines) {
  const std::string yaml = R"(# a comment on line 1

lora_rr: 8
)";
  EXPECT_THAT(load_error(yaml), HasSubstr("job.yaml:3:1: unknown key 'lora_rr'"));
}

TEST(ConfigErrors, EveryProblemIsReportedInOneError) {
  const std::string yaml = R"(lora_rr: 8
bf16: maybe
comm:
  backend: gloo
micro_batch_size: 0
)";
  const std::string message = load_error(yaml, {"seed=-1"});
  EXPECT_THAT(message, StartsWith("invalid config (5 problems):\n"));
  EXPECT_THAT(message, AllOf(HasSubstr("\n  job.yaml:1:1: unknown key 'lora_rr'"),
                             HasSubstr("\n  job.yaml:2:7: key 'bf16'"),
                             HasSubstr("\n  job.yaml:4:12: key 'comm.backend'"),
                             HasSubstr("\n  job.yaml:5:19: key 'micro_batch_size'"),
                             HasSubstr("\n  --set seed=-1: key 'seed'")));
}

TEST(ConfigErrors, DatasetPathWithNoValueIsMissing) {
  // `path:` with nothing after it leaves the required path empty: that is a missing path.
  EXPECT_THAT(load_error("datasets:\n  - path:\n    type: alpaca\n"),
              HasSubstr("job.yaml:2:5: datasets[0] is missing the required key 'path'"));
}

TEST(ConfigErrors, DuplicateKeyInDatasetEntry) {
  EXPECT_THAT(load_error("datasets:\n  - path: a.jsonl\n    path: b.jsonl\n"),
              HasSubstr("job.yaml:3:5: key 'datasets[0].path' is given twice"));
}

TEST(ConfigValues, EmptyDocumentAfterTheConfigIsAccepted) {
  EXPECT_EQ(load("seed: 7\n---\n").job.seed, 7);
  EXPECT_EQ(load("---\nseed: 7\n...\n").job.seed, 7);
  EXPECT_EQ(load("seed: 7\n---\n# nothing here\n").hash, load("seed: 7\n").hash);
}

TEST(ConfigErrors, DirectoryIsNotAConfigFile) {
  // Issue 11: read as a file, a directory was empty text, i.e. the default config.
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("ptrain_config_test_dir_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  try {
    load_config(dir.string());
    ADD_FAILURE() << "loading a directory succeeded";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("'" + dir.string() + "'"), HasSubstr("is a directory")));
  }
  fs::remove_all(dir);
}

TEST(ConfigErrors, MissingFileNamesThePath) {
  const std::string path = ::testing::TempDir() + "ptrain_config_test_no_such_dir/job.yaml";
  try {
    load_config(path);
    FAIL() << "loading a missing file succeeded";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'" + path + "'"));
  }
}

TEST(ConfigErrors, CoordinatorProblemsAreReportedTogether) {
  const std::string message = load_error(
      "coordinator:\n  tls_client_ca: ca.pem\n  listen: nowhere\n  heartbeat_timeout: 1\n");
  EXPECT_THAT(message, StartsWith("invalid config (3 problems):\n"));
  EXPECT_THAT(message, AllOf(HasSubstr("job.yaml:2:3: 'coordinator.tls_client_ca'"),
                             HasSubstr("job.yaml:3:3: 'coordinator.listen'"),
                             HasSubstr("job.yaml:4:3: 'coordinator.heartbeat_timeout'")));
}

// ---------------------------------------------------------------- --set overrides

TEST(ConfigOverrides, SetsEveryScalarType) {
  const ResolvedConfig r =
      load("", {"lora_r=32", "learning_rate=1e-5", "bf16=false", "base_model=/models/llama",
                "comm.backend=mpi", "comm.collective_timeout=90", "logging.level=debug"});
  EXPECT_EQ(r.job.lora_r, 32);
  EXPECT_EQ(r.job.learning_rate, 1e-5);
  EXPECT_FALSE(r.job.bf16);
  EXPECT_EQ(r.job.base_model, "/models/llama");
  EXPECT_EQ(r.job.comm.backend, "mpi");
  EXPECT_EQ(r.job.comm.collective_timeout, 90.0);
  EXPECT_EQ(r.job.logging.level, "debug");
}

TEST(ConfigOverrides, ListsInFlowForm) {
  const ResolvedConfig r =
      load("", {"adapter=lora", "lora_target_modules=[q_proj,v_proj]",
                "datasets=[{path: a.jsonl, type: completion}, {path: b.jsonl}]"});
  EXPECT_EQ(r.job.adapter, "lora");
  EXPECT_THAT(r.job.lora_target_modules, ElementsAre("q_proj", "v_proj"));
  ASSERT_THAT(r.job.datasets, SizeIs(2));
  EXPECT_EQ(r.job.datasets[0].path, "a.jsonl");
  EXPECT_EQ(r.job.datasets[0].type, "completion");
  EXPECT_EQ(r.job.datasets[1].path, "b.jsonl");
  EXPECT_EQ(r.job.datasets[1].type, "alpaca");
  EXPECT_EQ(r.job.datasets[1].split, "train");
}

TEST(ConfigOverrides, OverrideBeatsFileAndLaterBeatsEarlier) {
  const ResolvedConfig r = load("lora_r: 4\ncomm:\n  backend: nccl\nseed: 1\n",
                                {"lora_r=16", "comm.backend=mpi", "seed=2", "seed=3"});
  EXPECT_EQ(r.job.lora_r, 16);
  EXPECT_EQ(r.job.comm.backend, "mpi");
  EXPECT_EQ(r.job.seed, 3);
  EXPECT_EQ(r.hash, load("lora_r: 16\nseed: 3\ncomm:\n  backend: mpi\n").hash);
}

// ---------------------------------------------------------------- accepted forms

TEST(ConfigValues, NullValueKeepsTheDefault) {
  // Written as a null; `key:` with nothing after it is an error (ConfigErrors.EmptyValue...).
  const ResolvedConfig r =
      load("lora_target_modules: null\nlora_r: ~\ncomm: Null\noutput_dir: NULL\n");
  EXPECT_THAT(r.job.lora_target_modules, IsEmpty());
  EXPECT_EQ(r.job.lora_r, 8);
  EXPECT_EQ(r.job.comm.backend, "auto");
  EXPECT_EQ(r.job.output_dir, "./outputs");
  EXPECT_EQ(r.hash, load_config("").hash);
}

TEST(ConfigValues, ScalarForStringListIsOneElementList) {
  const ResolvedConfig r = load("adapter: lora\nlora_target_modules: q_proj\n");
  EXPECT_THAT(r.job.lora_target_modules, ElementsAre("q_proj"));
}

TEST(ConfigValues, ValidRelationsLoad) {
  const ResolvedConfig q = load("adapter: qlora\nload_in_4bit: true\nlora_target_linear: true\n");
  EXPECT_EQ(q.job.adapter, "qlora");
  EXPECT_TRUE(q.job.load_in_4bit);
  EXPECT_EQ(load("val_set_size: 0.1\n").job.val_set_size, 0.1);
  EXPECT_EQ(load("val_set_size: 200\n").job.val_set_size, 200.0);
  // A 4-bit base without an adapter is for eval, generate and export; train refuses it itself.
  EXPECT_TRUE(load("load_in_4bit: true\n").job.load_in_4bit);
}

TEST(ConfigValues, FullCoordinatorSectionsLoad) {
  // An in-process coordinator with mTLS, a token file and metrics.
  const ResolvedConfig in_process = load(R"(coordinator:
  listen: "[::1]:0"
  job_id: j
  auth_token_file: /run/token
  tls_cert: server.pem
  tls_key: server.key
  tls_client_ca: ca.pem
  tls_ca: ca.pem
  tls_client_cert: client.pem
  tls_client_key: client.key
  metrics_listen: 0.0.0.0:9400
  heartbeat_interval: 0.5
  heartbeat_timeout: 1.01
  rpc_timeout: 2
  commit_timeout: 10
)");
  const CoordinatorConfig& c = in_process.job.coordinator;
  EXPECT_EQ(c.listen, "[::1]:0");
  EXPECT_EQ(c.tls_client_key, "client.key");
  EXPECT_EQ(c.metrics_listen, "0.0.0.0:9400");
  EXPECT_EQ(c.heartbeat_timeout, 1.01);
  // A coordinator elsewhere, reached with a token over TLS; an empty listen is then unused.
  const ResolvedConfig remote = load(R"(coordinator:
  address: coord.example:65535
  listen: ""
  auth_token: t
  tls_ca: ca.pem
  tls_cert: unused.pem
  tls_key: unused.key
)");
  EXPECT_EQ(remote.job.coordinator.address, "coord.example:65535");
  EXPECT_EQ(load("coordinator:\n  address: \"[fe80::1]:1\"\n  listen: localhost:80\n")
                .job.coordinator.listen,
            "localhost:80");
}

TEST(ConfigValues, EightBitOptimizersAreRefusedByName) {
  try {
    load("optimizer: paged_adamw_8bit\n");
    FAIL() << "paged_adamw_8bit was accepted";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("'paged_adamw_8bit' keeps 8-bit optimizer states"));
  }
  EXPECT_EQ(load("optimizer: paged_adamw_32bit\n").job.optimizer, "paged_adamw_32bit");
}

TEST(ConfigValues, IgnoredAxolotlKeysWarn) {
  const ResolvedConfig r = load("wandb_project: x\nstrict: false\nlora_r: 4\n");
  EXPECT_EQ(r.job.lora_r, 4);
  ASSERT_THAT(r.warnings, SizeIs(2));
  EXPECT_THAT(r.warnings[0], HasSubstr("job.yaml:1:1: ignoring Axolotl key 'wandb_project'"));
  EXPECT_THAT(r.warnings[1], HasSubstr("job.yaml:2:1: ignoring Axolotl key 'strict'"));
  EXPECT_EQ(r.hash, load("lora_r: 4\n").hash);
}

// ---------------------------------------------------------------- resolved YAML

TEST(ConfigResolved, RoundTripsToSameHashAndValues) {
  const std::string yaml = R"(base_model: /models/llama
adapter: lora
lora_target_modules: [q_proj, v_proj]
lora_dropout: 0.05
learning_rate: 2e-4
warmup_ratio: 0.30000000000000004
val_set_size: 0.1
datasets:
  - path: data/train.jsonl
    type: chat_template
comm:
  backend: mpi
  collective_timeout: 90.5
)";
  const ResolvedConfig a = load(yaml);
  EXPECT_THAT(a.resolved_yaml, HasSubstr("\nlearning_rate: 0.0002\n"));
  const ResolvedConfig b = load_config_text(a.resolved_yaml, "config.resolved.yaml");
  EXPECT_EQ(b.resolved_yaml, a.resolved_yaml);
  EXPECT_EQ(b.hash, a.hash);
  EXPECT_EQ(b.job.base_model, "/models/llama");
  EXPECT_EQ(b.job.adapter, "lora");
  EXPECT_EQ(b.job.learning_rate, 2e-4);
  EXPECT_EQ(b.job.lora_dropout, 0.05);
  EXPECT_EQ(b.job.warmup_ratio, 0.1 + 0.2);
  EXPECT_EQ(b.job.val_set_size, 0.1);
  EXPECT_EQ(b.job.comm.collective_timeout, 90.5);
  EXPECT_EQ(b.job.comm.backend, "mpi");
  EXPECT_THAT(b.job.lora_target_modules, ElementsAre("q_proj", "v_proj"));
  ASSERT_THAT(b.job.datasets, SizeIs(1));
  EXPECT_EQ(b.job.datasets[0].path, "data/train.jsonl");
  EXPECT_EQ(b.job.datasets[0].type, "chat_template");
  EXPECT_EQ(b.job.datasets[0].field_messages, "messages");
}

TEST(ConfigResolved, DefaultsRoundTrip) {
  const ResolvedConfig a = load_config("");
  EXPECT_EQ(load_config_text(a.resolved_yaml, "x.yaml").hash, a.hash);
}

TEST(ConfigResolved, WriteResolvedConfigWritesHashAndYaml) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("ptrain_config_test_" + std::to_string(::getpid())) / "run";
  fs::remove_all(dir.parent_path());
  const ResolvedConfig r = load("seed: 7\n");
  const std::string path = write_resolved_config(r, dir.string());  // creates the directory
  EXPECT_EQ(path, (dir / "config.resolved.yaml").string());
  const std::string content = read_file(path);
  EXPECT_THAT(content,
              StartsWith("# ptrain resolved config; hash " + r.hash + "; from job.yaml\n"));
  EXPECT_THAT(content, HasSubstr(r.resolved_yaml));
  // The written file is itself a config with the same hash (the header is a comment).
  EXPECT_EQ(load_config(path).hash, r.hash);

  // Rewriting replaces the file and leaves nothing else behind.
  const ResolvedConfig r2 = load("seed: 8\n");
  write_resolved_config(r2, dir.string());
  EXPECT_THAT(read_file(path), HasSubstr("hash " + r2.hash));
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename());
  EXPECT_THAT(names, ElementsAre("config.resolved.yaml"));
  fs::remove_all(dir.parent_path());
}

TEST(ConfigSecrets, TokenReachesTheJobButNotTheResolvedConfig) {
  const ResolvedConfig r = load("seed: 7\ncoordinator:\n  auth_token: s3cret\n");
  EXPECT_EQ(r.job.coordinator.auth_token, "s3cret");
  EXPECT_THAT(r.resolved_yaml, Not(HasSubstr("s3cret")));
  EXPECT_THAT(r.resolved_yaml, HasSubstr("\n  auth_token: <redacted>\n"));
  EXPECT_EQ(config_values(r).at("coordinator.auth_token"), "<redacted>");
  // Rotating the token changes nothing a run records; having one at all does.
  const ResolvedConfig rotated = load("seed: 7\ncoordinator:\n  auth_token: other\n");
  EXPECT_EQ(rotated.resolved_yaml, r.resolved_yaml);
  EXPECT_EQ(rotated.hash, r.hash);
  EXPECT_NE(load("seed: 7\n").hash, r.hash);
  // The same through --set.
  const ResolvedConfig set = load("seed: 7\n", {"coordinator.auth_token=s3cret"});
  EXPECT_EQ(set.job.coordinator.auth_token, "s3cret");
  EXPECT_EQ(set.hash, r.hash);
}

TEST(ConfigSecrets, UnsetTokenStaysEmpty) {
  const ResolvedConfig r = load_config("");
  EXPECT_THAT(r.resolved_yaml, HasSubstr("\n  auth_token: \"\"\n"));
  EXPECT_THAT(r.resolved_yaml, Not(HasSubstr("<redacted>")));
  EXPECT_EQ(config_values(r).at("coordinator.auth_token"), "\"\"");
}

TEST(ConfigSecrets, WrittenResolvedConfigHoldsNoToken) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("ptrain_config_secret_test_" + std::to_string(::getpid()));
  const ResolvedConfig r = load("coordinator:\n  auth_token: s3cret\n");
  const std::string content = read_file(write_resolved_config(r, dir.string()));
  EXPECT_THAT(content, Not(HasSubstr("s3cret")));
  EXPECT_THAT(content, HasSubstr("<redacted>"));
  fs::remove_all(dir);
}

TEST(ConfigSecrets, OnlyTheTokenIsSecretAndTheDocsSaySo) {
  const ConfigSchema& schema = ConfigSchema::instance();
  std::vector<std::string> secrets;
  for (const auto& key : schema.keys())
    if (key.secret) secrets.push_back(key.name);
  EXPECT_THAT(secrets, ElementsAre("coordinator.auth_token"));
  const std::string md = schema.markdown();
  const size_t row = md.find("\n| `coordinator.auth_token` |");
  ASSERT_NE(row, std::string::npos);
  EXPECT_THAT(md.substr(row + 1, md.find('\n', row + 1) - row - 1),
              HasSubstr("Secret: never written to outputs"));
  const size_t file_row = md.find("\n| `coordinator.auth_token_file` |");
  EXPECT_THAT(md.substr(file_row + 1, md.find('\n', file_row + 1) - file_row - 1),
              Not(HasSubstr("Secret")));
}

// ---------------------------------------------------------------- schema

TEST(NearestName, SuggestsCloseTypos) {
  const std::vector<std::string> names = {"lora_r", "lora_alpha", "seed",
                                          "comm.collective_timeout"};
  EXPECT_EQ(nearest_name("lora_rr", names), "lora_r");
  EXPECT_EQ(nearest_name("lora_a", names), "lora_r");  // closest wins: 1 edit against 4
  EXPECT_EQ(nearest_name("lora_alhpa", names), "lora_alpha");
  EXPECT_EQ(nearest_name("sed", names), "seed");
  EXPECT_EQ(nearest_name("comm.colective_timeout", names), "comm.collective_timeout");
  EXPECT_EQ(nearest_name("colective_timeout", names), "comm.collective_timeout");  // last part
}

TEST(NearestName, FarNamesGetNoSuggestion) {
  const std::vector<std::string> names = {"lora_r", "lora_alpha", "seed",
                                          "comm.collective_timeout"};
  EXPECT_EQ(nearest_name("banana", names), "");
  EXPECT_EQ(nearest_name("qqqqqqqqqqqq", names), "");
  EXPECT_EQ(nearest_name("seed", {}), "");
  // A 9-letter name tolerates 3 edits but not 4.
  EXPECT_EQ(nearest_name("abcdefghi", {"abcdefxyz"}), "abcdefxyz");
  EXPECT_EQ(nearest_name("abcdefghi", {"abcdewxyz"}), "");
}

TEST(ConfigSchema, KeysAreUniqueAndBoundToDistinctMembers) {
  const ConfigSchema& schema = ConfigSchema::instance();
  JobConfig job;
  std::set<std::string> names;
  std::set<void*> members;
  for (const auto& key : schema.keys()) {
    EXPECT_TRUE(names.insert(key.name).second) << key.name;
    EXPECT_TRUE(members.insert(key.member(job)).second) << key.name;
    EXPECT_EQ(schema.find(key.name), &key);
  }
  EXPECT_EQ(schema.find("lora_rr"), nullptr);
  EXPECT_NE(schema.find("comm.collective_timeout"), nullptr);
  EXPECT_NE(schema.find_ignored("wandb_project"), nullptr);
}

TEST(ConfigSchema, MarkdownHasARowForEveryKey) {
  const ConfigSchema& schema = ConfigSchema::instance();
  const std::string md = schema.markdown();
  for (const auto& key : schema.keys()) EXPECT_THAT(md, HasSubstr("\n| `" + key.name + "` | "));
  for (const auto& key : schema.dataset_keys())
    EXPECT_THAT(md, HasSubstr("\n| `" + key.name + "` | "));
  for (const auto& key : schema.ignored_keys())
    EXPECT_THAT(md, HasSubstr("\n- `" + key.name + "`: "));
  EXPECT_THAT(md, HasSubstr("\n| `lora_r` | integer | `8` | [1, 65536] | LoRA rank r. |\n"));
  EXPECT_THAT(md, HasSubstr("\n| `comm.backend` | string | `auto` | `auto`, `mpi`, `nccl` | "));
  EXPECT_THAT(md, HasSubstr("\n| `path` | string | required | "));
}

}  // namespace
}  // namespace ptrain
