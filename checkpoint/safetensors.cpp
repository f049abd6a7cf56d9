#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <limits>
#include <set>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"

namespace ptrain {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100000000;

struct DtypeEntry {
  StDtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeEntry kDtypes[] = {
    {StDtype::kBool, "BOOL", 1},       {StDtype::kU8, "U8", 1},
    {StDtype::kI8, "I8", 1},           {StDtype::kF8_E5M2, "F8_E5M2", 1},
    {StDtype::kF8_E4M3, "F8_E4M3", 1}, {StDtype::kI16, "I16", 2},
    {StDtype::kU16, "U16", 2},         {StDtype::kF16, "F16", 2},
    {StDtype::kBF16, "BF16", 2},       {StDtype::kI32, "I32", 4},
    {StDtype::kU32, "U32", 4},         {StDtype::kF32, "F32", 4},
    {StDtype::kF64, "F64", 8},         {StDtype::kI64, "I64", 8},
    {StDtype::kU64, "U64", 8},
};

const DtypeEntry& entry(StDtype dtype) {
  for (const auto& e : kDtypes)
    if (e.dtype == dtype) return e;
  PTRAIN_ASSERT(false, "unknown StDtype {}", static_cast<int>(dtype));
  return kDtypes[0];
}

// a * b, or false on uint64 overflow.
bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

[[noreturn]] void reject(const std::string& label, const std::string& what) {
  throw UserError(fmt::format("invalid safetensors file '{}': {}", label, what));
}

[[noreturn]] void reject_tensor(const std::string& label, const std::string& tensor,
                                const std::string& what) {
  throw UserError(
      fmt::format("invalid safetensors file '{}': tensor '{}': {}", label, tensor, what));
}

TensorInfo parse_tensor_entry(const std::string& label, const std::string& name,
                              const nlohmann::json& value) {
  if (!value.is_object())
    reject_tensor(label, name, "entry must be an object {dtype, shape, data_offsets}");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!value.contains(field)) reject_tensor(label, name, fmt::format("missing '{}'", field));
  TensorInfo info;
  info.name = name;
  const auto& dtype = value["dtype"];
  if (!dtype.is_string() || !parse_dtype(dtype.get<std::string>(), &info.dtype))
    reject_tensor(label, name,
                  dtype.is_string()
                      ? fmt::format("unknown dtype \"{}\"", dtype.get<std::string>())
                      : fmt::format("dtype must be a string, got {}", dtype.type_name()));
  const auto& shape = value["shape"];
  if (!shape.is_array()) reject_tensor(label, name, "shape must be an array of integers");
  uint64_t numel = 1;
  for (const auto& dim : shape) {
    if (!dim.is_number_unsigned())
      reject_tensor(
          label, name,
          fmt::format("shape entry {} is not a non-negative integer",
                      dim.is_primitive() ? dim.dump() : std::string("of type ") + dim.type_name()));
    uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        !checked_mul(numel, d, &numel))
      reject_tensor(label, name, "shape overflows 64-bit element count");
    info.shape.push_back(static_cast<int64_t>(d));
  }
  const auto& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    reject_tensor(label, name, "data_offsets must be [begin, end] of non-negative integers");
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  if (info.end < info.begin)
    reject_tensor(label, name,
                  fmt::format("data_offsets [{}, {}] end before begin", info.begin, info.end));
  uint64_t nbytes = 0;
  if (!checked_mul(numel, dtype_size(info.dtype), &nbytes))
    reject_tensor(label, name, "byte size overflows 64 bits");
  if (nbytes != info.end - info.begin)
    reject_tensor(
        label, name,
        fmt::format("data_offsets [{}, {}] hold {} bytes but shape x {} needs {}", info.begin,
                    info.end, info.end - info.begin, dtype_name(info.dtype), nbytes));
  return info;
}

// The header's JSON, read as parser events: one top-level value at a time is built into a small
// DOM, validated and dropped. Time and memory stay linear in the header size; nlohmann's callback
// parser is quadratic in the tensor count (it scans the whole root object after every nested value
// closes) and a DOM of the whole header costs ~600 bytes per tensor.
//
// Problems are reported as the whole-document parse reported them: invalid JSON first, then a
// duplicate name, then a root that is not an object, then the first bad entry.
class HeaderEvents {
 public:
  using json = nlohmann::json;

  HeaderEvents(const std::string& label, SafetensorsHeader& header)
      : label_(label), header_(header) {}

  // nlohmann's SAX interface.
  bool null() { return value(json(nullptr)); }
  bool boolean(bool v) { return value(json(v)); }
  bool number_integer(json::number_integer_t v) { return value(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return value(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return value(json(v)); }
  bool string(json::string_t& v) { return value(json(std::move(v))); }
  bool binary(json::binary_t&) { return value(json()); }  // JSON text has no binary values
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    if (skipping()) return true;
    if (depth_ == 1) {
      name_ = k;
      if (!names_.insert(k).second && duplicate_.empty())
        duplicate_ = fmt::format("tensor name '{}' appears twice", k);
    } else {
      if (open_.back()->contains(k) && duplicate_.empty())
        duplicate_ = fmt::format("{}: key '{}' appears twice", entry_label(), k);
      key_ = std::move(k);
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& e) {
    syntax_error_ = e.what();
    return false;
  }

  // Throws the first problem found, if any.
  void finish() const {
    if (!syntax_error_.empty())
      reject(label_, fmt::format("header is not valid UTF-8 JSON: {}", syntax_error_));
    if (!duplicate_.empty()) reject(label_, duplicate_);
    if (!root_is_object_) reject(label_, "header must be a JSON object");
    if (entry_error_) std::rethrow_exception(entry_error_);
  }

 private:
  // A valid header nests three deep (root, entry, shape or data_offsets); below that only a
  // container's kind can matter to a message, so deeper containers are kept empty.
  static constexpr int kMaxDepth = 3;

  bool skipping() const { return !root_is_object_ || skip_ > 0; }

  std::string entry_label() const {
    return name_ == "__metadata__" ? name_ : fmt::format("tensor '{}'", name_);
  }

  bool value(json v) {
    if (skipping() || depth_ == 0) return true;
    if (open_.empty()) {  // a top-level entry that is not a container
      entry_ = std::move(v);
      finish_entry();
    } else {
      add(std::move(v));
    }
    return true;
  }

  bool open(json container) {
    ++depth_;
    if (depth_ == 1) {
      root_is_object_ = container.is_object();
      return true;
    }
    if (!root_is_object_) return true;
    if (skip_ > 0) {
      ++skip_;
    } else if (open_.empty()) {
      entry_ = std::move(container);
      open_.push_back(&entry_);
    } else if (depth_ > kMaxDepth) {
      add(std::move(container));
      skip_ = 1;
    } else {
      open_.push_back(&add(std::move(container)));
    }
    return true;
  }

  bool close() {
    --depth_;
    if (!root_is_object_ || depth_ == 0) return true;
    if (skip_ > 0) {
      --skip_;
      return true;
    }
    open_.pop_back();
    if (open_.empty()) finish_entry();
    return true;
  }

  // Adds `v` to the innermost open container; the reference stays valid while that container
  // receives no other value (the parser finishes `v` first).
  json& add(json v) {
    json& parent = *open_.back();
    if (parent.is_object()) return parent[key_] = std::move(v);
    parent.push_back(std::move(v));
    return parent.back();
  }

  void finish_entry() {
    try {
      if (name_ == "__metadata__") {
        if (!entry_.is_object()) reject(label_, "__metadata__ must be an object of strings");
        for (auto m = entry_.begin(); m != entry_.end(); ++m) {
          if (!m.value().is_string())
            reject(label_, fmt::format("__metadata__ value of '{}' is not a string", m.key()));
          header_.metadata[m.key()] = m.value().get<std::string>();
        }
      } else {
        header_.tensors.push_back(parse_tensor_entry(label_, name_, entry_));
      }
    } catch (const UserError&) {
      if (!entry_error_) entry_error_ = std::current_exception();
    }
    entry_ = json();
  }

  const std::string& label_;
  SafetensorsHeader& header_;
  int depth_ = 0;                // containers open, the root included
  bool root_is_object_ = false;  // decided by the first event
  int skip_ = 0;                 // containers open below kMaxDepth
  std::string name_;             // the current top-level key
  std::string key_;              // the key of the next value in the innermost open object
  json entry_;                   // the current top-level value
  std::vector<json*> open_;      // containers of entry_ being filled, innermost last
  std::unordered_set<std::string> names_;
  std::string syntax_error_, duplicate_;
  std::exception_ptr entry_error_;
};

}  // namespace

const char* dtype_name(StDtype dtype) {
  return entry(dtype).name;
}
size_t dtype_size(StDtype dtype) {
  return entry(dtype).size;
}

bool parse_dtype(const std::string& name, StDtype* out) {
  for (const auto& e : kDtypes) {
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------- header

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t available,
                                           uint64_t file_size, const std::string& label) {
  if (file_size < 8)
    reject(label,
           fmt::format("file is {} bytes, shorter than the 8-byte header length", file_size));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian
  if (n > kMaxHeaderBytes)
    reject(label,
           fmt::format("header length {} exceeds the limit of {} bytes", n, kMaxHeaderBytes));
  if (8 + n > file_size)
    reject(label, fmt::format("header of {} bytes runs past the end of the file ({} bytes)", n,
                              file_size));
  PTRAIN_ASSERT(available >= 8 + n, "caller passed {} bytes of a {}-byte header", available, 8 + n);

  // The JSON parser stops at a NUL and skips a byte-order mark; the spec allows neither, and what
  // follows a NUL would never be validated.
  if (std::memchr(bytes + 8, 0, n) != nullptr) reject(label, "header contains a NUL byte");
  if (n >= 3 && bytes[8] == 0xEF && bytes[9] == 0xBB && bytes[10] == 0xBF)
    reject(label, "header starts with a UTF-8 byte-order mark");

  SafetensorsHeader header;
  header.data_start = 8 + n;
  HeaderEvents events(label, header);
  nlohmann::json::sax_parse(bytes + 8, bytes + 8 + n, &events);
  events.finish();

  // The tensors must tile the data buffer exactly: from 0, no holes, no overlaps, to the end.
  std::stable_sort(header.tensors.begin(), header.tensors.end(),
                   [](const TensorInfo& a, const TensorInfo& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  const uint64_t buffer = file_size - header.data_start;
  uint64_t expected = 0;
  for (const auto& t : header.tensors) {
    if (t.begin != expected)
      reject_tensor(label, t.name,
                    fmt::format("data_offsets begin at {} but the previous tensor ends at {} ({})",
                                t.begin, expected, t.begin > expected ? "a hole" : "an overlap"));
    expected = t.end;
  }
  if (expected != buffer)
    reject(label, fmt::format("tensors cover {} bytes of data but the file holds {} after the "
                              "header",
                              expected, buffer));
  return header;
}

// ---------------------------------------------------------------- reading

SafetensorsFile::SafetensorsFile(const std::string& path)
    : mapping_(std::make_shared<const MappedFile>(path)) {
  static const uint8_t kEmpty[8] = {0};
  const uint8_t* bytes = mapping_->data() ? mapping_->data() : kEmpty;
  header_ = parse_safetensors_header(bytes, mapping_->size(), mapping_->size(), path);
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  const TensorInfo* t = find(name);
  PTRAIN_CHECK(t != nullptr, "'{}' has no tensor named '{}'", path(), name);
  return *t;
}

// ---------------------------------------------------------------- writing

std::string encode_safetensors_header(const std::vector<TensorBytes>& tensors,
                                      std::map<std::string, std::string> metadata) {
  if (!metadata.count("format")) metadata["format"] = "pt";
  // ordered_json keeps tensors in the order given (their data order), metadata first.
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  root["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    PTRAIN_CHECK(t.name != "__metadata__", "a tensor cannot be named '__metadata__'");
    PTRAIN_CHECK(seen.insert(t.name).second, "tensor '{}' is written twice", t.name);
    uint64_t numel = 1, nbytes = 0;
    for (int64_t d : t.shape) {
      PTRAIN_CHECK(d >= 0, "tensor '{}' has a negative dimension", t.name);
      PTRAIN_CHECK(checked_mul(numel, static_cast<uint64_t>(d), &numel),
                   "tensor '{}': shape overflows a 64-bit element count", t.name);
    }
    PTRAIN_CHECK(checked_mul(numel, dtype_size(t.dtype), &nbytes),
                 "tensor '{}': byte size overflows 64 bits", t.name);
    PTRAIN_CHECK(nbytes == t.nbytes, "tensor '{}': {} bytes given, shape x {} needs {}", t.name,
                 t.nbytes, dtype_name(t.dtype), nbytes);
    root[t.name] = {{"dtype", dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string json = root.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + json;
}

WrittenFile write_safetensors(const std::string& path, const std::vector<TensorBytes>& tensors,
                              std::map<std::string, std::string> metadata) {
  const std::string header = encode_safetensors_header(tensors, std::move(metadata));
  AtomicFileWriter writer(path);
  writer.write(header.data(), header.size());
  std::vector<uint8_t> produced;
  for (const auto& t : tensors) {
    if (t.produce) {
      produced.resize(t.nbytes);
      t.produce(produced.data());
      writer.write(produced.data(), t.nbytes);
      std::vector<uint8_t>().swap(produced);
    } else {
      writer.write(t.data, t.nbytes);
    }
  }
  writer.commit();
  return {path, writer.bytes_written(), writer.checksum_hex()};
}

std::string stream_safetensors(const std::string& path, const TensorSink& sink, size_t piece) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw UserError(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    throw UserError(fmt::format("'{}' is not a readable regular file", path));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  Xxh3Stream hash;
  uint64_t position = 0;
  // Reads exactly `size` bytes at the current position, hashing them.
  auto read_exactly = [&](uint8_t* out, size_t size) {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::read(fd, out + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw UserError(fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
      if (n == 0)
        throw UserError(
            fmt::format("'{}' ends at byte {}, before its header says", path, position + done));
      done += static_cast<size_t>(n);
    }
    hash.update(out, size);
    position += size;
  };
  uint8_t length_bytes[8] = {};
  if (file_size >= 8) read_exactly(length_bytes, 8);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | length_bytes[i];
  std::vector<uint8_t> head(8);
  std::memcpy(head.data(), length_bytes, 8);
  if (file_size >= 8 && header_size <= kMaxHeaderBytes && 8 + header_size <= file_size) {
    head.resize(8 + header_size);
    read_exactly(head.data() + 8, header_size);
  }
  const SafetensorsHeader header =
      parse_safetensors_header(head.data(), head.size(), file_size, path);
  std::vector<uint8_t> buffer(std::max<size_t>(piece, 1));
  auto skip_to = [&](uint64_t target) {  // bytes no tensor owns (alignment) are hashed too
    while (position < target) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), target - position));
      read_exactly(buffer.data(), n);
    }
  };
  for (const TensorInfo& t : header.tensors) {
    skip_to(header.data_start + t.begin);
    for (uint64_t offset = 0; offset < t.nbytes();) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), t.nbytes() - offset));
      read_exactly(buffer.data(), n);
      sink(t, offset, buffer.data(), n);
      offset += n;
    }
  }
  skip_to(file_size);
  return hash.hex();
}

}  // namespace ptrain
