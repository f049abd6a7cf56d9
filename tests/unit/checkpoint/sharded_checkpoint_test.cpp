// Unit tests for the checkpoint directory protocol (checkpoint/sharded_checkpoint.h): the commit,
// what makes a directory a checkpoint, the scan for committed ones, leftovers and pruning; and
// the checksums recorded as files are written (core/file_util.h), against one-shot XXH3-64 of
// the bytes read back.
#include "checkpoint/sharded_checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "core/file_util.h"
#include "test_support.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;
using ::ptrain::testing::fresh_dir;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string reference_xxh3(const std::string& bytes) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(bytes.data(), bytes.size())));
  return hex;
}

std::string pattern(size_t n, unsigned seed) {
  std::string out(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : out) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

// A committed checkpoint of step `step` with two rank files, written the way ranks and rank 0 do.
std::string commit_two_ranks(const std::string& root, int64_t step) {
  fs::create_directories(staging_dir(root, step));
  std::vector<CheckpointFile> files;
  for (int r = 0; r < 2; ++r) {
    AtomicFileWriter w((fs::path(staging_dir(root, step)) / rank_file_name(r)).string());
    const std::string bytes = pattern(1000 + 10 * r, static_cast<unsigned>(step * 10 + r));
    w.write(bytes.data(), bytes.size());
    w.commit();
    files.push_back({rank_file_name(r), w.bytes_written(), w.checksum_hex()});
  }
  return commit_checkpoint(root, step, {{"world", 2}}, files);
}

TEST(AtomicFileWriter, ChecksumIsXxh3OfTheBytesWrittenAcrossPieces) {
  const fs::path dir = fresh_dir();
  // More than one 4 MiB piece, written in uneven calls.
  const std::string bytes = pattern((size_t{9} << 20) + 12345, 7);
  AtomicFileWriter w((dir / "f").string());
  w.write(bytes.data(), 1000);
  w.write(bytes.data() + 1000, bytes.size() - 1000);
  w.commit();
  EXPECT_EQ(slurp(dir / "f"), bytes);
  EXPECT_EQ(w.checksum_hex(), reference_xxh3(bytes));
  EXPECT_EQ(w.bytes_written(), bytes.size());
  EXPECT_EQ(describe_file(dir.string(), "f").xxh3, reference_xxh3(bytes));
}

TEST(ShardedCheckpoint, CommitPublishesTheStagingDirectoryWithItsManifest) {
  const std::string root = (fresh_dir() / "checkpoints").string();
  const std::string dir = commit_two_ranks(root, 7);
  EXPECT_EQ(dir, committed_dir(root, 7));
  EXPECT_TRUE(fs::is_directory(dir));
  EXPECT_FALSE(fs::exists(staging_dir(root, 7)));
  const auto manifest = nlohmann::json::parse(slurp(fs::path(dir) / "manifest.json"));
  EXPECT_EQ(manifest["format"], "ptrain-checkpoint");
  EXPECT_EQ(manifest["format_version"], 1);
  EXPECT_EQ(manifest["step"], 7);
  EXPECT_EQ(manifest["world"], 2);
  ASSERT_EQ(manifest["files"].size(), 2u);
  for (const auto& f : manifest["files"]) {
    const std::string bytes = slurp(fs::path(dir) / f["name"].get<std::string>());
    EXPECT_EQ(f["bytes"], bytes.size());
    EXPECT_EQ(f["xxh3"], reference_xxh3(bytes));
  }
  const CheckpointManifest read = read_manifest(dir);
  EXPECT_EQ(read.step, 7);
  EXPECT_EQ(read.files.size(), 2u);
  EXPECT_NO_THROW(verify_checkpoint(read));
}

TEST(ShardedCheckpoint, NeverOverwritesACommittedCheckpoint) {
  const std::string root = (fresh_dir() / "checkpoints").string();
  commit_two_ranks(root, 3);
  const std::string before = slurp(fs::path(committed_dir(root, 3)) / "manifest.json");
  try {
    commit_two_ranks(root, 3);
    FAIL() << "a second commit of step 3 succeeded";
  } catch (const RuntimeFailure& e) {
    EXPECT_THAT(e.what(), HasSubstr("already exists"));
  }
  EXPECT_EQ(slurp(fs::path(committed_dir(root, 3)) / "manifest.json"), before);
  EXPECT_NO_THROW(verify_checkpoint(read_manifest(committed_dir(root, 3))));
}

TEST(ShardedCheckpoint, DamagedFilesAreNamed) {
  const std::string root = (fresh_dir() / "checkpoints").string();
  const std::string dir = commit_two_ranks(root, 1);
  const CheckpointManifest m = read_manifest(dir);
  const fs::path rank1 = fs::path(dir) / "rank-1.safetensors";
  std::string bytes = slurp(rank1);

  bytes[bytes.size() / 2] ^= 0x10;  // one flipped bit
  spit(rank1, bytes);
  EXPECT_EQ(verify_file(m, 0), "");
  EXPECT_THAT(verify_file(m, 1), AllOf(HasSubstr("rank-1.safetensors"), HasSubstr("checksum")));
  try {
    verify_checkpoint(m);
    FAIL() << "a flipped bit passed";
  } catch (const CorruptData& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr(dir), HasSubstr("rank-1.safetensors")));
  }

  spit(rank1, bytes.substr(0, bytes.size() - 1));  // truncated
  EXPECT_THAT(verify_file(m, 1), AllOf(HasSubstr("rank-1.safetensors"), HasSubstr("bytes")));
  fs::remove(rank1);
  EXPECT_THAT(verify_file(m, 1), AllOf(HasSubstr("rank-1.safetensors"), HasSubstr("missing")));
}

TEST(ShardedCheckpoint, ManifestsThatAreNotCheckpointsAreRejected) {
  const std::string root = (fresh_dir() / "checkpoints").string();
  const std::string dir = commit_two_ranks(root, 4);
  const fs::path manifest = fs::path(dir) / "manifest.json";
  const std::string good = slurp(manifest);
  auto rejected = [&](const std::string& text, const std::string& why) {
    spit(manifest, text);
    try {
      read_manifest(dir);
      ADD_FAILURE() << "accepted: " << why;
    } catch (const CorruptData& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr(dir), HasSubstr(why)));
    }
  };
  rejected(good.substr(0, good.size() / 2), "not complete JSON");
  auto edited = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(good);
    edit(j);
    return j.dump();
  };
  rejected(edited([](auto& j) { j["format"] = "something-else"; }), "not a ptrain checkpoint");
  rejected(edited([](auto& j) { j["format_version"] = 2; }), "newer ptrain");
  rejected(edited([](auto& j) { j["step"] = 5; }), "not the directory's step 4");
  rejected(edited([](auto& j) { j["files"] = nlohmann::json::array(); }), "non-empty list");
  rejected(edited([](auto& j) { j["files"][0]["name"] = "../../etc/passwd"; }),
           "outside the checkpoint");
  rejected(edited([](auto& j) { j["files"][0].erase("xxh3"); }), "bad file entry");
  spit(manifest, good);
  for (const char* suffix : {".tmp", ".removing", ".rejected-2"}) {
    const std::string other = dir + suffix;
    fs::copy(dir, other);
    try {
      read_manifest(other);
      ADD_FAILURE() << "accepted " << other;
    } catch (const CorruptData& e) {
      EXPECT_THAT(e.what(), HasSubstr("not a committed checkpoint"));
    }
  }
  fs::remove(manifest);
  try {
    read_manifest(dir);
    ADD_FAILURE() << "accepted a directory without manifest.json";
  } catch (const CorruptData& e) {
    EXPECT_THAT(e.what(), HasSubstr("manifest.json is missing"));
  }
}

TEST(ShardedCheckpoint, CommittedCheckpointsAreNewestFirstAndOnlyCommittedOnes) {
  const fs::path base = fresh_dir();
  const std::string root = (base / "checkpoints").string();
  EXPECT_TRUE(committed_checkpoints(root).empty());  // no root yet
  for (int64_t step : {9, 10, 2}) commit_two_ranks(root, step);
  fs::create_directories(staging_dir(root, 11));        // a save in progress
  fs::create_directories(fs::path(root) / "step-12");   // no manifest
  fs::create_directories(fs::path(root) / "step-011");  // not a step name
  spit(fs::path(root) / "step-011" / "manifest.json", "{}");
  spit(fs::path(root) / "step-13", "a file, not a directory");
  const auto found = committed_checkpoints(root);
  ASSERT_EQ(found.size(), 3u);
  EXPECT_EQ(found[0].step, 10);  // numeric, not lexical, order
  EXPECT_EQ(found[1].step, 9);
  EXPECT_EQ(found[2].step, 2);
  EXPECT_EQ(found[0].dir, committed_dir(root, 10));
}

TEST(ShardedCheckpoint, LeftoversGoAndCommittedCheckpointsStay) {
  const std::string root = (fresh_dir() / "checkpoints").string();
  commit_two_ranks(root, 1);
  fs::create_directories(staging_dir(root, 2));
  spit(fs::path(staging_dir(root, 2)) / "rank-0.safetensors", "partial");
  fs::create_directories(fs::path(root) / "step-0.removing");
  fs::create_directories(fs::path(root) / "step-0.rejected");  // set aside: kept
  fs::create_directories(fs::path(root) / "notes.tmp");        // not ours: kept
  const auto removed = remove_leftovers(root);
  EXPECT_EQ(removed.size(), 2u);
  EXPECT_FALSE(fs::exists(staging_dir(root, 2)));
  EXPECT_FALSE(fs::exists(fs::path(root) / "step-0.removing"));
  EXPECT_TRUE(fs::exists(fs::path(root) / "notes.tmp"));
  EXPECT_TRUE(fs::exists(fs::path(root) / "step-0.rejected"));
  EXPECT_NO_THROW(verify_checkpoint(read_manifest(committed_dir(root, 1))));
  const std::string aside = set_aside(committed_dir(root, 1));
  EXPECT_EQ(aside, committed_dir(root, 1) + ".rejected");
  commit_two_ranks(root, 1);
  EXPECT_EQ(set_aside(committed_dir(root, 1)), committed_dir(root, 1) + ".rejected-2");
  EXPECT_TRUE(committed_checkpoints(root).empty());
}

TEST(ShardedCheckpoint, PruneKeepsTheNewest) {
  const std::string root = (fresh_dir() / "checkpoints").string();
  for (int64_t step : {2, 4, 6, 8}) commit_two_ranks(root, step);
  EXPECT_TRUE(prune_checkpoints(root, 0).empty());  // 0: keep all
  EXPECT_EQ(committed_checkpoints(root).size(), 4u);
  const auto removed = prune_checkpoints(root, 2);
  EXPECT_EQ(removed.size(), 2u);
  const auto left = committed_checkpoints(root);
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0].step, 8);
  EXPECT_EQ(left[1].step, 6);
  for (const auto& entry : fs::directory_iterator(root))
    EXPECT_EQ(entry.path().extension(), "") << entry.path();  // no .removing left
}

TEST(ModelFingerprint, FollowsContentNotLocation) {
  const fs::path base = fresh_dir();
  const fs::path a = base / "a";
  fs::create_directories(a);
  std::vector<float> values(40000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
  write_safetensors((a / "model.safetensors").string(),
                    {{"w", StDtype::kF32, {200, 200}, values.data(), values.size() * 4, {}}});
  spit(a / "config.json", R"({"hidden_size": 200})");
  const std::string original = model_fingerprint(a.string());
  EXPECT_EQ(original.size(), 16u);

  const fs::path b = base / "b";
  fs::copy(a, b);
  EXPECT_EQ(model_fingerprint(b.string()), original);  // a copy is the same model

  spit(b / "config.json", R"({"hidden_size": 201})");
  EXPECT_NE(model_fingerprint(b.string()), original);
  spit(b / "config.json", R"({"hidden_size": 200})");
  EXPECT_EQ(model_fingerprint(b.string()), original);

  values[0] = 1.0f;  // another value at a sampled place (the start of the data)
  write_safetensors((b / "model.safetensors").string(),
                    {{"w", StDtype::kF32, {200, 200}, values.data(), values.size() * 4, {}}});
  EXPECT_NE(model_fingerprint(b.string()), original);
}

}  // namespace
}  // namespace ptrain
