// Unit tests for safetensors reading and writing (checkpoint/safetensors.h) and sharded model
// directories (checkpoint/safetensors_model.h). Files to read are built byte by byte from the spec
// in shared/reference/FORMATS.md; files written are parsed back here independently of the reader.
#include "checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "test_support.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using ::ptrain::testing::fresh_dir;
using ::ptrain::testing::user_error;

std::string le64(uint64_t n) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  return out;
}

std::string raw(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

// A whole file per the spec: u64 LE header length, the header text, the data buffer.
std::string st_file(const std::string& json, const std::string& data = "") {
  return le64(json.size()) + json + data;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string view(const uint8_t* p, uint64_t n) {
  return std::string(reinterpret_cast<const char*>(p), n);
}

std::vector<std::string> dir_listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// ---------------------------------------------------------------- dtypes

TEST(SafetensorsDtype, AllFifteenNamesParseWithTheirSizes) {
  const struct {
    const char* name;
    StDtype dtype;
    size_t size;
  } kAll[] = {{"BOOL", StDtype::kBool, 1},       {"U8", StDtype::kU8, 1},
              {"I8", StDtype::kI8, 1},           {"F8_E5M2", StDtype::kF8_E5M2, 1},
              {"F8_E4M3", StDtype::kF8_E4M3, 1}, {"I16", StDtype::kI16, 2},
              {"U16", StDtype::kU16, 2},         {"F16", StDtype::kF16, 2},
              {"BF16", StDtype::kBF16, 2},       {"I32", StDtype::kI32, 4},
              {"U32", StDtype::kU32, 4},         {"F32", StDtype::kF32, 4},
              {"F64", StDtype::kF64, 8},         {"I64", StDtype::kI64, 8},
              {"U64", StDtype::kU64, 8}};
  for (const auto& e : kAll) {
    SCOPED_TRACE(e.name);
    StDtype parsed = e.dtype == StDtype::kBool ? StDtype::kU64 : StDtype::kBool;
    ASSERT_TRUE(parse_dtype(e.name, &parsed));
    EXPECT_EQ(parsed, e.dtype);
    EXPECT_EQ(dtype_size(e.dtype), e.size);
    EXPECT_STREQ(dtype_name(e.dtype), e.name);
  }
  StDtype unused;
  for (const char* bad : {"", "f32", "F17", "BF16 ", "FLOAT"})
    EXPECT_FALSE(parse_dtype(bad, &unused)) << bad;
}

// ---------------------------------------------------------------- reading

TEST(SafetensorsRead, HandMadeFileWithSeveralDtypes) {
  // Listed out of data order on purpose; the reader returns tensors in data order.
  std::string json = R"({"u":{"dtype":"U8","shape":[3],"data_offsets":[38,41]},)"
                     R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                     R"("__metadata__":{"format":"pt","note":"hand made \u00e9 )"
                     "\xC3\xA9"
                     R"("},)"
                     R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},)"
                     R"("s":{"dtype":"F64","shape":[],"data_offsets":[41,49]},)"
                     R"("empty":{"dtype":"F32","shape":[0,3],"data_offsets":[22,22]},)"
                     R"("i":{"dtype":"I64","shape":[2],"data_offsets":[22,38]}})";
  json.append((8 - json.size() % 8) % 8, ' ');
  const std::string w = raw({0, 0, 0x80, 0x3F, 0, 0, 0x20, 0xC0, 0, 0, 0, 0x3F, 0, 0, 0x40, 0x40});
  const std::string b = raw({0x80, 0x3F, 0x00, 0xC0, 0xC0, 0x7F});  // 1.0, -2.0, NaN
  const std::string i =
      raw({0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 8, 7, 6, 5, 4, 3, 2, 1});
  const std::string u = raw({0x00, 0x7F, 0xFF});
  const std::string s = raw({0, 0, 0, 0, 0, 0, 0xF0, 0x3F});  // 1.0
  const fs::path path = fresh_dir() / "m.safetensors";
  write_bytes(path, st_file(json, w + b + i + u + s));

  SafetensorsFile file(path.string());
  EXPECT_EQ(file.path(), path.string());
  std::vector<std::string> names;
  for (const auto& t : file.tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("w", "b", "empty", "i", "u", "s"));
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{
                                 {"format", "pt"}, {"note", "hand made \xC3\xA9 \xC3\xA9"}}));

  const struct {
    const char* name;
    StDtype dtype;
    std::vector<int64_t> shape;
    int64_t numel;
    std::string bytes;
  } kWant[] = {{"w", StDtype::kF32, {2, 2}, 4, w},      {"b", StDtype::kBF16, {3}, 3, b},
               {"empty", StDtype::kF32, {0, 3}, 0, ""}, {"i", StDtype::kI64, {2}, 2, i},
               {"u", StDtype::kU8, {3}, 3, u},          {"s", StDtype::kF64, {}, 1, s}};
  const uint8_t* map_begin = file.mapping()->data();
  const uint8_t* map_end = map_begin + file.mapping()->size();
  EXPECT_EQ(file.mapping()->size(), 8 + json.size() + 49);
  for (const auto& want : kWant) {
    SCOPED_TRACE(want.name);
    const TensorInfo& t = file.at(want.name);
    EXPECT_EQ(file.find(want.name), &t);
    EXPECT_EQ(t.dtype, want.dtype);
    EXPECT_EQ(t.shape, want.shape);
    EXPECT_EQ(t.numel(), want.numel);
    EXPECT_EQ(t.nbytes(), want.bytes.size());
    const uint8_t* p = file.bytes(t);
    EXPECT_TRUE(p >= map_begin && p + t.nbytes() <= map_end)
        << "bytes() must point into the mapping";
    EXPECT_EQ(p, map_begin + 8 + json.size() + t.begin);
    EXPECT_EQ(view(p, t.nbytes()), want.bytes);
  }
  EXPECT_EQ(file.find("missing"), nullptr);
  EXPECT_THAT(user_error([&] { file.at("missing"); }),
              AllOf(HasSubstr(path.string()), HasSubstr("missing")));

  // The shared mapping keeps the bytes alive after the file object is gone.
  std::shared_ptr<const MappedFile> mapping = file.mapping();
  const uint8_t* wp = file.bytes(file.at("w"));
  { SafetensorsFile moved = std::move(file); }
  EXPECT_EQ(view(wp, 16), w);
}

TEST(SafetensorsRead, EmptyHeaderWithoutPaddingIsValid) {
  const fs::path path = fresh_dir() / "e.safetensors";
  write_bytes(path, st_file("{}"));
  SafetensorsFile file(path.string());
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_TRUE(file.metadata().empty());
}

TEST(SafetensorsRead, MissingFileOrDirectoryIsUserError) {
  const fs::path dir = fresh_dir();
  const std::string absent = (dir / "absent.safetensors").string();
  EXPECT_THAT(user_error([&] { SafetensorsFile f(absent); }), HasSubstr(absent));
  // A directory is bad input too (e.g. an index naming "."): UserError, not a failed mmap.
  EXPECT_THAT(user_error([&] { SafetensorsFile f(dir.string()); }), HasSubstr(dir.string()));
  write_bytes(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"."}})");
  EXPECT_THAT(user_error([&] { SafetensorsModel m(dir.string()); }), HasSubstr("'a'"));
  // A path that cannot be examined (a name over 255 bytes): UserError, not a filesystem_error.
  const std::string too_long = (dir / std::string(300, 'm')).string();
  EXPECT_THAT(user_error([&] { SafetensorsModel m(too_long); }), HasSubstr(too_long));
}

struct BadFile {
  const char* case_name;
  std::string bytes;
  std::vector<std::string> expected;  // substrings of the message besides the path
};

void PrintTo(const BadFile& bad, std::ostream* os) {
  *os << bad.case_name;
}

class SafetensorsReject : public ::testing::TestWithParam<BadFile> {};

TEST_P(SafetensorsReject, UserErrorNamesFileTensorAndRule) {
  const fs::path path = fresh_dir() / "bad.safetensors";
  write_bytes(path, GetParam().bytes);
  const std::string message = user_error([&] { SafetensorsFile f(path.string()); });
  EXPECT_THAT(message, HasSubstr(path.string()));
  for (const auto& s : GetParam().expected) EXPECT_THAT(message, HasSubstr(s));
}

std::string u8_entry(const std::string& name, int begin, int end) {
  return "\"" + name + "\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(end - begin) +
         "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

const BadFile kBadFiles[] = {
    {"EmptyFile", "", {"0 bytes"}},
    {"SevenBytes", raw({2, 0, 0, 0, 0, 0, 0}), {"7 bytes"}},
    {"HeaderLengthOverLimit", le64(100000001) + "{}", {"100000001", "limit"}},
    {"HeaderLengthAtLimitPastEof", le64(100000000) + "{}", {"100000000", "past the end"}},
    {"HeaderPastEof", le64(100) + "{\"a\":1}", {"100", "past the end"}},
    {"InvalidJson", st_file(R"({"a": )"), {"JSON"}},
    {"InvalidUtf8InValue", st_file("{\"__metadata__\":{\"k\":\"\xFF\"}}"), {"UTF-8"}},
    {"InvalidUtf8InName", st_file("{\"a\xC3\x28\":{}}"), {"UTF-8"}},
    {"OffsetsNotFromZero", st_file("{" + u8_entry("a", 1, 3) + "}", "abc"), {"'a'", "hole"}},
    {"HoleBetweenTensors",
     st_file("{" + u8_entry("a", 0, 2) + "," + u8_entry("b", 3, 5) + "}", "abcde"),
     {"'b'", "hole"}},
    {"OverlappingTensors",
     st_file("{" + u8_entry("a", 0, 4) + "," + u8_entry("b", 2, 6) + "}", "abcdef"),
     {"'b'", "overlap"}},
    {"ByteSizeNotNumelTimesDtype",
     st_file(R"({"f":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", std::string(12, 'x')),
     {"'f'", "12", "16"}},
    {"ShapeOverflow",
     st_file(R"({"big":{"dtype":"U8","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})",
             std::string(16, 'x')),
     {"'big'", "overflow"}},
    {"ByteSizeOverflow",
     st_file(R"({"big":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})",
             std::string(8, 'x')),
     {"'big'", "overflow"}},
    {"NegativeDim",
     st_file(R"({"n":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})"),
     {"'n'", "-1"}},
    {"TrailingBytes", st_file("{" + u8_entry("a", 0, 2) + "}", "abc"), {"2 bytes", "3"}},
    {"TruncatedBuffer", st_file("{" + u8_entry("a", 0, 2) + "}", "a"), {"2 bytes", "1"}},
    {"DuplicateNames",
     st_file("{" + u8_entry("a", 0, 1) + "," + u8_entry("a", 0, 1) + "}", "x"),
     {"'a'", "twice"}},
    {"UnknownDtype",
     st_file(R"({"q":{"dtype":"F17","shape":[1],"data_offsets":[0,1]}})", "x"),
     {"'q'", "F17"}},
    {"RootNotObject", st_file("[1,2]"), {"object"}},
    {"EndBeforeBegin",
     st_file(R"({"r":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", "abcd"),
     {"'r'", "[4, 2]", "before"}},
    {"MissingDataOffsets",
     st_file(R"({"m":{"dtype":"U8","shape":[1]}})", "x"),
     {"'m'", "data_offsets"}},
    {"MetadataValueNotString", st_file(R"({"__metadata__":{"step":7}})"), {"__metadata__", "step"}},
};

INSTANTIATE_TEST_SUITE_P(AllRules, SafetensorsReject, ::testing::ValuesIn(kBadFiles),
                         [](const auto& info) { return std::string(info.param.case_name); });

// ---------------------------------------------------------------- writing

TEST(SafetensorsWrite, BytesFollowTheSpecAndRoundTrip) {
  const std::vector<float> f = {1.f, -2.f, 3.5f, 0.f, 1e-3f, -7.25f};
  const std::string bf = raw({0x80, 0x3F, 0x00, 0xC0, 0x49, 0x40});
  const int64_t scalar = -1234567890123;
  const std::string flags = raw({1, 0});
  const std::vector<TensorBytes> tensors = {{"layer.weight", StDtype::kF32, {2, 3}, f.data(), 24},
                                            {"layer.bias", StDtype::kBF16, {3}, bf.data(), 6},
                                            {"step", StDtype::kI64, {}, &scalar, 8},
                                            {"nothing", StDtype::kU8, {0}, nullptr, 0},
                                            {"mask", StDtype::kBool, {2}, flags.data(), 2}};
  const std::vector<std::string> payloads = {
      std::string(reinterpret_cast<const char*>(f.data()), 24), bf,
      std::string(reinterpret_cast<const char*>(&scalar), 8), "", flags};
  const fs::path dir = fresh_dir();
  const fs::path path = dir / "out.safetensors";
  write_safetensors(path.string(), tensors, {{"step", "7"}});

  // Independent parse of the bytes.
  const std::string file = read_bytes(path);
  ASSERT_GE(file.size(), 8u);
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | static_cast<uint8_t>(file[k]);
  EXPECT_EQ(n % 8, 0u) << "header must be padded to a multiple of 8";
  ASSERT_LE(8 + n, file.size());
  const std::string header = file.substr(8, n);
  const size_t json_end = header.find_last_not_of(' ') + 1;
  EXPECT_EQ(header[json_end - 1], '}');
  EXPECT_LT(n - json_end, 8u) << "padding is spaces, fewer than 8";
  const nlohmann::json root = nlohmann::json::parse(header.substr(0, json_end));
  EXPECT_EQ(root["__metadata__"], nlohmann::json({{"format", "pt"}, {"step", "7"}}));
  EXPECT_EQ(root.size(), tensors.size() + 1);
  uint64_t offset = 0;
  const uint64_t data_start = 8 + n;
  EXPECT_EQ(data_start % 8, 0u);
  for (size_t k = 0; k < tensors.size(); ++k) {
    SCOPED_TRACE(tensors[k].name);
    const auto& entry = root.at(tensors[k].name);
    EXPECT_EQ(entry.at("dtype"), dtype_name(tensors[k].dtype));
    EXPECT_EQ(entry.at("shape").get<std::vector<int64_t>>(), tensors[k].shape);
    const uint64_t size = payloads[k].size();
    EXPECT_EQ(entry.at("data_offsets"), nlohmann::json({offset, offset + size}));
    EXPECT_EQ(file.substr(data_start + offset, size), payloads[k]);
    offset += size;
  }
  EXPECT_EQ(file.size(), data_start + offset) << "the buffer ends at the end of the file";
  EXPECT_EQ(file.substr(0, data_start), encode_safetensors_header(tensors, {{"step", "7"}}));

  // And through the reader.
  SafetensorsFile st(path.string());
  ASSERT_EQ(st.tensors().size(), tensors.size());
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.metadata().at("step"), "7");
  for (size_t k = 0; k < tensors.size(); ++k) {
    const TensorInfo& t = st.tensors()[k];
    EXPECT_EQ(t.name, tensors[k].name);
    EXPECT_EQ(t.dtype, tensors[k].dtype);
    EXPECT_EQ(t.shape, tensors[k].shape);
    EXPECT_EQ(view(st.bytes(t), t.nbytes()), payloads[k]);
  }
  EXPECT_THAT(dir_listing(dir), ElementsAre("out.safetensors")) << "no temporary file left";
}

TEST(SafetensorsWrite, UserFormatMetadataIsKept) {
  const fs::path path = fresh_dir() / "np.safetensors";
  const uint8_t one = 1;
  write_safetensors(path.string(), {{"x", StDtype::kU8, {1}, &one, 1}}, {{"format", "np"}});
  EXPECT_EQ(SafetensorsFile(path.string()).metadata(),
            (std::map<std::string, std::string>{{"format", "np"}}));
}

TEST(SafetensorsWrite, DuplicateNameOrWrongSizeFailsAndLeavesOldFile) {
  const fs::path dir = fresh_dir();
  const fs::path path = dir / "keep.safetensors";
  const float data[4] = {1, 2, 3, 4};
  write_safetensors(path.string(), {{"a", StDtype::kF32, {4}, data, 16}});
  const std::string before = read_bytes(path);

  EXPECT_THAT(user_error([&] {
                write_safetensors(path.string(), {{"a", StDtype::kF32, {2}, data, 8},
                                                  {"a", StDtype::kF32, {2}, data + 2, 8}});
              }),
              HasSubstr("'a'"));
  EXPECT_THAT(user_error([&] {
                write_safetensors(path.string(), {{"short", StDtype::kF32, {4}, data, 12}});
              }),
              AllOf(HasSubstr("'short'"), HasSubstr("12"), HasSubstr("16")));
  EXPECT_THAT(user_error([&] {
                write_safetensors((dir / "new.safetensors").string(),
                                  {{"b", StDtype::kBF16, {3}, data, 4}});
              }),
              HasSubstr("'b'"));
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_THAT(dir_listing(dir), ElementsAre("keep.safetensors"));
}

TEST(SafetensorsWrite, ShapeWhoseByteSizeOverflowsIsRejected) {
  // 2^62 x 8 elements wrap to 0 in 64 bits; the writer must not produce a file readers reject.
  const fs::path path = fresh_dir() / "ov.safetensors";
  EXPECT_THAT(
      user_error([&] {
        write_safetensors(path.string(), {{"ov", StDtype::kU8, {int64_t{1} << 62, 8}, nullptr, 0}});
      }),
      HasSubstr("'ov'"));
  EXPECT_FALSE(fs::exists(path));
}

// ---------------------------------------------------------------- model directories

TEST(SafetensorsModel, ShardsIndexAndReopen) {
  const fs::path dir = fresh_dir();
  std::vector<std::vector<float>> values;
  std::vector<TensorBytes> tensors;
  for (int k = 0; k < 5; ++k) values.push_back({k + 0.5f, -k * 1.f, k * 2.f, 9.f});
  for (int k = 0; k < 5; ++k)
    tensors.push_back({"t" + std::to_string(k), StDtype::kF32, {4}, values[k].data(), 16});
  // At most 32 bytes per shard, a full shard included: [t0 t1] [t2 t3] [t4].
  const auto written = write_safetensors_model(dir.string(), tensors, 32, {{"src", "test"}});
  const std::string s1 = "model-00001-of-00003.safetensors";
  const std::string s2 = "model-00002-of-00003.safetensors";
  const std::string s3 = "model-00003-of-00003.safetensors";
  const std::string idx = "model.safetensors.index.json";
  EXPECT_THAT(written, ElementsAre((dir / s1).string(), (dir / s2).string(), (dir / s3).string(),
                                   (dir / idx).string()));
  EXPECT_THAT(dir_listing(dir), ElementsAre(s1, s2, s3, idx));

  const nlohmann::json index = nlohmann::json::parse(read_bytes(dir / idx));
  EXPECT_EQ(index.at("metadata").at("total_size"), 80);
  EXPECT_EQ(index.at("weight_map"),
            nlohmann::json({{"t0", s1}, {"t1", s1}, {"t2", s2}, {"t3", s2}, {"t4", s3}}));
  // Each shard holds exactly its tensors (read with the reader tested above).
  const std::vector<std::vector<std::string>> per_shard = {{"t0", "t1"}, {"t2", "t3"}, {"t4"}};
  for (size_t s = 0; s < 3; ++s) {
    SafetensorsFile shard((dir / (s == 0 ? s1 : s == 1 ? s2 : s3)).string());
    std::vector<std::string> names;
    for (const auto& t : shard.tensors()) names.push_back(t.name);
    EXPECT_EQ(names, per_shard[s]);
    EXPECT_EQ(shard.metadata().at("src"), "test");
    EXPECT_EQ(shard.metadata().at("format"), "pt");
  }

  SafetensorsModel model(dir.string());
  EXPECT_EQ(model.file_count(), 3u);
  EXPECT_THAT(model.names(), ElementsAre("t0", "t1", "t2", "t3", "t4"));
  for (int k = 0; k < 5; ++k) {
    const auto& located = model.at("t" + std::to_string(k));
    EXPECT_EQ(located.info->shape, std::vector<int64_t>{4});
    EXPECT_EQ(view(located.bytes(), 16),
              std::string(reinterpret_cast<const char*>(values[k].data()), 16));
  }
  EXPECT_EQ(model.find("t9"), nullptr);
  EXPECT_THAT(user_error([&] { model.at("t9"); }), AllOf(HasSubstr(dir.string()), HasSubstr("t9")));
}

TEST(SafetensorsModel, OversizedTensorGetsItsOwnShard) {
  const fs::path dir = fresh_dir();
  const std::string small(8, 's'), big(48, 'b');
  write_safetensors_model(dir.string(),
                          {{"a", StDtype::kU8, {8}, small.data(), 8},
                           {"big", StDtype::kU8, {48}, big.data(), 48},
                           {"c", StDtype::kU8, {8}, small.data(), 8}},
                          16, {});
  const nlohmann::json index =
      nlohmann::json::parse(read_bytes(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index.at("metadata").at("total_size"), 64);
  EXPECT_EQ(index.at("weight_map"), nlohmann::json({{"a", "model-00001-of-00003.safetensors"},
                                                    {"big", "model-00002-of-00003.safetensors"},
                                                    {"c", "model-00003-of-00003.safetensors"}}));
  EXPECT_EQ(view(SafetensorsModel(dir.string()).at("big").bytes(), 48), big);
}

TEST(SafetensorsModel, SingleFileWriteRemovesStaleIndex) {
  const fs::path dir = fresh_dir();
  const std::string old_bytes(32, 'o'), new_bytes(32, 'n');
  const std::vector<TensorBytes> old_tensors = {{"a", StDtype::kU8, {16}, old_bytes.data(), 16},
                                                {"b", StDtype::kU8, {16}, old_bytes.data(), 16}};
  write_safetensors_model(dir.string(), old_tensors, 16, {});
  ASSERT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  const auto written = write_safetensors_model(
      dir.string(), {{"a", StDtype::kU8, {32}, new_bytes.data(), 32}}, 1 << 20, {});
  EXPECT_THAT(written, ElementsAre((dir / "model.safetensors").string()));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  SafetensorsModel model(dir.string());
  EXPECT_EQ(model.file_count(), 1u);
  EXPECT_THAT(model.names(), ElementsAre("a"));
  EXPECT_EQ(view(model.at("a").bytes(), 32), new_bytes);
}

// Hand-made shard holding U8 tensors of one byte each.
std::string one_byte_shard(const std::vector<std::string>& names) {
  std::string json = "{", data;
  for (size_t k = 0; k < names.size(); ++k) {
    json += (k ? "," : "") + u8_entry(names[k], static_cast<int>(k), static_cast<int>(k + 1));
    data += static_cast<char>('A' + k);
  }
  return st_file(json + "}", data);
}

TEST(SafetensorsModel, HandMadeShardedDirectoryOpens) {
  const fs::path dir = fresh_dir();
  write_bytes(dir / "model-00001-of-00002.safetensors", one_byte_shard({"a", "b"}));
  write_bytes(dir / "model-00002-of-00002.safetensors", one_byte_shard({"c"}));
  write_bytes(
      dir / "model.safetensors.index.json",
      R"({"metadata":{"total_size":3},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
      R"("b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
  SafetensorsModel model(dir.string());
  EXPECT_EQ(model.file_count(), 2u);
  EXPECT_EQ(view(model.at("b").bytes(), 1), "B");
  EXPECT_EQ(view(model.at("c").bytes(), 1), "A");
}

TEST(SafetensorsModel, BrokenDirectoriesAreUserErrors) {
  const fs::path root = fresh_dir();
  const std::string s1 = "model-00001-of-00002.safetensors";
  const std::string s2 = "model-00002-of-00002.safetensors";
  // An index mapping tensor a to file_a and b to file_b.
  auto index = [](const std::string& file_a, const std::string& file_b) {
    return std::make_pair(std::string("model.safetensors.index.json"),
                          R"({"metadata":{"total_size":2},"weight_map":{"a":")" + file_a +
                              R"(","b":")" + file_b + "\"}}");
  };
  auto open_error = [&](const std::string& name,
                        const std::vector<std::pair<std::string, std::string>>& files) {
    const fs::path dir = root / name;
    fs::create_directories(dir);
    for (const auto& [file, bytes] : files) write_bytes(dir / file, bytes);
    SCOPED_TRACE(name);
    return user_error([&] { SafetensorsModel m(dir.string()); });
  };

  EXPECT_THAT(open_error("absent_in_shard", {{s1, one_byte_shard({"a"})}, index(s1, s1)}),
              AllOf(HasSubstr("'b'"), HasSubstr(s1)));
  EXPECT_THAT(open_error("missing_shard", {{s1, one_byte_shard({"a"})}, index(s1, s2)}),
              AllOf(HasSubstr("'b'"), HasSubstr(s2)));
  EXPECT_THAT(
      open_error("two_shards",
                 {{s1, one_byte_shard({"a"})}, {s2, one_byte_shard({"b", "a"})}, index(s1, s2)}),
      AllOf(HasSubstr("'a'"), HasSubstr(s1), HasSubstr(s2)));
  EXPECT_THAT(open_error("no_weight_map", {{s1, one_byte_shard({"a"})},
                                           {"model.safetensors.index.json", R"({"metadata":{}})"}}),
              HasSubstr("weight_map"));
  EXPECT_THAT(open_error("bad_index_json", {{"model.safetensors.index.json", "{\"weight_map\": "}}),
              HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(open_error("empty", {}),
              AllOf(HasSubstr((root / "empty").string()), HasSubstr("model.safetensors")));
  EXPECT_THAT(open_error("bad_single", {{"model.safetensors", "short"}}),
              HasSubstr("model.safetensors"));
}

}  // namespace
}  // namespace ptrain

namespace ptrain {
namespace {

// Found in review: inputs the JSON library would otherwise accept or choke on.
TEST(SafetensorsReject, NulByteByteOrderMarkAndDeepNesting) {
  const fs::path dir = fresh_dir();
  const std::string entry = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  write_bytes(dir / "nul.safetensors", st_file(entry + std::string("\0{\xFF}", 4), "x"));
  EXPECT_THAT(user_error([&] { SafetensorsFile f((dir / "nul.safetensors").string()); }),
              HasSubstr("NUL byte"));
  write_bytes(dir / "bom.safetensors", st_file("\xEF\xBB\xBF" + entry, "x"));
  EXPECT_THAT(user_error([&] { SafetensorsFile f((dir / "bom.safetensors").string()); }),
              HasSubstr("byte-order mark"));
  // A 400 kB nest of arrays as a dtype: rejected with a message, not a stack overflow.
  const std::string nested = std::string(200000, '[') + std::string(200000, ']');
  write_bytes(dir / "deep.safetensors",
              st_file(R"({"a":{"dtype":)" + nested + R"(,"shape":[0],"data_offsets":[0,0]}})"));
  EXPECT_THAT(user_error([&] { SafetensorsFile f((dir / "deep.safetensors").string()); }),
              HasSubstr("dtype must be a string"));
}

// Issue 11: a header of many zero-size tensors took time quadratic in their number (40k: 12 s);
// a million of them (55 MB, under the 100 MB limit) must parse, well within the test's timeout.
TEST(SafetensorsRead, MillionZeroSizeTensorsParse) {
  constexpr size_t kTensors = 1000000;
  std::string json = "{";
  json.reserve(kTensors * 56);
  for (size_t i = 0; i < kTensors; ++i) {
    if (i > 0) json += ',';
    json += "\"t" + std::to_string(i) + R"(":{"dtype":"U8","shape":[0],"data_offsets":[0,0]})";
  }
  json += '}';
  ASSERT_LT(json.size(), 100000000u);
  const std::string file = st_file(json);
  const auto* bytes = reinterpret_cast<const uint8_t*>(file.data());
  const SafetensorsHeader header =
      parse_safetensors_header(bytes, file.size(), file.size(), "many.safetensors");
  ASSERT_EQ(header.tensors.size(), kTensors);
  EXPECT_EQ(header.data_start, file.size());
  std::vector<bool> seen(kTensors, false);
  for (const TensorInfo& t : header.tensors) {
    ASSERT_EQ(t.name[0], 't');
    const size_t i = std::stoul(t.name.substr(1));
    ASSERT_LT(i, kTensors);
    EXPECT_FALSE(seen[i]) << t.name;
    seen[i] = true;
    EXPECT_EQ(t.begin, 0u);
    EXPECT_EQ(t.end, 0u);
    EXPECT_EQ(t.shape, std::vector<int64_t>{0});
  }
}

// Keys repeated inside an entry or __metadata__ are ambiguous (a JSON library keeps the last);
// containers nested below any valid header's depth are rejected by their kind, not stored.
TEST(SafetensorsReject, RepeatedKeysInsideEntriesAndDeepValues) {
  auto error = [](const std::string& json, const std::string& data = "") {
    const std::string file = st_file(json, data);
    return user_error([&] {
      parse_safetensors_header(reinterpret_cast<const uint8_t*>(file.data()), file.size(),
                               file.size(), "k.safetensors");
    });
  };
  EXPECT_THAT(error(R"({"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", "x"),
              AllOf(HasSubstr("k.safetensors"), HasSubstr("tensor 'a'"), HasSubstr("'dtype'"),
                    HasSubstr("twice")));
  EXPECT_THAT(error(R"({"__metadata__":{"format":"pt","format":"np"}})"),
              AllOf(HasSubstr("__metadata__"), HasSubstr("'format'"), HasSubstr("twice")));
  EXPECT_THAT(error(R"({"a":{"dtype":"U8","shape":[[[[1]]]],"data_offsets":[0,1]}})", "x"),
              AllOf(HasSubstr("'a'"), HasSubstr("shape entry of type array")));
  // Nested deeply under a root that is not an object: the root's kind is the error.
  EXPECT_THAT(error(std::string(100000, '[') + std::string(100000, ']')),
              HasSubstr("header must be a JSON object"));
}

TEST(SafetensorsRead, TensorsOverTheMappingMayBeModifiedWithoutTouchingTheFile) {
  const fs::path dir = fresh_dir();
  const std::string bytes =
      st_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "abcd");
  write_bytes(dir / "m.safetensors", bytes);
  SafetensorsFile file((dir / "m.safetensors").string());
  uint8_t* p = const_cast<uint8_t*>(file.bytes(file.at("a")));
  p[0] = 'z';  // copy-on-write mapping: allowed, private to this process
  EXPECT_EQ(read_bytes(dir / "m.safetensors"), bytes);
}

TEST(SafetensorsModel, SingleFileAndIndexTogetherAreAmbiguousAndShardingRemovesTheSingleFile) {
  const fs::path dir = fresh_dir();
  std::vector<uint8_t> a(16, 1), b(16, 2);
  std::vector<TensorBytes> tensors = {{"a", StDtype::kU8, {16}, a.data(), 16},
                                      {"b", StDtype::kU8, {16}, b.data(), 16}};
  write_safetensors_model(dir.string(), tensors, 1 << 20, {});  // single file
  ASSERT_TRUE(fs::exists(dir / "model.safetensors"));
  write_safetensors_model(dir.string(), tensors, 16, {});  // now sharded: the single file goes
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_EQ(SafetensorsModel(dir.string()).names(), (std::vector<std::string>{"a", "b"}));
  write_bytes(dir / "model.safetensors", read_bytes(dir / "model-00001-of-00002.safetensors"));
  EXPECT_THAT(user_error([&] { SafetensorsModel m(dir.string()); }), HasSubstr("ambiguous"));
}

}  // namespace
}  // namespace ptrain
