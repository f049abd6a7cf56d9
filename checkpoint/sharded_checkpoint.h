// Sharded checkpoints on disk: the directory layout, the two-phase commit, and what makes a
// directory a checkpoint (ARCHITECTURE.md, "Checkpoints"; docs/checkpoints.md). This file knows
// bytes, files and the manifest's envelope; what the ranks put in them is trainer/checkpointer.h.
//
//   <root>/step-S.tmp/          a save in progress: never loaded, removed at the next start
//     rank-R.safetensors        phase 1: every rank writes its file (fsynced, renamed into place)
//     adapter/...               (LoRA) rank 0's extra files
//     manifest.json             phase 2: rank 0, after every rank reported its file's size and
//                               checksum: the manifest (fsynced), then step-S.tmp renamed to step-S
//                               and the root fsynced
//   <root>/step-S/              committed
//
// A directory is a checkpoint when its name is step-S, its manifest.json is a manifest of this
// format for step S, and every file it lists has the listed size and XXH3-64 checksum. A crash at
// any point leaves either step-S whole or no step-S (at most a step-S.tmp).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ptrain {

constexpr const char* kCheckpointFormat = "ptrain-checkpoint";
constexpr int kCheckpointFormatVersion = 1;
constexpr const char* kManifestFile = "manifest.json";

// A file of a checkpoint: its path relative to the checkpoint directory, size and XXH3-64.
struct CheckpointFile {
  std::string name;
  uint64_t bytes = 0;
  std::string xxh3;
};
void to_json(nlohmann::json& out, const CheckpointFile& file);

std::string checkpoint_name(int64_t step);                         // "step-S"
std::string staging_dir(const std::string& root, int64_t step);    // <root>/step-S.tmp
std::string committed_dir(const std::string& root, int64_t step);  // <root>/step-S
// "rank-R.safetensors": the file rank R writes.
std::string rank_file_name(int rank);

// Size and checksum of `dir`/`name`, read back (for small files only the committing rank wrote).
CheckpointFile describe_file(const std::string& dir, const std::string& name);

// Phase 2 (one rank, after every file is written and reported): adds the envelope ("format",
// "format_version", "step", "files") to `manifest`, writes it into the staging directory and
// publishes the directory as <root>/step-S. Returns that path. RuntimeFailure naming the path
// when the system refuses before the rename (the staging directory stays, to be removed); an
// existing step-S is one too (nothing is ever overwritten). Once the rename is done the checkpoint
// is committed: a failing fsync of the root after it is not an error (the rename stands).
std::string commit_checkpoint(const std::string& root, int64_t step, nlohmann::json manifest,
                              const std::vector<CheckpointFile>& files);

struct CheckpointManifest {
  std::string dir;
  int64_t step = 0;
  std::vector<CheckpointFile> files;
  nlohmann::json json;  // the whole manifest
};

// Reads `dir`/manifest.json and checks its envelope. CorruptData naming the file and what is
// wrong: missing, not JSON (a truncated write), another format, a newer format version, a step
// that disagrees with the directory's name, a malformed file list or a file outside the directory;
// and a directory that is not committed (step-S.tmp, step-S.removing, step-S.rejected...), whatever
// it holds.
CheckpointManifest read_manifest(const std::string& dir);

// What is wrong with `expected`, a file `manifest` lists, when `checksum(path)` reads it: ""
// when it is present, of its size, and `checksum` (which may throw ptrain::Error, e.g. reading
// and loading the file on the same pass) returns its XXH3-64; else the problem, naming the file.
std::string check_file(const CheckpointManifest& manifest, const CheckpointFile& expected,
                       const std::function<std::string(const std::string& path)>& checksum);

// Checks listed file `index`: present, of its size, with its checksum. "" when it is, else the
// problem, naming the file ("rank-1.safetensors: checksum 3c2e... does not match the manifest's
// 91a0..."). Reads the whole file.
std::string verify_file(const CheckpointManifest& manifest, size_t index);

// Every listed file; CorruptData naming the checkpoint and the first bad file.
void verify_checkpoint(const CheckpointManifest& manifest);

struct CommittedCheckpoint {
  int64_t step = 0;
  std::string dir;
};
// The directories under `root` named step-S that hold a manifest.json, newest first (not
// verified). An absent root has none.
std::vector<CommittedCheckpoint> committed_checkpoints(const std::string& root);

// Removes what crashed saves and removals left under `root` (step-S.tmp, step-S.removing); returns
// their paths. Directories set aside (step-S.rejected*) stay.
std::vector<std::string> remove_leftovers(const std::string& root);

// Sets committed checkpoint `dir` aside as <dir>.rejected (or .rejected-2, -3, ... when taken):
// no longer a checkpoint, kept to look at. Returns the new path.
std::string set_aside(const std::string& dir);

// Removes the committed checkpoints but the newest `keep_last` (0: keeps all). Each is first
// renamed to step-S.removing, so a crash midway never leaves a half-removed step-S. Returns the
// removed paths.
std::vector<std::string> prune_checkpoints(const std::string& root, int64_t keep_last);

}  // namespace ptrain
