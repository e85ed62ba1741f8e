// `make-model` presets: the layout of what the generator writes (names, dtypes, shapes,
// config, tokenizer), its determinism, and the engine's forward pass on each preset against
// the float64 reference implementation of tests/support (not the production kernels).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "models/deepseek_model.h"
#include "models/greedy_decode.h"
#include "models/model_generator.h"
#include "models/presets.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"
#include "tests/support/compare.h"
#include "tests/support/reference_model.h"
#include "tests/support/test_env.h"

namespace dserve::models {
namespace {

namespace fs = std::filesystem;
using testing::RelError;
constexpr uint64_t kSeed = 7;
constexpr double kLogitTolerance = 1e-3;  // max |ours - ref| / max |ref|, as for testdata

// Checkpoints generated once per test binary, shared by every test.
const std::string& PresetDir(const std::string& preset) {
  static std::map<std::string, std::string> dirs;
  auto it = dirs.find(preset);
  if (it != dirs.end()) return it->second;
  GenerateOptions o;
  o.preset = preset;
  o.seed = kSeed;
  o.out_dir = testing::ScratchDir(preset) + "/model";
  o.show_progress = false;
  const absl::Status s = GenerateModel(o);
  EXPECT_TRUE(s.ok()) << s << " (scripts/setup.sh fetches the tokenizer the generator copies)";
  return dirs[preset] = o.out_dir;
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A prompt with ids from all over the vocabulary, the high end included.
std::vector<int32_t> Prompt(int64_t vocab) {
  std::vector<int32_t> t = {0};
  uint32_t x = 2024;
  for (int i = 0; i < 15; ++i) {
    x = x * 1103515245u + 12345u;
    t.push_back(static_cast<int32_t>((x >> 4) % vocab));
  }
  t.push_back(static_cast<int32_t>(vocab - 1));
  return t;
}

class PresetTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PresetTest, LayoutMatchesPublishedCheckpoints) {
  const std::string& dir = PresetDir(GetParam());
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  const ModelConfig& c = *config;
  auto ckpt = Checkpoint::Open(dir, false);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_GT((*ckpt)->files().size(), 1u) << "tiny presets are written in several shards";
  EXPECT_EQ(ReadFile(fs::path(dir) / "tokenizer.json"),
            ReadFile(fs::path(DefaultTokenizerDir()) / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir + "/tokenizer_config.json"));
  EXPECT_EQ(c.vocab_size, 129280);

  const bool fp8 = GetParam() == "tiny-v3";
  EXPECT_EQ(c.fp8, fp8);
  const std::string mtp = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  // The dtype DeepSeek-V3's release gives each tensor.
  auto expected_dtype = [&](const std::string& name) -> DType {
    if (name.ends_with("_scale_inv") || name.ends_with("e_score_correction_bias")) {
      return DType::kF32;
    }
    const bool block_projection = name.find(".self_attn.") != std::string::npos &&
                                  name.find("layernorm") == std::string::npos;
    const bool mlp_projection = name.find(".mlp.") != std::string::npos &&
                                name.ends_with("proj.weight");
    if (fp8 && (block_projection || mlp_projection)) return DType::kF8E4M3;
    return DType::kBF16;  // embeddings, norms, router, heads, eh_proj; everything in BF16 presets
  };
  int fp8_count = 0;
  for (const auto& [name, e] : (*ckpt)->tensors()) {
    EXPECT_EQ(e->dtype, expected_dtype(name)) << name;
    if (e->dtype == DType::kF8E4M3) {
      ++fp8_count;
      const TensorEntry* s = (*ckpt)->Find(name + "_scale_inv");
      ASSERT_NE(s, nullptr) << name;
      EXPECT_EQ(s->shape, (std::vector<int64_t>{(e->shape[0] + 127) / 128,
                                                (e->shape[1] + 127) / 128}))
          << name;
    }
  }
  if (fp8) {
    EXPECT_GT(fp8_count, 0);
  }
  // The real names of the V3 layout, MTP layer included.
  for (const std::string& name :
       {std::string("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"),
        std::string("model.layers.1.mlp.experts.15.gate_proj.weight"),
        std::string("lm_head.weight"), std::string("model.norm.weight")}) {
    EXPECT_NE((*ckpt)->Find(name), nullptr) << name;
  }
  if (c.is_v3()) {
    for (const char* suffix : {"enorm.weight", "hnorm.weight", "eh_proj.weight",
                               "embed_tokens.weight", "shared_head.norm.weight",
                               "shared_head.head.weight", "mlp.gate.e_score_correction_bias"}) {
      EXPECT_NE((*ckpt)->Find(mtp + suffix), nullptr) << mtp + suffix;
    }
    EXPECT_NE((*ckpt)->Find("model.layers.1.self_attn.q_a_proj.weight"), nullptr);
  } else {
    EXPECT_EQ(c.q_lora_rank, 0);
    EXPECT_NE((*ckpt)->Find("model.layers.1.self_attn.q_proj.weight"), nullptr);
    EXPECT_EQ((*ckpt)->Find(mtp + "eh_proj.weight"), nullptr);
  }
}

TEST_P(PresetTest, SameSeedSameBytesOtherSeedOtherBytes) {
  const std::string& dir = PresetDir(GetParam());
  const std::string again = testing::ScratchDir("again");
  for (uint64_t seed : {kSeed, kSeed + 1}) {
    GenerateOptions o;
    o.preset = GetParam();
    o.seed = seed;
    o.out_dir = again + "/" + std::to_string(seed);
    o.show_progress = false;
    ASSERT_TRUE(GenerateModel(o).ok());
    // Every file of the checkpoint, byte for byte.
    bool same = true;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const fs::path other = fs::path(o.out_dir) / entry.path().filename();
      ASSERT_TRUE(fs::exists(other)) << other;
      same = same && ReadFile(entry.path()) == ReadFile(other);
    }
    EXPECT_EQ(same, seed == kSeed) << "seed " << seed;
  }
}

TEST_P(PresetTest, ForwardAndGreedyMatchFloat64Reference) {
  const std::string& dir = PresetDir(GetParam());
  kernels::cpu::CpuOps ops(2);
  auto loaded = DeepseekModel::Load(dir, ops, false);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  DeepseekModel& model = **loaded;
  testing::ReferenceModel ref(dir);
  const int64_t V = model.config().vocab_size;
  const std::vector<int32_t> prompt = Prompt(V);
  const int64_t T = static_cast<int64_t>(prompt.size());
  const std::vector<int> prompt_int(prompt.begin(), prompt.end());
  ASSERT_EQ(model.has_mtp(), ref.has_mtp());

  // Every position's logits (and MTP logits) of one forward pass.
  const testing::RefOutputs r = ref.Forward(prompt_int, {}, model.has_mtp());
  kernels::LatentCache cache(model.CacheShape(1, 64));
  std::vector<int32_t> table = {0}, positions(T), rows(T);
  std::iota(positions.begin(), positions.end(), 0);
  std::iota(rows.begin(), rows.end(), 0);
  ForwardInput in;
  in.tokens = prompt;
  in.batch.positions = positions;
  in.batch.sequences = {{0, T, 0, table}};
  in.logit_rows = rows;
  ForwardOutput out;
  ASSERT_TRUE(model.Forward(in, cache, &out).ok());
  const double err = RelError(out.logits.data(), r.logits.data(), T * V);
  EXPECT_LE(err, kLogitTolerance);
  for (int64_t t = 0; t < T; ++t) {
    const float* row = out.logits.data() + t * V;
    const double* ref_row = r.logits.data() + t * V;
    EXPECT_EQ(std::max_element(row, row + V) - row, std::max_element(ref_row, ref_row + V) - ref_row)
        << "row " << t;
  }
  if (model.has_mtp()) {
    std::vector<float> mtp;
    ASSERT_TRUE(model.ForwardMtpOverPrompt(prompt, out.hidden, table, kernels::MlaMode::kAuto,
                                           cache, &mtp)
                    .ok());
    EXPECT_LE(RelError(mtp.data(), r.mtp_logits.data(), (T - 1) * V), kLogitTolerance);
  }

  // Greedy continuation (and MTP drafts) token for token, and not one repeated token.
  constexpr int kNew = 8;
  std::vector<int> ref_drafts;
  const std::vector<int> ref_tokens = ref.Greedy(prompt_int, kNew, &ref_drafts);
  GreedyOptions o;
  o.max_new_tokens = kNew;
  o.stop_at_eos = false;
  o.mtp_drafts = model.has_mtp();
  auto g = GreedyDecode(model, prompt, o);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(std::vector<int>(g->tokens.begin(), g->tokens.end()), ref_tokens);
  EXPECT_GT(std::set<int32_t>(g->tokens.begin(), g->tokens.end()).size(), 1u);
  if (model.has_mtp()) {
    EXPECT_EQ(std::vector<int>(g->drafts.begin(), g->drafts.end()), ref_drafts);
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, PresetTest,
                         ::testing::Values("tiny-v3", "tiny-v3-bf16", "tiny-v2",
                                           "tiny-v2-grouped"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// The FP8 latent cache (E4M3 latent, a scale per 128 values, BF16 k_pe) on tiny-v3 over a
// 100-token prompt prefilled in chunks of 25 (later chunks read earlier tokens back from the
// cache), every position's logits against the float64 reference, next to the BF16 and F32
// caches. Random weights make some positions chaotic (a perturbed latent flips a routing
// choice), so the figures are per-row cosine and argmax agreement besides the worst error.
// Measured here: F32 max err 7.9e-7, cosine 1, argmax 100/100; BF16 0.33, mean cosine
// 0.99903 (min 0.918), 97/100; FP8 0.56, mean cosine 0.98711 (min 0.796), 87/100. The bounds
// leave room for other platforms' rounding; FP8 must be the worst (it is really in use).
TEST(LatentCacheFormats, Fp8CacheLogitErrorOnTinyV3IsBounded) {
  const std::string& dir = PresetDir("tiny-v3");
  kernels::cpu::CpuOps ops(2);
  auto loaded = DeepseekModel::Load(dir, ops, false);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  DeepseekModel& model = **loaded;
  testing::ReferenceModel ref(dir);
  const int64_t V = model.config().vocab_size, T = 100;
  std::vector<int32_t> prompt(T);
  uint32_t x = 77;
  for (int32_t& t : prompt) {
    x = x * 1103515245u + 12345u;
    t = static_cast<int32_t>((x >> 4) % V);
  }
  const testing::RefOutputs r = ref.Forward(std::vector<int>(prompt.begin(), prompt.end()), {},
                                            false);
  std::map<DType, double> mean_cos;
  std::map<DType, int> argmax;
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kF8E4M3}) {
    kernels::LatentCacheShape shape = model.CacheShape(2, 64);
    shape.dtype = dtype;
    kernels::LatentCache cache(shape);
    std::vector<int32_t> table = {1, 0}, positions(T), rows(T);
    std::iota(positions.begin(), positions.end(), 0);
    std::iota(rows.begin(), rows.end(), 0);
    // Prefill in chunks, so later tokens attend to earlier ones through the stored format.
    std::vector<float> logits;
    for (int64_t begin = 0; begin < T; begin += 25) {
      ForwardInput in;
      in.tokens = std::span(prompt).subspan(begin, 25);
      in.batch.positions = std::span(positions).subspan(begin, 25);
      in.batch.sequences = {{0, 25, begin, table}};
      in.logit_rows = std::span(rows).first(25);
      ForwardOutput out;
      ASSERT_TRUE(model.Forward(in, cache, &out).ok());
      logits.insert(logits.end(), out.logits.begin(), out.logits.end());
    }
    double worst_cos = 1, sum_cos = 0;
    int same_argmax = 0;
    for (int64_t t = 0; t < T; ++t) {
      const float* g = logits.data() + t * V;
      const double* w = r.logits.data() + t * V;
      double dot = 0, gg = 0, ww = 0;
      for (int64_t v = 0; v < V; ++v) {
        dot += g[v] * w[v];
        gg += double{g[v]} * g[v];
        ww += w[v] * w[v];
      }
      const double cos = dot / std::sqrt(gg * ww);
      worst_cos = std::min(worst_cos, cos);
      sum_cos += cos;
      same_argmax += (std::max_element(g, g + V) - g) == (std::max_element(w, w + V) - w);
    }
    const double max_err = RelError(logits.data(), r.logits.data(), T * V);
    mean_cos[dtype] = sum_cos / T;
    argmax[dtype] = same_argmax;
    if (dtype == DType::kF32) {
      EXPECT_LE(max_err, kLogitTolerance);
    }
    std::printf("%-8s cache: max err %.3g of the largest logit, row cosine mean %.6f min %.6f, "
                "argmax %d/%lld\n",
                std::string(DTypeName(dtype)).c_str(), max_err, sum_cos / T, worst_cos,
                same_argmax, static_cast<long long>(T));
  }
  EXPECT_EQ(argmax[DType::kF32], T);
  EXPECT_GE(mean_cos[DType::kBF16], 0.998);
  EXPECT_GE(argmax[DType::kBF16], 93);
  EXPECT_GE(mean_cos[DType::kF8E4M3], 0.975);
  EXPECT_GE(argmax[DType::kF8E4M3], 80);
  EXPECT_LT(mean_cos[DType::kF8E4M3], mean_cos[DType::kBF16]);
  EXPECT_LT(mean_cos[DType::kBF16], mean_cos[DType::kF32]);
}

// The published V3 checkpoint stores the MTP layer's embed_tokens and shared_head.head as byte
// copies of the main embedding and LM head; the generator does too, and the loader then keeps
// one of each. A checkpoint whose copy differs in one byte keeps its own.
TEST(MtpSharing, IdenticalMtpEmbeddingAndHeadAreLoadedOnce) {
  const std::string dir = PresetDir("tiny-v3");
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  {
    auto checkpoint = Checkpoint::Open(dir, false);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    auto w = BindWeights(*config, **checkpoint);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE(w->mtp.has_value());
    EXPECT_EQ(w->mtp->head.data, w->lm_head.data);
    EXPECT_EQ(w->mtp->embed.data, w->embed.data);
    EXPECT_EQ(w->mtp_bytes_shared, 2 * config->vocab_size * config->hidden_size * 2);
  }
  // A copy of the checkpoint with one byte of the MTP head changed in its file.
  const std::string changed = testing::ScratchDir("mtp-changed") + "/model";
  fs::copy(dir, changed);
  const std::string name =
      "model.layers." + std::to_string(config->num_hidden_layers) + ".shared_head.head.weight";
  const nlohmann::json index =
      nlohmann::json::parse(ReadFile(fs::path(changed) / "model.safetensors.index.json"));
  const fs::path shard = fs::path(changed) / index["weight_map"][name].get<std::string>();
  std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_len = 0;
  f.read(reinterpret_cast<char*>(&header_len), 8);
  std::string header(header_len, '\0');
  f.read(header.data(), static_cast<std::streamsize>(header_len));
  const int64_t begin = nlohmann::json::parse(header)[name]["data_offsets"][0];
  f.seekp(static_cast<std::streamoff>(8 + header_len + begin + 1));
  f.put('\x01');  // the high byte of the first BF16 value: a different weight
  f.close();
  auto checkpoint = Checkpoint::Open(changed, false);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto w = BindWeights(*config, **checkpoint);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NE(w->mtp->head.data, w->lm_head.data);
  EXPECT_EQ(w->mtp->embed.data, w->embed.data);
  EXPECT_EQ(w->mtp_bytes_shared, config->vocab_size * config->hidden_size * 2);
}

// v3-layers-N: the published DeepSeek-V3 dimensions, N layers (the first dense), no MTP.
TEST(PresetCatalog, V3LayersHasDeepSeekV3sDimensions) {
  auto p = FindPreset("v3-layers-2");
  ASSERT_TRUE(p.ok()) << p.status();
  auto c = ParseModelConfig(p->config.dump(), p->name);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 7168);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 128);
  EXPECT_EQ(c->q_lora_rank, 1536);
  EXPECT_EQ(c->kv_lora_rank, 512);
  EXPECT_EQ(c->qk_nope_head_dim, 128);
  EXPECT_EQ(c->qk_rope_head_dim, 64);
  EXPECT_EQ(c->v_head_dim, 128);
  EXPECT_EQ(c->n_routed_experts, 256);
  EXPECT_EQ(c->moe_intermediate_size, 2048);
  EXPECT_EQ(c->intermediate_size, 18432);
  EXPECT_EQ(c->num_experts_per_tok, 8);
  EXPECT_EQ(c->n_group, 8);
  EXPECT_EQ(c->topk_group, 4);
  EXPECT_EQ(c->first_k_dense_replace, 1);
  EXPECT_EQ(c->vocab_size, 129280);
  EXPECT_TRUE(c->fp8);
  EXPECT_EQ(c->num_nextn_predict_layers, 0);
  for (const char* bad : {"v3-layers-0", "v3-layers-62", "v3-layers-x", "v3-layers-", "v3-layers-+2",
                          "v3-layers- 2"}) {
    auto q = FindPreset(bad);
    ASSERT_FALSE(q.ok()) << bad;
    EXPECT_NE(q.status().message().find("1 to 61"), std::string::npos) << q.status();
  }
}

// The generator's shards are written in parallel; the bytes must not depend on the threads.
TEST(PresetCatalog, ShardsWrittenInParallelAreTheSameBytes) {
  std::map<int, std::string> dirs;
  for (const int threads : {1, 3}) {
    GenerateOptions o;
    o.preset = "tiny-v2";
    o.seed = 5;
    o.out_dir = testing::ScratchDir("parallel") + "/model";
    o.show_progress = false;
    o.max_shard_bytes = 8 << 20;  // many shards
    o.threads = threads;
    ASSERT_TRUE(GenerateModel(o).ok());
    dirs[threads] = o.out_dir;
  }
  int shards = 0;
  for (const auto& entry : fs::directory_iterator(dirs[1])) {
    shards += entry.path().extension() == ".safetensors";
    EXPECT_EQ(ReadFile(entry.path()), ReadFile(fs::path(dirs[3]) / entry.path().filename()))
        << entry.path().filename();
  }
  EXPECT_GE(shards, 4);
}

TEST(PresetCatalog, UnknownPresetNamesTheKnownOnes) {
  auto p = FindPreset("tiny-v9");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("tiny-v3"), std::string::npos);
  for (const Preset& preset : AllPresets()) {
    EXPECT_TRUE(ParseModelConfig(preset.config.dump(), preset.name).ok()) << preset.name;
  }
}

}  // namespace
}  // namespace dserve::models
