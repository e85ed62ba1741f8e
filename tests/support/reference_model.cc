#include "reference_model.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <numbers>
#include <numeric>

#include "nlohmann/json.hpp"
#include "reference_checkpoint.h"

namespace dserve::testing {
namespace {

using json = nlohmann::json;
using Vec = std::vector<double>;

// The checkpoint reader and the dtype decoding live in reference_checkpoint.{h,cc}.
using reference::Checkpoint;
using reference::DecodeElement;
using reference::DecodeFp8E4M3;
using reference::Fail;
using reference::FloatType;
using reference::ParseFloatType;
using reference::ShapeStr;
using reference::TensorInfo;

// -----------------------------------------------------------------------------------------------
// Weights
// -----------------------------------------------------------------------------------------------

// A 2-D weight [rows, cols] kept in its checkpoint dtype; Row() dequantises one row to double.
struct Matrix {
  std::string name;
  FloatType type = FloatType::kF32;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> raw;
  // FP8 only: real W[r][c] = fp8(W[r][c]) * scale_inv[r / block_r][c / block_c].
  Vec scale_inv;
  int64_t block_r = 0, block_c = 0, scale_cols = 0;

  void Row(int64_t r, double* out) const {
    if (r < 0 || r >= rows) Fail(name + ": row " + std::to_string(r) + " out of range");
    if (type == FloatType::kF8E4M3) {
      const uint8_t* p = raw.data() + r * cols;
      const double* srow = scale_inv.data() + (r / block_r) * scale_cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = DecodeFp8E4M3(p[c]) * srow[c / block_c];
    } else {
      for (int64_t c = 0; c < cols; ++c) out[c] = DecodeElement(type, raw.data(), r * cols + c);
    }
  }
};

// Y[t, r] = sum_c W[r, c] * X[t, c]   (X: [T, cols], Y: [T, rows])
Vec Linear(const Matrix& w, const Vec& x, int64_t T) {
  if (static_cast<int64_t>(x.size()) != T * w.cols) {
    Fail(w.name + ": input has " + std::to_string(x.size()) + " values, expected " +
         std::to_string(T) + " x " + std::to_string(w.cols));
  }
  Vec y(static_cast<size_t>(T * w.rows));
  Vec row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    w.Row(r, row.data());
    for (int64_t t = 0; t < T; ++t) {
      const double* xt = x.data() + t * w.cols;
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) acc += row[c] * xt[c];
      y[t * w.rows + r] = acc;
    }
  }
  return y;
}

Vec RmsNorm(const Vec& x, int64_t T, const Vec& w, double eps) {
  const int64_t dim = static_cast<int64_t>(w.size());
  if (static_cast<int64_t>(x.size()) != T * dim) Fail("RmsNorm: size mismatch");
  Vec y(x.size());
  for (int64_t t = 0; t < T; ++t) {
    const double* xt = x.data() + t * dim;
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += xt[i] * xt[i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[t * dim + i] = xt[i] * inv * w[i];
  }
  return y;
}

double Silu(double v) { return v / (1.0 + std::exp(-v)); }

// Indices of the k largest values, in descending order of value (lowest index first on ties).
std::vector<int> TopK(const Vec& v, int k) {
  for (double x : v) {
    if (std::isnan(x)) Fail("NaN in top-k input");
  }
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] > v[b]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

int Argmax(const double* v, int64_t n) {
  int best = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(v[i])) Fail("NaN in logits");
    if (v[i] > v[best]) best = static_cast<int>(i);
  }
  return best;
}

// -----------------------------------------------------------------------------------------------
// Config
// -----------------------------------------------------------------------------------------------

bool IsSet(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

template <typename T>
T Get(const json& j, const char* key, T def) {
  if (!IsSet(j, key)) return def;
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    Fail(std::string("config.json: bad value for ") + key + ": " + e.what());
  }
}

template <typename T>
T Require(const json& j, const char* key) {
  if (!IsSet(j, key)) Fail(std::string("config.json lacks ") + key);
  return Get<T>(j, key, T{});
}

double YarnGetMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

struct Config {
  std::string model_type;
  bool v3 = false;
  int64_t hidden = 0, layers = 0, heads = 0, vocab = 0;
  int64_t q_lora = 0;  // 0: no q_lora (q_proj)
  int64_t kv_lora = 0, nope = 0, rope = 0, v_dim = 0;
  int64_t intermediate = 0, moe_intermediate = 0;
  int64_t n_routed = 0;  // 0: no MoE
  int64_t n_shared = 0, top_k = 0, first_k_dense = 0, moe_layer_freq = 1;
  int64_t n_group = 1, topk_group = 1;
  std::string scoring_func, topk_method;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  double eps = 1e-6;
  bool tie_embeddings = false;
  int64_t num_nextn = 0;
  int64_t block_r = 128, block_c = 128;
  // RoPE
  double rope_theta = 10000.0;
  Vec inv_freq;  // [rope / 2]
  double mscale_rope = 1.0;
  double softmax_scale = 0.0;

  bool IsMoeLayer(int64_t i) const {
    return n_routed > 0 && i >= first_k_dense && i % moe_layer_freq == 0;
  }
};

Config ParseConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream f(path);
  if (!f) Fail("cannot open " + path);
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    Fail("cannot parse " + path + ": " + e.what());
  }
  Config c;
  c.model_type = Require<std::string>(j, "model_type");
  if (c.model_type == "deepseek_v3") {
    c.v3 = true;
  } else if (c.model_type != "deepseek_v2") {
    Fail("unsupported model_type '" + c.model_type + "' (expected deepseek_v2 or deepseek_v3)");
  }
  const std::string act = Get<std::string>(j, "hidden_act", "silu");
  if (act != "silu") Fail("unsupported hidden_act '" + act + "'");
  if (Get<bool>(j, "attention_bias", false)) Fail("attention_bias=true is not supported");

  c.hidden = Require<int64_t>(j, "hidden_size");
  c.layers = Require<int64_t>(j, "num_hidden_layers");
  c.heads = Require<int64_t>(j, "num_attention_heads");
  c.vocab = Require<int64_t>(j, "vocab_size");
  c.q_lora = Get<int64_t>(j, "q_lora_rank", 0);
  c.kv_lora = Require<int64_t>(j, "kv_lora_rank");
  c.nope = Require<int64_t>(j, "qk_nope_head_dim");
  c.rope = Require<int64_t>(j, "qk_rope_head_dim");
  c.v_dim = Require<int64_t>(j, "v_head_dim");
  c.intermediate = Require<int64_t>(j, "intermediate_size");
  c.n_routed = Get<int64_t>(j, "n_routed_experts", 0);
  if (c.n_routed > 0) {
    c.moe_intermediate = Require<int64_t>(j, "moe_intermediate_size");
    c.top_k = Require<int64_t>(j, "num_experts_per_tok");
  }
  c.n_shared = Get<int64_t>(j, "n_shared_experts", 0);
  c.first_k_dense = Get<int64_t>(j, "first_k_dense_replace", 0);
  c.moe_layer_freq = Get<int64_t>(j, "moe_layer_freq", 1);
  c.n_group = Get<int64_t>(j, "n_group", 1);
  c.topk_group = Get<int64_t>(j, "topk_group", 1);
  c.scoring_func = Get<std::string>(j, "scoring_func", c.v3 ? "sigmoid" : "softmax");
  c.topk_method = Get<std::string>(j, "topk_method", c.v3 ? "noaux_tc" : "greedy");
  c.norm_topk_prob = Get<bool>(j, "norm_topk_prob", c.v3);
  c.routed_scaling_factor = Get<double>(j, "routed_scaling_factor", 1.0);
  c.eps = Get<double>(j, "rms_norm_eps", 1e-6);
  c.tie_embeddings = Get<bool>(j, "tie_word_embeddings", false);
  c.num_nextn = c.v3 ? Get<int64_t>(j, "num_nextn_predict_layers", 0) : 0;
  c.rope_theta = Get<double>(j, "rope_theta", 10000.0);

  for (int64_t v : {c.hidden, c.layers, c.heads, c.vocab, c.kv_lora, c.nope, c.rope, c.v_dim}) {
    if (v <= 0) Fail("config.json: dimensions must be positive");
  }
  if (c.q_lora < 0 || c.n_shared < 0 || c.first_k_dense < 0 || c.moe_layer_freq <= 0) {
    Fail("config.json: invalid q_lora_rank/n_shared_experts/first_k_dense_replace/moe_layer_freq");
  }
  if (c.rope % 2 != 0) Fail("config.json: qk_rope_head_dim must be even");
  if (c.n_routed > 0) {
    if (c.scoring_func != "softmax" && c.scoring_func != "sigmoid") {
      Fail("unsupported scoring_func '" + c.scoring_func + "'");
    }
    if (c.topk_method != "greedy" && c.topk_method != "group_limited_greedy" &&
        c.topk_method != "noaux_tc") {
      Fail("unsupported topk_method '" + c.topk_method + "'");
    }
    if (c.top_k <= 0 || c.top_k > c.n_routed) Fail("config.json: bad num_experts_per_tok");
    if (c.topk_method != "greedy") {
      if (c.n_group <= 0 || c.n_routed % c.n_group != 0) {
        Fail("config.json: n_routed_experts must be a multiple of n_group");
      }
      if (c.topk_group <= 0 || c.topk_group > c.n_group) Fail("config.json: bad topk_group");
      if (c.top_k > c.topk_group * (c.n_routed / c.n_group)) {
        Fail("config.json: num_experts_per_tok exceeds the experts in topk_group groups");
      }
    }
  }
  if (IsSet(j, "quantization_config")) {
    const json& q = j.at("quantization_config");
    if (IsSet(q, "weight_block_size")) {
      const auto bs = Get<std::vector<int64_t>>(q, "weight_block_size", {});
      if (bs.size() != 2 || bs[0] <= 0 || bs[1] <= 0) {
        Fail("config.json: bad quantization_config.weight_block_size");
      }
      c.block_r = bs[0];
      c.block_c = bs[1];
    }
  }

  // RoPE frequencies, YaRN and the attention scale (HF DeepseekV2/V3 semantics).
  const int64_t d = c.rope;
  const double base = c.rope_theta;
  c.inv_freq.resize(static_cast<size_t>(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) {
    c.inv_freq[i] = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
  }
  c.softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.nope + c.rope));
  if (IsSet(j, "rope_scaling")) {
    const json& rs = j.at("rope_scaling");
    std::string type = Get<std::string>(rs, "type", "");
    if (type.empty()) type = Get<std::string>(rs, "rope_type", "");
    if (type == "yarn") {
      const double factor = Require<double>(rs, "factor");
      const double orig_max = Get<double>(rs, "original_max_position_embeddings", 4096.0);
      const double beta_fast = Get<double>(rs, "beta_fast", 32.0);
      const double beta_slow = Get<double>(rs, "beta_slow", 1.0);
      const double mscale = Get<double>(rs, "mscale", 1.0);
      const double mscale_all_dim = Get<double>(rs, "mscale_all_dim", 0.0);
      auto corr_dim = [&](double rotations) {
        return static_cast<double>(d) * std::log(orig_max / (rotations * 2.0 * std::numbers::pi)) /
               (2.0 * std::log(base));
      };
      const double low = std::max(std::floor(corr_dim(beta_fast)), 0.0);
      double high = std::min(std::ceil(corr_dim(beta_slow)), static_cast<double>(d - 1));
      if (low == high) high += 0.001;
      for (int64_t i = 0; i < d / 2; ++i) {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extra = c.inv_freq[i];   // unscaled frequency
        const double inter = extra / factor;  // interpolated frequency
        c.inv_freq[i] = inter * ramp + extra * (1.0 - ramp);
      }
      c.mscale_rope = YarnGetMscale(factor, mscale) / YarnGetMscale(factor, mscale_all_dim);
      if (mscale_all_dim != 0.0) {
        const double m = YarnGetMscale(factor, mscale_all_dim);
        c.softmax_scale *= m * m;
      }
    } else if (type != "default") {
      Fail("unsupported rope_scaling type '" + type + "'");
    }
  }
  return c;
}

// -----------------------------------------------------------------------------------------------
// Model structure
// -----------------------------------------------------------------------------------------------

struct Mlp {
  Matrix gate, up, down;
};

struct Moe {
  Matrix gate;  // router [E, hidden]
  Vec bias;     // e_score_correction_bias [E], empty when absent
  std::vector<Mlp> experts;
  bool has_shared = false;
  Mlp shared;
};

struct Layer {
  Vec input_norm, post_attn_norm;
  bool has_q_lora = false;
  Matrix q_a, q_b, q_proj;
  Vec q_a_norm;
  Matrix kv_a, kv_b, o_proj;
  Vec kv_a_norm;
  bool is_moe = false;
  Mlp mlp;
  Moe moe;
};

struct MtpLayer {
  Matrix embed;
  Vec enorm, hnorm;
  Matrix eh_proj;
  Layer block;
  Vec head_norm;
  Matrix head;
};

// Per-layer intermediate values recorded for RefOutputs.
struct LayerTrace {
  Vec attn_out, ffn_out, kv_latent, k_pe;
  std::vector<int> topk_idx;
  Vec topk_w;
};

class Loader {
 public:
  Loader(const Checkpoint& ckpt, const Config& cfg) : ckpt_(ckpt), cfg_(cfg) {}

  Vec LoadVector(const std::string& name, int64_t n) const {
    const TensorInfo& t = ckpt_.Info(name);
    if (t.shape != std::vector<int64_t>{n}) {
      Fail(name + " has shape " + ShapeStr(t.shape) + ", expected [" + std::to_string(n) + "]");
    }
    const FloatType type = ParseFloatType(t.dtype, name);
    if (type == FloatType::kF8E4M3) Fail(name + ": FP8 vectors are not supported");
    const std::vector<uint8_t> raw = ckpt_.ReadRaw(name);
    Vec v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[i] = DecodeElement(type, raw.data(), i);
    return v;
  }

  Matrix LoadMatrix(const std::string& name, int64_t rows, int64_t cols) const {
    const TensorInfo& t = ckpt_.Info(name);
    if (t.shape != std::vector<int64_t>{rows, cols}) {
      Fail(name + " has shape " + ShapeStr(t.shape) + ", expected " + ShapeStr({rows, cols}));
    }
    Matrix m;
    m.name = name;
    m.type = ParseFloatType(t.dtype, name);
    m.rows = rows;
    m.cols = cols;
    m.raw = ckpt_.ReadRaw(name);
    const std::string scale_name = name + "_scale_inv";
    if (m.type == FloatType::kF8E4M3) {
      if (!ckpt_.Has(scale_name)) Fail("FP8 weight " + name + " has no " + scale_name);
      m.block_r = cfg_.block_r;
      m.block_c = cfg_.block_c;
      const int64_t sr = (rows + m.block_r - 1) / m.block_r;
      const int64_t sc = (cols + m.block_c - 1) / m.block_c;
      const TensorInfo& s = ckpt_.Info(scale_name);
      if (s.shape != std::vector<int64_t>{sr, sc}) {
        Fail(scale_name + " has shape " + ShapeStr(s.shape) + ", expected " + ShapeStr({sr, sc}) +
             " for block size " + std::to_string(m.block_r) + "x" + std::to_string(m.block_c));
      }
      const FloatType stype = ParseFloatType(s.dtype, scale_name);
      if (stype == FloatType::kF8E4M3) Fail(scale_name + " must not be FP8");
      const std::vector<uint8_t> sraw = ckpt_.ReadRaw(scale_name);
      m.scale_inv.resize(static_cast<size_t>(sr * sc));
      for (int64_t i = 0; i < sr * sc; ++i) m.scale_inv[i] = DecodeElement(stype, sraw.data(), i);
      m.scale_cols = sc;
    } else if (ckpt_.Has(scale_name)) {
      Fail(name + " is " + t.dtype + " but has a " + scale_name + " tensor");
    }
    return m;
  }

  Mlp LoadMlp(const std::string& prefix, int64_t inter) const {
    Mlp m;
    m.gate = LoadMatrix(prefix + ".gate_proj.weight", inter, cfg_.hidden);
    m.up = LoadMatrix(prefix + ".up_proj.weight", inter, cfg_.hidden);
    m.down = LoadMatrix(prefix + ".down_proj.weight", cfg_.hidden, inter);
    return m;
  }

  Layer LoadLayer(int64_t i) const {
    const Config& c = cfg_;
    const std::string p = "model.layers." + std::to_string(i);
    Layer l;
    l.input_norm = LoadVector(p + ".input_layernorm.weight", c.hidden);
    l.post_attn_norm = LoadVector(p + ".post_attention_layernorm.weight", c.hidden);
    const int64_t q_dim = c.heads * (c.nope + c.rope);
    l.has_q_lora = c.q_lora > 0;
    if (l.has_q_lora) {
      l.q_a = LoadMatrix(p + ".self_attn.q_a_proj.weight", c.q_lora, c.hidden);
      l.q_a_norm = LoadVector(p + ".self_attn.q_a_layernorm.weight", c.q_lora);
      l.q_b = LoadMatrix(p + ".self_attn.q_b_proj.weight", q_dim, c.q_lora);
    } else {
      l.q_proj = LoadMatrix(p + ".self_attn.q_proj.weight", q_dim, c.hidden);
    }
    l.kv_a = LoadMatrix(p + ".self_attn.kv_a_proj_with_mqa.weight", c.kv_lora + c.rope, c.hidden);
    l.kv_a_norm = LoadVector(p + ".self_attn.kv_a_layernorm.weight", c.kv_lora);
    l.kv_b = LoadMatrix(p + ".self_attn.kv_b_proj.weight", c.heads * (c.nope + c.v_dim), c.kv_lora);
    l.o_proj = LoadMatrix(p + ".self_attn.o_proj.weight", c.hidden, c.heads * c.v_dim);
    l.is_moe = c.IsMoeLayer(i);
    if (!l.is_moe) {
      l.mlp = LoadMlp(p + ".mlp", c.intermediate);
    } else {
      l.moe.gate = LoadMatrix(p + ".mlp.gate.weight", c.n_routed, c.hidden);
      const std::string bias = p + ".mlp.gate.e_score_correction_bias";
      if (ckpt_.Has(bias)) l.moe.bias = LoadVector(bias, c.n_routed);
      for (int64_t e = 0; e < c.n_routed; ++e) {
        l.moe.experts.push_back(
            LoadMlp(p + ".mlp.experts." + std::to_string(e), c.moe_intermediate));
      }
      l.moe.has_shared = c.n_shared > 0;
      if (l.moe.has_shared) {
        l.moe.shared = LoadMlp(p + ".mlp.shared_experts", c.moe_intermediate * c.n_shared);
      }
    }
    return l;
  }

 private:
  const Checkpoint& ckpt_;
  const Config& cfg_;
};

}  // namespace

// -----------------------------------------------------------------------------------------------
// ReferenceModel::Impl
// -----------------------------------------------------------------------------------------------

struct ReferenceModel::Impl {
  Config cfg;
  Matrix embed;
  std::vector<Layer> layers;
  Vec final_norm;
  Matrix lm_head;
  bool has_mtp = false;
  MtpLayer mtp;

  explicit Impl(const std::string& dir) : cfg(ParseConfig(dir)) {
    const Checkpoint ckpt(dir);
    const Loader load(ckpt, cfg);
    const Config& c = cfg;
    embed = load.LoadMatrix("model.embed_tokens.weight", c.vocab, c.hidden);
    for (int64_t i = 0; i < c.layers; ++i) layers.push_back(load.LoadLayer(i));
    final_norm = load.LoadVector("model.norm.weight", c.hidden);
    if (ckpt.Has("lm_head.weight")) {
      lm_head = load.LoadMatrix("lm_head.weight", c.vocab, c.hidden);
    } else if (c.tie_embeddings) {
      lm_head = embed;
    } else {
      Fail("checkpoint has no lm_head.weight and tie_word_embeddings is false");
    }
    const std::string mp = "model.layers." + std::to_string(c.layers);
    has_mtp = c.num_nextn > 0 && ckpt.Has(mp + ".eh_proj.weight");
    if (has_mtp) {
      mtp.embed = load.LoadMatrix(mp + ".embed_tokens.weight", c.vocab, c.hidden);
      mtp.enorm = load.LoadVector(mp + ".enorm.weight", c.hidden);
      mtp.hnorm = load.LoadVector(mp + ".hnorm.weight", c.hidden);
      mtp.eh_proj = load.LoadMatrix(mp + ".eh_proj.weight", c.hidden, 2 * c.hidden);
      mtp.block = load.LoadLayer(c.layers);
      mtp.head_norm = load.LoadVector(mp + ".shared_head.norm.weight", c.hidden);
      mtp.head = load.LoadMatrix(mp + ".shared_head.head.weight", c.vocab, c.hidden);
    }
  }

  // RoPE at position pos on one vector of length d = qk_rope_head_dim made of interleaved pairs
  // (x[2i], x[2i+1]); pair i is rotated by angle pos * inv_freq[i] and stays in place:
  //   out[2i]   = x[2i] * cos - x[2i+1] * sin,   out[2i+1] = x[2i+1] * cos + x[2i] * sin
  // (cos and sin include mscale_rope). HF instead de-interleaves first (out[i], out[d/2 + i]);
  // that is the same values permuted identically for q and k, so attention scores are equal.
  // The interleaved layout is the one reference.npz's k_pe_rotated uses.
  void Rope(const double* in, double* out, int64_t pos) const {
    for (int64_t i = 0; i < cfg.rope / 2; ++i) {
      const double angle = static_cast<double>(pos) * cfg.inv_freq[i];
      const double cs = std::cos(angle) * cfg.mscale_rope;
      const double sn = std::sin(angle) * cfg.mscale_rope;
      const double x0 = in[2 * i], x1 = in[2 * i + 1];
      out[2 * i] = x0 * cs - x1 * sn;
      out[2 * i + 1] = x1 * cs + x0 * sn;
    }
  }

  // Multi-head latent attention over T tokens at positions 0..T-1 (causal). x: normalised input.
  Vec Attention(const Layer& l, const Vec& x, int64_t T, LayerTrace* trace) const {
    const Config& c = cfg;
    const int64_t H = c.heads, dn = c.nope, dr = c.rope, dv = c.v_dim, dq = dn + dr;
    const Vec q = l.has_q_lora
                      ? Linear(l.q_b, RmsNorm(Linear(l.q_a, x, T), T, l.q_a_norm, c.eps), T)
                      : Linear(l.q_proj, x, T);  // [T, H * dq]
    const Vec kv_a = Linear(l.kv_a, x, T);       // [T, kv_lora + dr]
    Vec c_raw(static_cast<size_t>(T * c.kv_lora));
    Vec k_pe(static_cast<size_t>(T * dr));
    for (int64_t t = 0; t < T; ++t) {
      const double* row = kv_a.data() + t * (c.kv_lora + dr);
      std::copy(row, row + c.kv_lora, c_raw.begin() + t * c.kv_lora);
      Rope(row + c.kv_lora, k_pe.data() + t * dr, t);
    }
    const Vec c_kv = RmsNorm(c_raw, T, l.kv_a_norm, c.eps);  // [T, kv_lora]
    const Vec kv = Linear(l.kv_b, c_kv, T);                  // [T, H * (dn + dv)]

    Vec q_pe(static_cast<size_t>(T * H * dr));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        Rope(q.data() + (t * H + h) * dq + dn, q_pe.data() + (t * H + h) * dr, t);
      }
    }

    Vec attn(static_cast<size_t>(T * H * dv), 0.0);
    Vec scores(static_cast<size_t>(T));
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const double* qn = q.data() + (t * H + h) * dq;
        const double* qr = q_pe.data() + (t * H + h) * dr;
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t s = 0; s <= t; ++s) {
          const double* kn = kv.data() + (s * H + h) * (dn + dv);
          const double* kr = k_pe.data() + s * dr;
          double dot = 0.0;
          for (int64_t i = 0; i < dn; ++i) dot += qn[i] * kn[i];
          for (int64_t i = 0; i < dr; ++i) dot += qr[i] * kr[i];
          scores[s] = dot * c.softmax_scale;
          max_score = std::max(max_score, scores[s]);
        }
        double denom = 0.0;
        for (int64_t s = 0; s <= t; ++s) {
          scores[s] = std::exp(scores[s] - max_score);
          denom += scores[s];
        }
        double* out = attn.data() + (t * H + h) * dv;
        for (int64_t s = 0; s <= t; ++s) {
          const double p = scores[s] / denom;
          const double* v = kv.data() + (s * H + h) * (dn + dv) + dn;
          for (int64_t i = 0; i < dv; ++i) out[i] += p * v[i];
        }
      }
    }
    if (trace) {
      trace->kv_latent = c_kv;
      trace->k_pe = k_pe;
    }
    return Linear(l.o_proj, attn, T);
  }

  static Vec MlpForward(const Mlp& m, const Vec& x, int64_t T) {
    const Vec g = Linear(m.gate, x, T);
    const Vec u = Linear(m.up, x, T);
    Vec a(g.size());
    for (size_t i = 0; i < g.size(); ++i) a[i] = Silu(g[i]) * u[i];
    return Linear(m.down, a, T);
  }

  // Router for one token: chosen experts (descending choice score) and their final weights.
  void Route(const Moe& m, const double* logits, std::vector<int>* idx, Vec* w) const {
    const Config& c = cfg;
    const int64_t E = c.n_routed;
    Vec scores(logits, logits + E);
    if (c.scoring_func == "softmax") {
      const double mx = *std::max_element(scores.begin(), scores.end());
      double sum = 0.0;
      for (double& s : scores) {
        s = std::exp(s - mx);
        sum += s;
      }
      for (double& s : scores) s /= sum;
    } else {  // sigmoid
      for (double& s : scores) s = 1.0 / (1.0 + std::exp(-s));
    }
    Vec choice = scores;
    if (!m.bias.empty()) {
      for (int64_t e = 0; e < E; ++e) choice[e] += m.bias[e];
    }
    if (c.topk_method != "greedy") {
      const int64_t gsize = E / c.n_group;
      Vec group_score(static_cast<size_t>(c.n_group));
      for (int64_t g = 0; g < c.n_group; ++g) {
        const Vec members(choice.begin() + g * gsize, choice.begin() + (g + 1) * gsize);
        if (c.topk_method == "group_limited_greedy") {
          group_score[g] = *std::max_element(members.begin(), members.end());
        } else {  // noaux_tc: sum of the two best experts of the group
          const int take = static_cast<int>(std::min<int64_t>(2, gsize));
          double sum = 0.0;
          for (int k : TopK(members, take)) sum += members[k];
          group_score[g] = sum;
        }
      }
      const std::vector<int> kept = TopK(group_score, static_cast<int>(c.topk_group));
      std::vector<bool> keep(static_cast<size_t>(c.n_group), false);
      for (int g : kept) keep[g] = true;
      for (int64_t e = 0; e < E; ++e) {
        if (!keep[e / gsize]) choice[e] = -std::numeric_limits<double>::infinity();
      }
    }
    *idx = TopK(choice, static_cast<int>(c.top_k));
    w->clear();
    for (int e : *idx) w->push_back(scores[e]);
    const bool normalised = c.top_k > 1 && c.norm_topk_prob;
    if (normalised) {
      double sum = 0.0;
      for (double v : *w) sum += v;
      for (double& v : *w) v /= (sum + 1e-20);
    }
    // HF: V3 always scales; V2 scales only when the weights were not normalised.
    if (c.v3 || !normalised) {
      for (double& v : *w) v *= c.routed_scaling_factor;
    }
  }

  Vec MoeForward(const Moe& m, const Vec& x, int64_t T, LayerTrace* trace) const {
    const Config& c = cfg;
    const int64_t K = c.top_k;
    const Vec logits = Linear(m.gate, x, T);  // [T, E]
    std::vector<int> all_idx(static_cast<size_t>(T * K));
    Vec all_w(static_cast<size_t>(T * K));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int> idx;
      Vec w;
      Route(m, logits.data() + t * c.n_routed, &idx, &w);
      std::copy(idx.begin(), idx.end(), all_idx.begin() + t * K);
      std::copy(w.begin(), w.end(), all_w.begin() + t * K);
    }
    Vec out = m.has_shared ? MlpForward(m.shared, x, T) : Vec(x.size(), 0.0);
    for (int64_t e = 0; e < c.n_routed; ++e) {
      std::vector<int64_t> slots;  // t * K + k for every (token, slot) routed to e
      for (int64_t i = 0; i < T * K; ++i) {
        if (all_idx[i] == e) slots.push_back(i);
      }
      if (slots.empty()) continue;
      const int64_t n = static_cast<int64_t>(slots.size());
      Vec xe(static_cast<size_t>(n * c.hidden));
      for (int64_t j = 0; j < n; ++j) {
        const int64_t t = slots[j] / K;
        std::copy(x.begin() + t * c.hidden, x.begin() + (t + 1) * c.hidden,
                  xe.begin() + j * c.hidden);
      }
      const Vec ye = MlpForward(m.experts[e], xe, n);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t t = slots[j] / K;
        for (int64_t i = 0; i < c.hidden; ++i) {
          out[t * c.hidden + i] += all_w[slots[j]] * ye[j * c.hidden + i];
        }
      }
    }
    if (trace) {
      trace->topk_idx = all_idx;
      trace->topk_w = all_w;
    }
    return out;
  }

  // One decoder block, updating the residual stream h [T, hidden] in place.
  void DecoderLayer(const Layer& l, Vec* h, int64_t T, LayerTrace* trace) const {
    const Vec attn_out = Attention(l, RmsNorm(*h, T, l.input_norm, cfg.eps), T, trace);
    for (size_t i = 0; i < h->size(); ++i) (*h)[i] += attn_out[i];
    const Vec ffn_in = RmsNorm(*h, T, l.post_attn_norm, cfg.eps);
    const Vec ffn_out =
        l.is_moe ? MoeForward(l.moe, ffn_in, T, trace) : MlpForward(l.mlp, ffn_in, T);
    for (size_t i = 0; i < h->size(); ++i) (*h)[i] += ffn_out[i];
    if (trace) {
      trace->attn_out = attn_out;
      trace->ffn_out = ffn_out;
    }
  }

  // Logits of `head` for the given rows of x [T, hidden] -> [rows.size(), vocab].
  Vec Head(const Matrix& head, const Vec& x, const std::vector<int>& rows) const {
    Vec sel(rows.size() * static_cast<size_t>(cfg.hidden));
    for (size_t j = 0; j < rows.size(); ++j) {
      std::copy(x.begin() + rows[j] * cfg.hidden, x.begin() + (rows[j] + 1) * cfg.hidden,
                sel.begin() + static_cast<int64_t>(j) * cfg.hidden);
    }
    return Linear(head, sel, static_cast<int64_t>(rows.size()));
  }

  // Forward pass. logit_rows / mtp_rows are explicit (empty = none); mtp_rows index MTP rows,
  // i.e. row i combines hidden_postnorm[i] with tokens[i + 1].
  RefOutputs Run(const std::vector<int>& tokens, const std::vector<int>& logit_rows, bool with_mtp,
                 const std::vector<int>& mtp_rows) const {
    const Config& c = cfg;
    const int64_t T = static_cast<int64_t>(tokens.size());
    if (T == 0) Fail("Forward: empty token sequence");
    for (int tok : tokens) {
      if (tok < 0 || tok >= c.vocab) {
        Fail("Forward: token id " + std::to_string(tok) + " out of range");
      }
    }
    for (int r : logit_rows) {
      if (r < 0 || r >= T) Fail("Forward: logit row " + std::to_string(r) + " out of range");
    }
    if (with_mtp && !has_mtp) Fail("Forward: MTP requested but the model has no MTP layer");
    for (int r : mtp_rows) {
      if (r < 0 || r >= T - 1) Fail("Forward: MTP row " + std::to_string(r) + " out of range");
    }

    RefOutputs out;
    out.T = T;
    out.vocab = c.vocab;
    out.hidden = c.hidden;
    out.logit_rows = logit_rows;

    Vec h(static_cast<size_t>(T * c.hidden));
    for (int64_t t = 0; t < T; ++t) embed.Row(tokens[t], h.data() + t * c.hidden);
    for (int64_t l = 0; l < c.layers; ++l) {
      LayerTrace trace;
      DecoderLayer(layers[l], &h, T, &trace);
      out.layer_out.push_back(h);
      out.attn_out.push_back(std::move(trace.attn_out));
      out.ffn_out.push_back(std::move(trace.ffn_out));
      out.kv_latent.push_back(std::move(trace.kv_latent));
      out.k_pe.push_back(std::move(trace.k_pe));
      out.topk_idx.push_back(std::move(trace.topk_idx));
      out.topk_w.push_back(std::move(trace.topk_w));
    }
    out.hidden_postnorm = RmsNorm(h, T, final_norm, c.eps);
    out.logits = Head(lm_head, out.hidden_postnorm, logit_rows);

    if (with_mtp && T > 1) {
      const int64_t M = T - 1;
      Vec e(static_cast<size_t>(M * c.hidden));
      for (int64_t i = 0; i < M; ++i) mtp.embed.Row(tokens[i + 1], e.data() + i * c.hidden);
      e = RmsNorm(e, M, mtp.enorm, c.eps);
      const Vec hh =
          RmsNorm(Vec(out.hidden_postnorm.begin(), out.hidden_postnorm.begin() + M * c.hidden), M,
                  mtp.hnorm, c.eps);
      Vec cat(static_cast<size_t>(M * 2 * c.hidden));
      for (int64_t i = 0; i < M; ++i) {
        std::copy(e.begin() + i * c.hidden, e.begin() + (i + 1) * c.hidden,
                  cat.begin() + i * 2 * c.hidden);
        std::copy(hh.begin() + i * c.hidden, hh.begin() + (i + 1) * c.hidden,
                  cat.begin() + i * 2 * c.hidden + c.hidden);
      }
      Vec x = Linear(mtp.eh_proj, cat, M);
      DecoderLayer(mtp.block, &x, M, nullptr);
      out.mtp_logits = Head(mtp.head, RmsNorm(x, M, mtp.head_norm, c.eps), mtp_rows);
    }
    return out;
  }
};

// -----------------------------------------------------------------------------------------------
// ReferenceModel
// -----------------------------------------------------------------------------------------------

ReferenceModel::ReferenceModel(const std::string& checkpoint_dir)
    : impl_(std::make_unique<Impl>(checkpoint_dir)) {}
ReferenceModel::~ReferenceModel() = default;
ReferenceModel::ReferenceModel(ReferenceModel&&) noexcept = default;
ReferenceModel& ReferenceModel::operator=(ReferenceModel&&) noexcept = default;

bool ReferenceModel::has_mtp() const { return impl_->has_mtp; }
int64_t ReferenceModel::vocab() const { return impl_->cfg.vocab; }

RefOutputs ReferenceModel::Forward(const std::vector<int>& tokens,
                                   const std::vector<int>& logit_rows, bool with_mtp) const {
  const int T = static_cast<int>(tokens.size());
  std::vector<int> rows = logit_rows;
  if (rows.empty()) {
    rows.resize(static_cast<size_t>(T));
    std::iota(rows.begin(), rows.end(), 0);
  }
  std::vector<int> mtp_rows;
  if (with_mtp) {
    for (int i = 0; i + 1 < T; ++i) mtp_rows.push_back(i);
  }
  return impl_->Run(tokens, rows, with_mtp, mtp_rows);
}

std::vector<int> ReferenceModel::Greedy(const std::vector<int>& prompt, int n,
                                        std::vector<int>* mtp_drafts) const {
  if (prompt.empty()) Fail("Greedy: empty prompt");
  if (n < 0) Fail("Greedy: negative token count");
  const int64_t V = impl_->cfg.vocab;
  const bool drafts = mtp_drafts != nullptr && impl_->has_mtp;
  if (mtp_drafts) mtp_drafts->clear();
  std::vector<int> seq = prompt;
  std::vector<int> generated;
  for (int j = 0; j < n; ++j) {
    const int T = static_cast<int>(seq.size());
    // From step 1 on, the same pass also yields the MTP draft for generated[j - 1]: MTP row
    // T - 2 combines the hidden state at T - 2 with seq[T - 1] = generated[j - 1].
    const bool mtp_now = drafts && j > 0;
    const RefOutputs r =
        impl_->Run(seq, {T - 1}, mtp_now, mtp_now ? std::vector<int>{T - 2} : std::vector<int>{});
    if (mtp_now) mtp_drafts->push_back(Argmax(r.mtp_logits.data(), V));
    const int next = Argmax(r.logits.data(), V);
    generated.push_back(next);
    seq.push_back(next);
  }
  if (drafts && n > 0) {
    const int T = static_cast<int>(seq.size());
    const RefOutputs r = impl_->Run(seq, {}, true, {T - 2});
    mtp_drafts->push_back(Argmax(r.mtp_logits.data(), V));
  }
  return generated;
}

}  // namespace dserve::testing
