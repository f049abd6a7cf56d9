// Small filesystem helpers whose failure modes matter (partial files, lost writes).
#pragma once

#include <string>

namespace ptrain {

// Reads a whole file; UserError naming the path and the OS reason when it cannot.
std::string read_text_file(const std::string& path);

// Writes `bytes` to `path` so that a reader sees either the old file or the complete new one:
// write to "<path>.tmp.<pid>", fsync it, rename over `path`, fsync the directory. Creates missing
// parent directories. RuntimeFailure naming the path and the failing call otherwise.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace ptrain
