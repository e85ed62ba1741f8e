// SafetensorsFile, Checkpoint and BindWeights on files written by hand here: every corrupt or
// inconsistent input gives a non-OK status naming the file (and the tensor, where there is
// one) instead of a crash, and valid sharded or unaligned layouts bind to the exact bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "models/safetensors.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_env.h"

namespace dserve::models {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::dserve::testing::ScratchDir;
using ::dserve::testing::TestdataPath;

// ---------------------------------------------------------------------------------------------
// A tiny safetensors reader and writer of our own (the format: 8-byte little-endian header
// length, a JSON header, then the data section the header's offsets point into).
// ---------------------------------------------------------------------------------------------

struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string LengthPrefix(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// Tensors in data-offset order.
std::vector<RawTensor> ReadSafetensors(const std::string& path) {
  const std::string file = ReadAll(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[i]);
  const Json header = Json::parse(file.substr(8, n));
  std::vector<std::pair<uint64_t, RawTensor>> sorted;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    RawTensor t;
    t.name = it.key();
    t.dtype = it.value()["dtype"].get<std::string>();
    t.shape = it.value()["shape"].get<std::vector<int64_t>>();
    const uint64_t begin = it.value()["data_offsets"][0].get<uint64_t>();
    const uint64_t end = it.value()["data_offsets"][1].get<uint64_t>();
    t.bytes = file.substr(8 + n + begin, end - begin);
    sorted.push_back({begin, std::move(t)});
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<RawTensor> out;
  for (auto& [offset, t] : sorted) out.push_back(std::move(t));
  return out;
}

// Header + data with the tensors laid out back to back in the given order; the header is
// padded with spaces so the data section starts 8-byte aligned, as real files do.
std::string SerializeSafetensors(const std::vector<RawTensor>& tensors) {
  Json header = Json::object();
  header["__metadata__"] = Json{{"format", "pt"}};
  std::string data;
  for (const RawTensor& t : tensors) {
    header[t.name] = Json{{"dtype", t.dtype},
                          {"shape", t.shape},
                          {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';
  return LengthPrefix(text.size()) + text + data;
}

// A file with a given header text and data section.
std::string RawFile(const std::string& header, const std::string& data) {
  return LengthPrefix(header.size()) + header + data;
}

std::string F32Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

void ExpectError(const absl::Status& s, const std::vector<std::string>& words) {
  ASSERT_FALSE(s.ok());
  for (const std::string& w : words) {
    EXPECT_NE(s.message().find(w), std::string::npos)
        << "message does not name '" << w << "': " << s.message();
  }
}

absl::Status OpenStatus(const std::string& path) { return SafetensorsFile::Open(path).status(); }

class ScratchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ScratchDir("loader");
    ASSERT_FALSE(dir_.empty());
  }
  // Checkpoint copies are ~13 MB each: drop them as soon as each test is done.
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Write(const std::string& name, const std::string& bytes) {
    WriteAll(Path(name), bytes);
    return Path(name);
  }

  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// SafetensorsFile
// ---------------------------------------------------------------------------------------------

using SafetensorsTest = ScratchTest;

TEST_F(SafetensorsTest, ValidFileParses) {
  const std::string path =
      Write("ok.safetensors", SerializeSafetensors({
                                  {"a", "F32", {2, 3}, F32Bytes({1, 2, 3, 4, 5, 6})},
                                  {"empty", "BF16", {0, 4}, ""},
                                  {"b", "U8", {3}, "xyz"},
                              }));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 3u);  // __metadata__ is not a tensor
  const TensorEntry* a = (*file)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->bytes, 24u);
  EXPECT_EQ(*a->file, path);
  float v[6];
  std::memcpy(v, a->data, 24);
  EXPECT_EQ(v[5], 6.0f);
  const TensorEntry* b = (*file)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b->data), 3), "xyz");
  EXPECT_EQ((*file)->Find("empty")->numel(), 0);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

TEST_F(SafetensorsTest, MissingFileIsAnError) {
  ExpectError(OpenStatus(Path("nope.safetensors")), {Path("nope.safetensors")});
}

TEST_F(SafetensorsTest, ShorterThanEightBytes) {
  for (int size : {0, 1, 7}) {
    const std::string path = Write("short" + std::to_string(size), std::string(size, '\x01'));
    ExpectError(OpenStatus(path), {path});
  }
}

TEST_F(SafetensorsTest, HeaderLengthOutsideTheFile) {
  const std::string body = "{}" + std::string(30, ' ');
  for (uint64_t len :
       {uint64_t{33}, uint64_t{1000}, uint64_t{1} << 40, ~uint64_t{0}, ~uint64_t{0} - 7}) {
    const std::string path = Write("len" + std::to_string(len), LengthPrefix(len) + body);
    ExpectError(OpenStatus(path), {path});
  }
  // Exactly the rest of the file is fine.
  const std::string path = Write("exact", LengthPrefix(body.size()) + body);
  EXPECT_TRUE(SafetensorsFile::Open(path).ok());
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  int i = 0;
  for (const char* header : {"", "{", "{\"a\": ", "not json at all", "[1, 2, 3]", "\"text\"", "42",
                             "{\"a\": {\"dtype\": \"F32\"}} trailing"}) {
    const std::string path = Write("bad" + std::to_string(i++), RawFile(header, "data"));
    ExpectError(OpenStatus(path), {path});
  }
}

TEST_F(SafetensorsTest, EntryWithoutDtypeShapeOrOffsets) {
  const std::string data(24, '\0');
  const Json good = {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}};
  int i = 0;
  for (const char* drop : {"dtype", "shape", "data_offsets"}) {
    Json entry = good;
    entry.erase(drop);
    const std::string path =
        Write("drop" + std::to_string(i++), RawFile(Json{{"my.tensor", entry}}.dump(), data));
    SCOPED_TRACE(drop);
    ExpectError(OpenStatus(path), {path, "my.tensor"});
  }
  // Present but malformed.
  std::vector<Json> malformed = {
      Json(5),
      Json{{"dtype", 7}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}},
      Json{{"dtype", "F32"}, {"shape", 6}, {"data_offsets", {0, 24}}},
      Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0}}},
      Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24, 48}}},
      Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", "0-24"}},
      Json{{"dtype", "F32"}, {"shape", {2, -3}}, {"data_offsets", {0, 24}}},
      Json{{"dtype", "F32"}, {"shape", {2, 3.5}}, {"data_offsets", {0, 24}}},
      Json{{"dtype", "F32"}, {"shape", {2, "3"}}, {"data_offsets", {0, 24}}},
      Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {-4, 24}}},
      Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24.0}}},
      Json{{"dtype", "F32"},
           {"shape", {uint64_t{1} << 40, uint64_t{1} << 40}},
           {"data_offsets", {0, 24}}},
  };
  for (const Json& entry : malformed) {
    SCOPED_TRACE(entry.dump());
    const std::string path =
        Write("malformed" + std::to_string(i++), RawFile(Json{{"my.tensor", entry}}.dump(), data));
    ExpectError(OpenStatus(path), {path, "my.tensor"});
  }
}

TEST_F(SafetensorsTest, UnknownDtype) {
  int i = 0;
  for (const char* dtype : {"F7", "float32", "bf16", "F8_E4M3FN", ""}) {
    const Json entry = {{"dtype", dtype}, {"shape", {4}}, {"data_offsets", {0, 4}}};
    const std::string path =
        Write("dtype" + std::to_string(i++), RawFile(Json{{"w.weight", entry}}.dump(), "abcd"));
    SCOPED_TRACE(dtype);
    ExpectError(OpenStatus(path), {path, "w.weight", std::string("'") + dtype + "'"});
  }
}

TEST_F(SafetensorsTest, DataOffsetsBeyondTheData) {
  const std::string good = SerializeSafetensors({
      {"first", "F32", {4}, F32Bytes({1, 2, 3, 4})},
      {"second", "F32", {8}, F32Bytes({1, 2, 3, 4, 5, 6, 7, 8})},
  });
  ASSERT_TRUE(SafetensorsFile::Open(Write("good", good)).ok());
  // Truncated files: cut inside the second tensor, at its start, and inside the first.
  for (size_t cut : {size_t{1}, size_t{4}, size_t{31}, size_t{32}, size_t{40}}) {
    const std::string path = Write("good" + std::to_string(cut), good);
    fs::resize_file(path, good.size() - cut);
    SCOPED_TRACE("cut " + std::to_string(cut));
    ExpectError(OpenStatus(path), {path, cut <= 32 ? "second" : "first"});
  }
  // Offsets past the end in an otherwise whole file; and begin > end.
  for (const Json& offsets : {Json{16, 48}, Json{100, 116}, Json{16, 0}}) {
    const Json entry = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", offsets}};
    const std::string path = Write("offsets" + offsets.dump(),
                                   RawFile(Json{{"t.x", entry}}.dump(), std::string(32, 'z')));
    ExpectError(OpenStatus(path), {path, "t.x"});
  }
}

TEST_F(SafetensorsTest, ByteCountNotMatchingShapeAndDtype) {
  struct Case {
    const char* dtype;
    std::vector<int64_t> shape;
    uint64_t bytes;
  };
  const Case cases[] = {
      {"F32", {2, 3}, 20},     {"F32", {2, 3}, 28}, {"BF16", {2, 3}, 24},
      {"F8_E4M3", {4, 4}, 32}, {"F64", {1}, 4},     {"I8", {0}, 1},
  };
  int i = 0;
  for (const Case& c : cases) {
    const Json entry = {{"dtype", c.dtype}, {"shape", c.shape}, {"data_offsets", {0, c.bytes}}};
    const std::string path = Write("count" + std::to_string(i++),
                                   RawFile(Json{{"mis.sized", entry}}.dump(), std::string(64, 0)));
    SCOPED_TRACE(entry.dump());
    ExpectError(OpenStatus(path), {path, "mis.sized"});
  }
}

// shape x dtype must be computed without wrapping: [2^31, 2^31] F32 is 2^64 bytes, which a
// 64-bit product turns into 0, so an empty data range would pass for 2^62 elements and a
// reader trusting the shape would run off the mapping.
TEST_F(SafetensorsTest, ByteCountOverflowIsRejected) {
  const uint64_t big = uint64_t{1} << 31;
  int i = 0;
  for (const char* dtype : {"F32", "F64", "I64"}) {
    const Json entry = {{"dtype", dtype}, {"shape", {big, big}}, {"data_offsets", {0, 0}}};
    const std::string path =
        Write("overflow" + std::to_string(i++), RawFile(Json{{"huge", entry}}.dump(), ""));
    SCOPED_TRACE(dtype);
    ExpectError(OpenStatus(path), {path, "huge"});
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint folders
// ---------------------------------------------------------------------------------------------

using CheckpointTest = ScratchTest;

absl::Status CheckpointStatus(const std::string& dir) {
  return Checkpoint::Open(dir, /*show_progress=*/false).status();
}

TEST_F(CheckpointTest, NeitherModelFileNorIndex) {
  ExpectError(CheckpointStatus(dir_), {dir_});
  Write("other.safetensors", SerializeSafetensors({{"a", "U8", {1}, "x"}}));
  ExpectError(CheckpointStatus(dir_), {dir_});
  ExpectError(CheckpointStatus(Path("no-such-folder")), {Path("no-such-folder")});
}

TEST_F(CheckpointTest, SingleFile) {
  Write("model.safetensors", SerializeSafetensors({{"a", "U8", {2}, "xy"}}));
  auto ckpt = Checkpoint::Open(dir_, false);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ASSERT_NE((*ckpt)->Find("a"), nullptr);
  EXPECT_EQ((*ckpt)->tensors().size(), 1u);
  auto missing = (*ckpt)->Get("b");
  ExpectError(missing.status(), {"b", dir_});
}

TEST_F(CheckpointTest, CorruptSingleFileNamesIt) {
  const std::string path = Write("model.safetensors", LengthPrefix(1000) + "{}");
  ExpectError(CheckpointStatus(dir_), {path});
}

void WriteIndex(const std::string& dir, const std::map<std::string, std::string>& weight_map) {
  Json j = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  WriteAll(dir + "/model.safetensors.index.json", j.dump(2));
}

TEST_F(CheckpointTest, ShardedFolder) {
  Write("s1.safetensors", SerializeSafetensors({{"a", "U8", {2}, "ab"}, {"b", "U8", {1}, "c"}}));
  Write("s2.safetensors", SerializeSafetensors({{"c", "U8", {3}, "def"}}));
  WriteIndex(dir_, {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}});
  auto ckpt = Checkpoint::Open(dir_, false);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->files().size(), 2u);
  ASSERT_NE((*ckpt)->Find("c"), nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*ckpt)->Find("c")->data), 3), "def");
  EXPECT_EQ(*(*ckpt)->Find("c")->file, Path("s2.safetensors"));
}

TEST_F(CheckpointTest, IndexNamingAMissingShard) {
  Write("s1.safetensors", SerializeSafetensors({{"a", "U8", {2}, "ab"}}));
  WriteIndex(dir_, {{"a", "s1.safetensors"}, {"b", "s2-missing.safetensors"}});
  ExpectError(CheckpointStatus(dir_), {"s2-missing.safetensors", dir_});
}

TEST_F(CheckpointTest, IndexPlacingATensorInAShardThatLacksIt) {
  Write("s1.safetensors", SerializeSafetensors({{"a", "U8", {2}, "ab"}}));
  Write("s2.safetensors", SerializeSafetensors({{"b", "U8", {1}, "c"}}));
  // "b" lives in s2, but the index says s1.
  WriteIndex(dir_, {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}});
  ExpectError(CheckpointStatus(dir_), {"tensor b", "s1.safetensors"});
  WriteIndex(dir_, {{"a", "s1.safetensors"}, {"ghost.weight", "s2.safetensors"}});
  ExpectError(CheckpointStatus(dir_), {"ghost.weight", "s2.safetensors"});
}

TEST_F(CheckpointTest, BadIndexFiles) {
  Write("s1.safetensors", SerializeSafetensors({{"a", "U8", {2}, "ab"}}));
  const std::string index = Path("model.safetensors.index.json");
  for (const char* text :
       {"", "not json", "[]", "{\"metadata\": {}}", "{\"weight_map\": []}",
        "{\"weight_map\": {\"a\": 1}}", "{\"weight_map\": {\"a\": \"../s1.safetensors\"}}",
        "{\"weight_map\": {\"a\": \"sub/s1.safetensors\"}}", "{\"weight_map\": {\"a\": \"\"}}",
        "{\"weight_map\": {\"a\": \"..\"}}"}) {
    SCOPED_TRACE(text);
    WriteAll(index, text);
    ExpectError(CheckpointStatus(dir_), {index});
  }
}

TEST_F(CheckpointTest, CorruptShardIsNamed) {
  Write("s1.safetensors", SerializeSafetensors({{"a", "U8", {2}, "ab"}}));
  const std::string bad = Write("s2.safetensors", RawFile("{\"b\": {\"dtype\": \"F32\"}}", ""));
  WriteIndex(dir_, {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  ExpectError(CheckpointStatus(dir_), {bad, "b"});
}

// ---------------------------------------------------------------------------------------------
// BindWeights on rewritten copies of micro-v3
// ---------------------------------------------------------------------------------------------

const std::vector<RawTensor>& MicroV3Tensors() {
  static const auto* tensors =
      new std::vector<RawTensor>(ReadSafetensors(TestdataPath("micro-v3/model.safetensors")));
  return *tensors;
}

RawTensor* FindRaw(std::vector<RawTensor>& tensors, const std::string& name) {
  for (RawTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  ADD_FAILURE() << "no tensor " << name << " in micro-v3";
  static RawTensor dummy;
  return &dummy;
}

void Drop(std::vector<RawTensor>& tensors, const std::string& name) {
  const size_t before = tensors.size();
  std::erase_if(tensors, [&](const RawTensor& t) { return t.name == name; });
  ASSERT_EQ(tensors.size(), before - 1) << name;
}

// Values of the F32 / BF16 vectors as stored, for checking their F32 conversions.
double DecodeStored(const RawTensor& t, size_t i) {
  if (t.dtype == "F32") {
    float f;
    std::memcpy(&f, t.bytes.data() + 4 * i, 4);
    return f;
  }
  EXPECT_EQ(t.dtype, "BF16") << t.name;
  uint16_t h;
  std::memcpy(&h, t.bytes.data() + 2 * i, 2);
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

class BindTest : public ScratchTest {
 protected:
  // A checkpoint folder: micro-v3's config.json, the tensors in shards (one shard per group),
  // and an index that lists exactly what was written.
  void MakeCheckpoint(const std::vector<std::vector<RawTensor>>& shards) {
    fs::copy_file(TestdataPath("micro-v3/config.json"), Path("config.json"),
                  fs::copy_options::overwrite_existing);
    std::map<std::string, std::string> weight_map;
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string name = shards.size() == 1
                                   ? "model.safetensors"
                                   : "model-0000" + std::to_string(s + 1) + "-of-0000" +
                                         std::to_string(shards.size()) + ".safetensors";
      Write(name, SerializeSafetensors(shards[s]));
      for (const RawTensor& t : shards[s]) weight_map[t.name] = name;
    }
    WriteIndex(dir_, weight_map);
  }
  void MakeCheckpoint(const std::vector<RawTensor>& tensors) {
    MakeCheckpoint(std::vector<std::vector<RawTensor>>{tensors});
  }

  // Opens and binds the folder; the checkpoint is kept for the weights' lifetime.
  absl::StatusOr<ModelWeights> Bind() {
    auto config = LoadModelConfig(dir_);
    if (!config.ok()) return config.status();
    config_ = *config;
    auto ckpt = Checkpoint::Open(dir_, false);
    if (!ckpt.ok()) return ckpt.status();
    ckpt_ = std::move(*ckpt);
    return BindWeights(config_, *ckpt_);
  }

  // Binds a copy of micro-v3 with one edit and expects an error naming the tensor and, when
  // the tensor is in the file, the file.
  void ExpectBindError(const std::function<void(std::vector<RawTensor>&)>& edit,
                       const std::string& tensor, bool names_file = true) {
    std::vector<RawTensor> tensors = MicroV3Tensors();
    edit(tensors);
    MakeCheckpoint(tensors);
    auto weights = Bind();
    std::vector<std::string> words = {tensor};
    words.push_back(names_file ? Path("model.safetensors") : dir_);
    ExpectError(weights.status(), words);
  }

  ModelConfig config_;
  std::unique_ptr<Checkpoint> ckpt_;
};

TEST_F(BindTest, MissingTensor) {
  const std::string name = "model.layers.1.mlp.experts.3.up_proj.weight";
  ExpectBindError([&](auto& t) { Drop(t, name); }, name, /*names_file=*/false);
}

TEST_F(BindTest, MissingNormAndBiasAndMtpTensors) {
  for (const std::string name :
       {"model.norm.weight", "model.layers.3.mlp.gate.e_score_correction_bias",
        "model.layers.0.self_attn.kv_a_layernorm.weight", "model.layers.4.enorm.weight",
        "model.layers.4.self_attn.q_a_proj.weight", "lm_head.weight",
        "model.layers.2.mlp.shared_experts.down_proj.weight"}) {
    SCOPED_TRACE(name);
    ExpectBindError([&](auto& t) { Drop(t, name); }, name, /*names_file=*/false);
  }
}

TEST_F(BindTest, MisShapedTensor) {
  const std::string name = "model.layers.0.self_attn.kv_b_proj.weight";
  ExpectBindError([&](auto& t) { FindRaw(t, name)->shape = {256, 256}; }, name);
  ExpectBindError([&](auto& t) { FindRaw(t, name)->shape = {512 * 128}; }, name);
  const std::string embed = "model.embed_tokens.weight";
  ExpectBindError([&](auto& t) { FindRaw(t, embed)->shape = {256, 2048}; }, embed);
  const std::string norm = "model.layers.1.input_layernorm.weight";
  ExpectBindError([&](auto& t) { FindRaw(t, norm)->shape = {16, 16}; }, norm);
  const std::string router = "model.layers.2.mlp.gate.weight";
  ExpectBindError([&](auto& t) { FindRaw(t, router)->shape = {32, 128}; }, router);
}

TEST_F(BindTest, UnsupportedProjectionDtype) {
  const std::string name = "model.layers.2.self_attn.o_proj.weight";  // FP8 -> same-size I8
  ExpectBindError([&](auto& t) { FindRaw(t, name)->dtype = "I8"; }, name);
  const std::string bf16 = "model.layers.3.mlp.gate.weight";  // BF16 -> same-size I16
  ExpectBindError([&](auto& t) { FindRaw(t, bf16)->dtype = "I16"; }, bf16);
  const std::string e5m2 = "model.layers.1.mlp.experts.0.gate_proj.weight";
  ExpectBindError([&](auto& t) { FindRaw(t, e5m2)->dtype = "F8_E5M2"; }, e5m2);
  const std::string norm = "model.norm.weight";  // vectors: BF16 -> I16
  ExpectBindError([&](auto& t) { FindRaw(t, norm)->dtype = "I16"; }, norm);
}

TEST_F(BindTest, MissingWeightScaleInv) {
  const std::string name = "model.layers.2.self_attn.q_b_proj.weight_scale_inv";
  ExpectBindError([&](auto& t) { Drop(t, name); }, name, /*names_file=*/false);
}

TEST_F(BindTest, WrongShapedWeightScaleInv) {
  const std::string name = "model.layers.2.self_attn.q_b_proj.weight_scale_inv";  // [3, 1]
  ExpectBindError([&](auto& t) { FindRaw(t, name)->shape = {1, 3}; }, name);
  ExpectBindError([&](auto& t) { FindRaw(t, name)->shape = {3}; }, name);
  ExpectBindError(
      [&](auto& t) {
        RawTensor* s = FindRaw(t, name);
        s->shape = {4, 1};
        s->bytes += std::string(4, '\0');
      },
      name);
}

TEST_F(BindTest, WrongDtypeWeightScaleInv) {
  const std::string name = "model.layers.1.mlp.experts.5.down_proj.weight_scale_inv";  // [2, 1]
  ExpectBindError(
      [&](auto& t) {
        RawTensor* s = FindRaw(t, name);
        s->dtype = "BF16";
        s->bytes.resize(4);
      },
      name);
}

// ModelWeights flattened: every bound projection and vector with its checkpoint name.
struct BoundTensors {
  std::vector<std::pair<std::string, const Weight*>> matrices;
  std::vector<std::pair<std::string, const Tensor*>> vectors;

  void Mlp(const std::string& p, const MlpWeights& m) {
    matrices.push_back({p + "gate_proj.weight", &m.gate});
    matrices.push_back({p + "up_proj.weight", &m.up});
    matrices.push_back({p + "down_proj.weight", &m.down});
  }
  void Block(const std::string& p, const BlockWeights& b) {
    vectors.push_back({p + "input_layernorm.weight", &b.input_norm});
    vectors.push_back({p + "post_attention_layernorm.weight", &b.post_attention_norm});
    const AttentionWeights& a = b.attn;
    if (!a.q_a.empty()) {
      matrices.push_back({p + "self_attn.q_a_proj.weight", &a.q_a});
      vectors.push_back({p + "self_attn.q_a_layernorm.weight", &a.q_a_norm});
      matrices.push_back({p + "self_attn.q_b_proj.weight", &a.q_b});
    } else {
      matrices.push_back({p + "self_attn.q_proj.weight", &a.q});
    }
    matrices.push_back({p + "self_attn.kv_a_proj_with_mqa.weight", &a.kv_a});
    vectors.push_back({p + "self_attn.kv_a_layernorm.weight", &a.kv_a_norm});
    matrices.push_back({p + "self_attn.kv_b_proj.weight", &a.kv_b});
    matrices.push_back({p + "self_attn.o_proj.weight", &a.o});
    if (!b.is_moe) return Mlp(p + "mlp.", b.mlp);
    matrices.push_back({p + "mlp.gate.weight", &b.moe.router});
    if (!b.moe.bias.empty())
      vectors.push_back({p + "mlp.gate.e_score_correction_bias", &b.moe.bias});
    for (size_t e = 0; e < b.moe.experts.size(); ++e) {
      Mlp(p + "mlp.experts." + std::to_string(e) + ".", b.moe.experts[e]);
    }
    if (b.moe.shared) Mlp(p + "mlp.shared_experts.", *b.moe.shared);
  }
  explicit BoundTensors(const ModelWeights& w, int layers) {
    matrices.push_back({"model.embed_tokens.weight", &w.embed});
    matrices.push_back({"lm_head.weight", &w.lm_head});
    vectors.push_back({"model.norm.weight", &w.final_norm});
    for (size_t l = 0; l < w.layers.size(); ++l) {
      Block("model.layers." + std::to_string(l) + ".", w.layers[l]);
    }
    if (w.mtp) {
      const std::string p = "model.layers." + std::to_string(layers) + ".";
      matrices.push_back({p + "embed_tokens.weight", &w.mtp->embed});
      vectors.push_back({p + "enorm.weight", &w.mtp->enorm});
      vectors.push_back({p + "hnorm.weight", &w.mtp->hnorm});
      matrices.push_back({p + "eh_proj.weight", &w.mtp->eh_proj});
      Block(p, w.mtp->block);
      vectors.push_back({p + "shared_head.norm.weight", &w.mtp->head_norm});
      matrices.push_back({p + "shared_head.head.weight", &w.mtp->head});
    }
  }
};

// Every bound tensor holds exactly the bytes (projections, scales) or values (vectors,
// converted to F32) of the checkpoint tensor of the same name, and every checkpoint tensor is
// bound to something.
void ExpectBoundExactly(const ModelWeights& w, int layers, std::vector<RawTensor> original) {
  std::map<std::string, const RawTensor*> by_name;
  for (const RawTensor& t : original) by_name[t.name] = &t;
  std::set<std::string> used;
  const BoundTensors bound(w, layers);
  for (const auto& [name, m] : bound.matrices) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(by_name.contains(name));
    const RawTensor& raw = *by_name[name];
    used.insert(name);
    ASSERT_EQ(std::string(DTypeName(m->dtype)), raw.dtype);
    ASSERT_EQ((std::vector<int64_t>{m->rows, m->cols}), raw.shape);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(m->data) % DTypeSize(m->dtype), 0u) << "unaligned";
    ASSERT_EQ(std::memcmp(m->data, raw.bytes.data(), raw.bytes.size()), 0);
    if (m->dtype != DType::kF8E4M3) continue;
    const std::string scale = name + "_scale_inv";
    ASSERT_TRUE(by_name.contains(scale));
    used.insert(scale);
    EXPECT_EQ(m->block_rows, 128);
    EXPECT_EQ(m->block_cols, 128);
    ASSERT_EQ(m->scale_rows() * m->scale_cols() * 4,
              static_cast<int64_t>(by_name[scale]->bytes.size()));
    ASSERT_EQ(std::memcmp(m->scale_inv, by_name[scale]->bytes.data(), by_name[scale]->bytes.size()),
              0);
  }
  for (const auto& [name, v] : bound.vectors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(by_name.contains(name));
    const RawTensor& raw = *by_name[name];
    used.insert(name);
    ASSERT_EQ(v->dtype(), DType::kF32);
    ASSERT_EQ(v->shape(), raw.shape);
    for (int64_t i = 0; i < v->numel(); ++i) {
      ASSERT_EQ(static_cast<double>(v->data<float>()[i]), DecodeStored(raw, i)) << i;
    }
  }
  for (const RawTensor& t : original) {
    if (t.name.find("pad") == 0) continue;
    EXPECT_TRUE(used.contains(t.name)) << t.name << " was not bound";
  }
}

TEST_F(BindTest, OriginalMicroV3Binds) {
  auto config = LoadModelConfig(TestdataPath("micro-v3"));
  ASSERT_TRUE(config.ok());
  auto ckpt = Checkpoint::Open(TestdataPath("micro-v3"), false);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto w = BindWeights(*config, **ckpt);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->layers.size(), 4u);
  EXPECT_FALSE(w->layers[0].is_moe);
  EXPECT_TRUE(w->layers[1].is_moe);
  EXPECT_EQ(w->layers[1].moe.experts.size(), 16u);
  ASSERT_TRUE(w->mtp.has_value());
  ExpectBoundExactly(*w, config->num_hidden_layers, MicroV3Tensors());
}

TEST_F(BindTest, MicroV2Binds) {
  auto config = LoadModelConfig(TestdataPath("micro-v2"));
  ASSERT_TRUE(config.ok());
  auto ckpt = Checkpoint::Open(TestdataPath("micro-v2"), false);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto w = BindWeights(*config, **ckpt);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE(w->mtp.has_value());
  EXPECT_TRUE(w->layers[0].attn.q_a.empty());
  EXPECT_FALSE(w->layers[0].attn.q.empty());
  EXPECT_TRUE(w->layers[1].moe.bias.empty());
  ExpectBoundExactly(*w, config->num_hidden_layers,
                     ReadSafetensors(TestdataPath("micro-v2/model.safetensors")));
}

TEST_F(BindTest, RewrittenCopyBindsIdentically) {
  MakeCheckpoint(MicroV3Tensors());
  auto w = Bind();
  ASSERT_TRUE(w.ok()) << w.status();
  ExpectBoundExactly(*w, config_.num_hidden_layers, MicroV3Tensors());
}

TEST_F(BindTest, ShardedCheckpointBindsTheSameBytes) {
  std::vector<RawTensor> all = MicroV3Tensors();
  // Interleave so weights and their scales often land in different shards.
  std::vector<std::vector<RawTensor>> shards(2);
  for (size_t i = 0; i < all.size(); ++i) shards[i % 2].push_back(all[i]);
  MakeCheckpoint(shards);
  auto w = Bind();
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(ckpt_->files().size(), 2u);
  EXPECT_EQ(ckpt_->tensors().size(), all.size());
  for (const RawTensor& t : all) {
    const TensorEntry* e = ckpt_->Find(t.name);
    ASSERT_NE(e, nullptr) << t.name;
    ASSERT_EQ(e->bytes, t.bytes.size());
    ASSERT_EQ(std::memcmp(e->data, t.bytes.data(), e->bytes), 0) << t.name;
  }
  ExpectBoundExactly(*w, config_.num_hidden_layers, all);
}

TEST_F(BindTest, UnalignedTensorsAreCopiedWithTheRightValues) {
  std::vector<RawTensor> tensors = MicroV3Tensors();
  // lm_head as F32 (exact: every BF16 is a float) right after a 3-byte tensor, so it starts
  // at 3 mod 4; the BF16 embedding after it starts at an odd offset.
  RawTensor lm = *FindRaw(tensors, "lm_head.weight");
  Drop(tensors, "lm_head.weight");
  std::vector<float> values(lm.bytes.size() / 2);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(DecodeStored(lm, i));
  lm.dtype = "F32";
  lm.bytes = F32Bytes(values);
  RawTensor embed = *FindRaw(tensors, "model.embed_tokens.weight");
  Drop(tensors, "model.embed_tokens.weight");
  RawTensor norm = *FindRaw(tensors, "model.norm.weight");
  Drop(tensors, "model.norm.weight");
  tensors.insert(tensors.begin(), {{"pad.bytes", "U8", {3}, "abc"}, lm, embed, norm});
  MakeCheckpoint(tensors);

  auto w = Bind();
  ASSERT_TRUE(w.ok()) << w.status();
  const TensorEntry* lm_entry = ckpt_->Find("lm_head.weight");
  const TensorEntry* embed_entry = ckpt_->Find("model.embed_tokens.weight");
  ASSERT_NE(reinterpret_cast<uintptr_t>(lm_entry->data) % 4, 0u) << "layout not unaligned";
  ASSERT_NE(reinterpret_cast<uintptr_t>(embed_entry->data) % 2, 0u) << "layout not unaligned";
  EXPECT_FALSE(w->lm_head.owned.empty());
  EXPECT_FALSE(w->embed.owned.empty());
  EXPECT_EQ(w->lm_head.dtype, DType::kF32);
  // ExpectBoundExactly checks alignment and every value against the rewritten tensors.
  ExpectBoundExactly(*w, config_.num_hidden_layers, tensors);
}

}  // namespace
}  // namespace dserve::models
