#include "checkpoint/sharded_checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "core/checksum.h"
#include "core/error.h"
#include "core/failpoint.h"
#include "core/file_util.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void corrupt(const std::string& dir, const std::string& what) {
  throw CorruptData(fmt::format("checkpoint '{}' is not valid: {}", dir, what));
}

// step-S, S a non-negative decimal without leading zeros; -1 when `name` is not one.
int64_t step_of(const std::string& name) {
  static const std::regex pattern("step-(0|[1-9][0-9]{0,17})");
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return -1;
  return std::stoll(m[1].str());
}

void remove_tree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) throw RuntimeFailure(fmt::format("cannot remove '{}': {}", path.string(), ec.message()));
}

}  // namespace

void to_json(nlohmann::json& out, const CheckpointFile& file) {
  out = nlohmann::json{{"name", file.name}, {"bytes", file.bytes}, {"xxh3", file.xxh3}};
}

std::string checkpoint_name(int64_t step) {
  return fmt::format("step-{}", step);
}

std::string staging_dir(const std::string& root, int64_t step) {
  return (fs::path(root) / (checkpoint_name(step) + ".tmp")).string();
}

std::string committed_dir(const std::string& root, int64_t step) {
  return (fs::path(root) / checkpoint_name(step)).string();
}

std::string rank_file_name(int rank) {
  return fmt::format("rank-{}.safetensors", rank);
}

CheckpointFile describe_file(const std::string& dir, const std::string& name) {
  const std::string path = (fs::path(dir) / name).string();
  std::error_code ec;
  const uint64_t bytes = fs::file_size(path, ec);
  if (ec) throw RuntimeFailure(fmt::format("cannot stat '{}': {}", path, ec.message()));
  return {name, bytes, xxh3_file_hex(path)};
}

std::string commit_checkpoint(const std::string& root, int64_t step, nlohmann::json manifest,
                              const std::vector<CheckpointFile>& files) {
  manifest["format"] = kCheckpointFormat;
  manifest["format_version"] = kCheckpointFormatVersion;
  manifest["step"] = step;
  manifest["files"] = files;
  const std::string staging = staging_dir(root, step);
  write_file_atomic((fs::path(staging) / kManifestFile).string(), manifest.dump(1) + "\n");
  // Dying here leaves a complete step-S.tmp that is still not a checkpoint.
  failpoint("checkpoint.before_publish", 0);
  const std::string target = committed_dir(root, step);
  std::error_code ec;
  if (fs::exists(target, ec))
    throw RuntimeFailure(fmt::format(
        "checkpoint '{}' already exists: a committed checkpoint is never overwritten", target));
  try {
    if (!publish_directory(staging, target))
      throw RuntimeFailure(fmt::format(
          "checkpoint '{}' already exists: a committed checkpoint is never overwritten", target));
  } catch (const RuntimeFailure&) {
    // Renamed, then an fsync of the parents failed: committed all the same.
    if (fs::exists(fs::path(target) / kManifestFile, ec) && !fs::exists(staging, ec)) return target;
    throw;
  }
  return target;
}

CheckpointManifest read_manifest(const std::string& dir) {
  const fs::path path = fs::path(dir) / kManifestFile;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) corrupt(dir, fmt::format("{} is missing", kManifestFile));
  CheckpointManifest m;
  m.dir = dir;
  try {
    m.json = nlohmann::json::parse(read_text_file(path.string()));
  } catch (const nlohmann::json::exception& e) {
    corrupt(dir, fmt::format("{} is not complete JSON ({})", kManifestFile, e.what()));
  }
  const nlohmann::json& j = m.json;
  auto field = [&](const char* key) -> const nlohmann::json& {
    if (!j.is_object() || !j.contains(key))
      corrupt(dir, fmt::format("{} has no '{}'", kManifestFile, key));
    return j.at(key);
  };
  if (!field("format").is_string() || field("format").get<std::string>() != kCheckpointFormat)
    corrupt(dir, fmt::format("{} is not a ptrain checkpoint manifest (format '{}')", kManifestFile,
                             field("format").dump()));
  const nlohmann::json& version = field("format_version");
  if (!version.is_number_integer() || version.get<int64_t>() < 1)
    corrupt(dir, fmt::format("{}: bad format_version {}", kManifestFile, version.dump()));
  if (version.get<int64_t>() > kCheckpointFormatVersion)
    corrupt(dir, fmt::format("{} has format_version {}; this ptrain reads up to {} (a newer "
                             "ptrain wrote it)",
                             kManifestFile, version.get<int64_t>(), kCheckpointFormatVersion));
  const nlohmann::json& step = field("step");
  if (!step.is_number_integer() || step.get<int64_t>() < 0)
    corrupt(dir, fmt::format("{}: bad step {}", kManifestFile, step.dump()));
  m.step = step.get<int64_t>();
  fs::path normal = fs::path(dir).lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();  // "dir/"
  const std::string base = normal.filename().string();
  const size_t dot = base.find('.');
  if (dot != std::string::npos && step_of(base.substr(0, dot)) >= 0)
    corrupt(dir, fmt::format("'{}' is not a committed checkpoint (a save that did not finish, or "
                             "one removed or set aside)",
                             base));
  const int64_t named = step_of(base);
  if (named >= 0 && named != m.step)
    corrupt(dir, fmt::format("{} is for step {}, not the directory's step {}", kManifestFile,
                             m.step, named));
  const nlohmann::json& files = field("files");
  if (!files.is_array() || files.empty())
    corrupt(dir, fmt::format("{}: 'files' must be a non-empty list", kManifestFile));
  for (const nlohmann::json& f : files) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("bytes") ||
        !f["bytes"].is_number_unsigned() || !f.contains("xxh3") || !f["xxh3"].is_string())
      corrupt(dir, fmt::format("{}: bad file entry {}", kManifestFile, f.dump()));
    const std::string name = f["name"].get<std::string>();
    const fs::path rel(name);
    if (name.empty() || rel.is_absolute() ||
        std::any_of(rel.begin(), rel.end(), [](const fs::path& p) { return p == ".."; }))
      corrupt(dir, fmt::format("{}: file '{}' is outside the checkpoint", kManifestFile, name));
    m.files.push_back({name, f["bytes"].get<uint64_t>(), f["xxh3"].get<std::string>()});
  }
  return m;
}

std::string check_file(const CheckpointManifest& manifest, const CheckpointFile& expected,
                       const std::function<std::string(const std::string& path)>& checksum) {
  const std::string path = (fs::path(manifest.dir) / expected.name).string();
  std::error_code ec;
  const uint64_t bytes = fs::file_size(path, ec);
  if (ec) return fmt::format("{}: missing ({})", expected.name, ec.message());
  if (bytes != expected.bytes)
    return fmt::format("{}: {} bytes, the manifest says {} (truncated or replaced)", expected.name,
                       bytes, expected.bytes);
  std::string actual;
  try {
    actual = checksum(path);
  } catch (const Error& e) {
    return fmt::format("{}: {}", expected.name, e.what());
  }
  if (actual != expected.xxh3)
    return fmt::format("{}: checksum {} does not match the manifest's {} (the file is damaged)",
                       expected.name, actual, expected.xxh3);
  return "";
}

std::string verify_file(const CheckpointManifest& manifest, size_t index) {
  return check_file(manifest, manifest.files.at(index), xxh3_file_hex);
}

void verify_checkpoint(const CheckpointManifest& manifest) {
  for (size_t i = 0; i < manifest.files.size(); ++i) {
    const std::string problem = verify_file(manifest, i);
    if (!problem.empty()) corrupt(manifest.dir, problem);
  }
}

std::vector<CommittedCheckpoint> committed_checkpoints(const std::string& root) {
  std::vector<CommittedCheckpoint> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
    const int64_t step = step_of(entry.path().filename().string());
    if (step < 0 || !entry.is_directory(ec)) continue;
    if (!fs::exists(entry.path() / kManifestFile, ec)) continue;
    out.push_back({step, entry.path().string()});
  }
  if (ec) throw RuntimeFailure(fmt::format("cannot list '{}': {}", root, ec.message()));
  std::sort(out.begin(), out.end(), [](const CommittedCheckpoint& a, const CommittedCheckpoint& b) {
    return a.step > b.step;
  });
  return out;
}

std::vector<std::string> remove_leftovers(const std::string& root) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return removed;
  for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
    const fs::path path = entry.path();
    const std::string ext = path.extension().string();
    if ((ext == ".tmp" || ext == ".removing") && step_of(path.stem().string()) >= 0) {
      remove_tree(path);
      removed.push_back(path.string());
    }
  }
  if (ec) throw RuntimeFailure(fmt::format("cannot list '{}': {}", root, ec.message()));
  return removed;
}

std::string set_aside(const std::string& dir) {
  std::string target = dir + ".rejected";
  for (int n = 2; fs::exists(target); ++n) target = fmt::format("{}.rejected-{}", dir, n);
  if (!publish_directory(dir, target))
    throw RuntimeFailure(fmt::format("cannot set '{}' aside: '{}' exists", dir, target));
  return target;
}

std::vector<std::string> prune_checkpoints(const std::string& root, int64_t keep_last) {
  std::vector<std::string> removed;
  if (keep_last <= 0) return removed;
  const std::vector<CommittedCheckpoint> all = committed_checkpoints(root);
  for (size_t i = static_cast<size_t>(keep_last); i < all.size(); ++i) {
    const std::string doomed = all[i].dir + ".removing";
    if (!publish_directory(all[i].dir, doomed))
      throw RuntimeFailure(fmt::format("cannot remove '{}': '{}' exists", all[i].dir, doomed));
    remove_tree(doomed);
    removed.push_back(all[i].dir);
  }
  return removed;
}

}  // namespace ptrain
