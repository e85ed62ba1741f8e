#include "models/weights.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::models {
namespace {

std::string Shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

Tensor CopyToHost(const TensorEntry& e, DType dtype) {
  auto buffer = AllocateHost(e.bytes);
  std::memcpy(buffer->data(), e.data, e.bytes);
  return Tensor(std::move(buffer), dtype, e.shape);
}

// Looks up tensors by name and checks them against what the config implies.
class Binder {
 public:
  Binder(const ModelConfig& config, const Checkpoint& checkpoint)
      : config_(config), ckpt_(checkpoint) {}

  bool Has(const std::string& name) const { return ckpt_.Find(name) != nullptr; }

  absl::StatusOr<const TensorEntry*> Entry(const std::string& name,
                                           const std::vector<int64_t>& shape) const {
    DSERVE_ASSIGN_OR_RETURN(const TensorEntry* e, ckpt_.Get(name));
    if (e->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", name, " in ", *e->file, " has shape ", e->ShapeString(), ", but config.json (",
          config_.model_type, ") implies ", Shape(shape)));
    }
    return e;
  }

  // A projection [rows, cols] in FP8 (with its block scales), BF16, F16 or F32.
  absl::StatusOr<Weight> Matrix(const std::string& name, int64_t rows, int64_t cols) const {
    DSERVE_ASSIGN_OR_RETURN(const TensorEntry* e, Entry(name, {rows, cols}));
    Weight w;
    w.dtype = e->dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = e->data;
    switch (e->dtype) {
      case DType::kF8E4M3:
        DSERVE_RETURN_IF_ERROR(BindScales(name, *e, w));
        break;
      case DType::kBF16:
      case DType::kF16:
      case DType::kF32:
        break;
      default:
        return Unsupported(*e, "F8_E4M3 (with weight_scale_inv), BF16, F16 or F32");
    }
    // safetensors does not promise alignment; kernels read whole elements.
    if (reinterpret_cast<uintptr_t>(e->data) % DTypeSize(e->dtype) != 0) {
      w.owned = CopyToHost(*e, e->dtype);
      w.data = w.owned.raw();
    }
    return w;
  }

  // A 1-D vector converted to F32.
  absl::StatusOr<Tensor> Vector(const std::string& name, int64_t n) const {
    DSERVE_ASSIGN_OR_RETURN(const TensorEntry* e, Entry(name, {n}));
    Tensor t = Tensor::Zeros(DType::kF32, {n});
    float* out = t.data<float>();
    for (int64_t i = 0; i < n; ++i) {
      switch (e->dtype) {
        case DType::kF32: {
          float v;
          std::memcpy(&v, e->data + 4 * i, 4);
          out[i] = v;
          break;
        }
        case DType::kBF16:
        case DType::kF16: {
          uint16_t h;
          std::memcpy(&h, e->data + 2 * i, 2);
          out[i] = e->dtype == DType::kBF16 ? Bf16ToFloat(h) : F16ToFloat(h);
          break;
        }
        default:
          return Unsupported(*e, "BF16, F16 or F32");
      }
    }
    return t;
  }

  absl::StatusOr<MlpWeights> Mlp(const std::string& prefix, int64_t hidden,
                                 int64_t intermediate) const {
    MlpWeights m;
    DSERVE_ASSIGN_OR_RETURN(m.gate, Matrix(prefix + "gate_proj.weight", intermediate, hidden));
    DSERVE_ASSIGN_OR_RETURN(m.up, Matrix(prefix + "up_proj.weight", intermediate, hidden));
    DSERVE_ASSIGN_OR_RETURN(m.down, Matrix(prefix + "down_proj.weight", hidden, intermediate));
    return m;
  }

  absl::StatusOr<AttentionWeights> Attention(const std::string& prefix) const {
    const ModelConfig& c = config_;
    const int64_t h = c.hidden_size;
    const int64_t heads = c.num_attention_heads;
    AttentionWeights a;
    if (c.q_lora_rank > 0) {
      DSERVE_ASSIGN_OR_RETURN(a.q_a, Matrix(prefix + "q_a_proj.weight", c.q_lora_rank, h));
      DSERVE_ASSIGN_OR_RETURN(a.q_a_norm, Vector(prefix + "q_a_layernorm.weight", c.q_lora_rank));
      DSERVE_ASSIGN_OR_RETURN(
          a.q_b, Matrix(prefix + "q_b_proj.weight", heads * c.qk_head_dim(), c.q_lora_rank));
    } else {
      DSERVE_ASSIGN_OR_RETURN(a.q, Matrix(prefix + "q_proj.weight", heads * c.qk_head_dim(), h));
    }
    DSERVE_ASSIGN_OR_RETURN(a.kv_a, Matrix(prefix + "kv_a_proj_with_mqa.weight",
                                           c.kv_lora_rank + c.qk_rope_head_dim, h));
    DSERVE_ASSIGN_OR_RETURN(a.kv_a_norm,
                            Vector(prefix + "kv_a_layernorm.weight", c.kv_lora_rank));
    DSERVE_ASSIGN_OR_RETURN(a.kv_b, Matrix(prefix + "kv_b_proj.weight",
                                           heads * (c.qk_nope_head_dim + c.v_head_dim),
                                           c.kv_lora_rank));
    DSERVE_ASSIGN_OR_RETURN(a.o, Matrix(prefix + "o_proj.weight", h, heads * c.v_head_dim));
    return a;
  }

  absl::StatusOr<BlockWeights> Block(int layer) const {
    const ModelConfig& c = config_;
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    BlockWeights b;
    DSERVE_ASSIGN_OR_RETURN(b.input_norm, Vector(prefix + "input_layernorm.weight", c.hidden_size));
    DSERVE_ASSIGN_OR_RETURN(b.post_attention_norm,
                            Vector(prefix + "post_attention_layernorm.weight", c.hidden_size));
    DSERVE_ASSIGN_OR_RETURN(b.attn, Attention(prefix + "self_attn."));
    b.is_moe = c.IsMoeLayer(layer);
    if (!b.is_moe) {
      DSERVE_ASSIGN_OR_RETURN(b.mlp, Mlp(prefix + "mlp.", c.hidden_size, c.intermediate_size));
      return b;
    }
    MoeWeights& m = b.moe;
    DSERVE_ASSIGN_OR_RETURN(m.router,
                            Matrix(prefix + "mlp.gate.weight", c.n_routed_experts, c.hidden_size));
    const std::string bias = prefix + "mlp.gate.e_score_correction_bias";
    if (c.topk_method == TopkMethod::kNoauxTc) {
      DSERVE_ASSIGN_OR_RETURN(m.bias, Vector(bias, c.n_routed_experts));
    }
    for (int e = 0; e < c.n_routed_experts; ++e) {
      DSERVE_ASSIGN_OR_RETURN(
          MlpWeights expert,
          Mlp(absl::StrCat(prefix, "mlp.experts.", e, "."), c.hidden_size,
              c.moe_intermediate_size));
      m.experts.push_back(std::move(expert));
    }
    if (c.n_shared_experts > 0) {
      DSERVE_ASSIGN_OR_RETURN(m.shared, Mlp(prefix + "mlp.shared_experts.", c.hidden_size,
                                            c.moe_intermediate_size * c.n_shared_experts));
    }
    return b;
  }

 private:
  absl::Status BindScales(const std::string& name, const TensorEntry& e, Weight& w) const {
    w.block_rows = config_.weight_block_size[0];
    w.block_cols = config_.weight_block_size[1];
    const std::string scale_name = name + "_scale_inv";
    DSERVE_ASSIGN_OR_RETURN(const TensorEntry* s,
                            Entry(scale_name, {w.scale_rows(), w.scale_cols()}));
    if (s->dtype != DType::kF32) return Unsupported(*s, "F32");
    w.owned_scales = CopyToHost(*s, DType::kF32);
    w.scale_inv = w.owned_scales.data<float>();
    return absl::OkStatus();
  }

  static absl::Status Unsupported(const TensorEntry& e, const char* expected) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, " in ", *e.file,
                                                   " has dtype ", std::string(DTypeName(e.dtype)),
                                                   ", which is not supported here (expected ",
                                                   expected, ")"));
  }

  const ModelConfig& config_;
  const Checkpoint& ckpt_;
};

// Same dtype, shape and bytes (scales included).
bool SameContents(const Weight& a, const Weight& b) {
  if (a.dtype != b.dtype || a.rows != b.rows || a.cols != b.cols) return false;
  if ((a.scale_inv == nullptr) != (b.scale_inv == nullptr)) return false;
  if (a.scale_inv) {
    if (a.block_rows != b.block_rows || a.block_cols != b.block_cols) return false;
    const size_t scale_bytes = static_cast<size_t>(a.scale_rows() * a.scale_cols()) * sizeof(float);
    if (std::memcmp(a.scale_inv, b.scale_inv, scale_bytes) != 0) return false;
  }
  const size_t bytes = static_cast<size_t>(a.rows * a.cols) * DTypeSize(a.dtype);
  return std::memcmp(a.data, b.data, bytes) == 0;
}

}  // namespace

absl::StatusOr<ModelWeights> BindWeights(const ModelConfig& c, const Checkpoint& checkpoint) {
  Binder b(c, checkpoint);
  ModelWeights w;
  DSERVE_ASSIGN_OR_RETURN(w.embed,
                          b.Matrix("model.embed_tokens.weight", c.vocab_size, c.hidden_size));
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    DSERVE_ASSIGN_OR_RETURN(BlockWeights block, b.Block(layer));
    w.layers.push_back(std::move(block));
  }
  DSERVE_ASSIGN_OR_RETURN(w.final_norm, b.Vector("model.norm.weight", c.hidden_size));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    DSERVE_ASSIGN_OR_RETURN(w.lm_head, b.Matrix("lm_head.weight", c.vocab_size, c.hidden_size));
  }

  const int mtp_layer = c.num_hidden_layers;
  const std::string p = absl::StrCat("model.layers.", mtp_layer, ".");
  // Some re-packaged V3 checkpoints drop the MTP layer but keep the config field: then the
  // model simply has no MTP head.
  if (c.num_nextn_predict_layers > 0 && b.Has(p + "eh_proj.weight")) {
    MtpWeights m;
    DSERVE_ASSIGN_OR_RETURN(m.enorm, b.Vector(p + "enorm.weight", c.hidden_size));
    DSERVE_ASSIGN_OR_RETURN(m.hnorm, b.Vector(p + "hnorm.weight", c.hidden_size));
    DSERVE_ASSIGN_OR_RETURN(m.eh_proj,
                            b.Matrix(p + "eh_proj.weight", c.hidden_size, 2 * c.hidden_size));
    DSERVE_ASSIGN_OR_RETURN(m.block, b.Block(mtp_layer));
    DSERVE_ASSIGN_OR_RETURN(m.head_norm, b.Vector(p + "shared_head.norm.weight", c.hidden_size));
    // DeepSeek-V3 shares these two with the main model; checkpoints that leave them out of
    // the MTP layer mean exactly that.
    if (b.Has(p + "embed_tokens.weight")) {
      DSERVE_ASSIGN_OR_RETURN(m.embed,
                              b.Matrix(p + "embed_tokens.weight", c.vocab_size, c.hidden_size));
    } else {
      m.embed = w.embed;
    }
    if (b.Has(p + "shared_head.head.weight")) {
      DSERVE_ASSIGN_OR_RETURN(m.head,
                              b.Matrix(p + "shared_head.head.weight", c.vocab_size, c.hidden_size));
    } else {
      m.head = w.lm_head;
    }
    // The published V3 checkpoint stores both as byte copies of the main ones (1.85 GB each in
    // BF16): use the main ones then, so neither copy is read or prepared again.
    for (auto [mtp, main] : {std::pair{&m.embed, &w.embed}, std::pair{&m.head, &w.lm_head}}) {
      if (mtp->data != main->data && SameContents(*mtp, *main)) {
        *mtp = *main;
        w.mtp_bytes_shared += static_cast<int64_t>(main->rows * main->cols * DTypeSize(main->dtype));
      }
    }
    w.mtp = std::move(m);
  }
  return w;
}

}  // namespace dserve::models
