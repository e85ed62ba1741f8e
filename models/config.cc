#include "models/config.h"

#include "core/check.h"

#include <cmath>
#include <limits>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace dserve::models {
namespace {

using Json = nlohmann::json;

// Reads fields out of one JSON object, collecting every problem so that a bad config.json
// is reported in one message instead of one field per attempt.
class FieldReader {
 public:
  explicit FieldReader(const Json& object) : object_(object) {}

  bool Has(const char* key) const { return object_.contains(key) && !object_[key].is_null(); }

  template <typename T>
  void Required(const char* key, T* out) {
    if (!Has(key)) {
      missing_.push_back(key);
      return;
    }
    Optional(key, out);
  }

  template <typename T>
  void Optional(const char* key, T* out) {
    if (!Has(key)) return;
    const Json& v = object_[key];
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) return Wrong(key, "a boolean", v);
      *out = v.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) return Wrong(key, "an integer", v);
      const int64_t x = v.get<int64_t>();
      if (x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max() ||
          (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX})) {
        return Wrong(key, "an integer in range", v);
      }
      *out = static_cast<T>(x);
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) return Wrong(key, "a number", v);
      *out = v.get<double>();
    } else {
      if (!v.is_string()) return Wrong(key, "a string", v);
      *out = v.get<std::string>();
    }
  }

  void Problem(std::string text) { problems_.push_back(std::move(text)); }

  absl::Status Result(const std::string& source) const {
    std::vector<std::string> all = problems_;
    if (!missing_.empty()) {
      all.insert(all.begin(), absl::StrCat("missing required field(s): ",
                                           absl::StrJoin(missing_, ", ")));
    }
    if (all.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", absl::StrJoin(all, "; ")));
  }

 private:
  void Wrong(const char* key, const char* expected, const Json& v) {
    problems_.push_back(absl::StrCat("field ", key, " must be ", expected, ", got ", v.dump()));
  }

  const Json& object_;
  std::vector<std::string> missing_;
  std::vector<std::string> problems_;
};

void ReadRopeScaling(const Json& root, ModelConfig& c, FieldReader& outer) {
  if (!root.contains("rope_scaling") || root["rope_scaling"].is_null()) return;
  const Json& rs = root["rope_scaling"];
  if (!rs.is_object()) return outer.Problem("field rope_scaling must be an object or null");
  FieldReader r(rs);
  std::string type;
  r.Optional("type", &type);
  r.Optional("rope_type", &type);
  if (type != "yarn") {
    return outer.Problem(absl::StrCat("rope_scaling type '", type,
                                      "' is not supported (DeepSeek checkpoints use 'yarn')"));
  }
  RopeScaling& y = c.rope_scaling;
  y.yarn = true;
  r.Required("factor", &y.factor);
  r.Optional("original_max_position_embeddings", &y.original_max_position_embeddings);
  r.Optional("beta_fast", &y.beta_fast);
  r.Optional("beta_slow", &y.beta_slow);
  r.Optional("mscale", &y.mscale);
  r.Optional("mscale_all_dim", &y.mscale_all_dim);
  if (absl::Status s = r.Result("rope_scaling"); !s.ok()) outer.Problem(std::string(s.message()));
}

void ReadQuantization(const Json& root, ModelConfig& c, FieldReader& outer) {
  if (!root.contains("quantization_config") || root["quantization_config"].is_null()) return;
  FieldReader r(root["quantization_config"]);
  std::string method, fmt;
  r.Required("quant_method", &method);
  r.Optional("fmt", &fmt);
  if (absl::Status s = r.Result("quantization_config"); !s.ok()) {
    return outer.Problem(std::string(s.message()));
  }
  if (method != "fp8" || (!fmt.empty() && fmt != "e4m3")) {
    return outer.Problem(absl::StrCat("quantization_config quant_method '", method, "' fmt '", fmt,
                                      "' is not supported (expected fp8 / e4m3)"));
  }
  c.fp8 = true;
  const Json& q = root["quantization_config"];
  if (q.contains("weight_block_size")) {
    const Json& b = q["weight_block_size"];
    if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() ||
        !b[1].is_number_integer()) {
      return outer.Problem("quantization_config.weight_block_size must be [rows, cols]");
    }
    c.weight_block_size[0] = b[0].get<int64_t>();
    c.weight_block_size[1] = b[1].get<int64_t>();
    // Kernels accumulate 16-wide vectors inside one scale block.
    if (c.weight_block_size[0] <= 0 || c.weight_block_size[1] <= 0 ||
        c.weight_block_size[1] % 16 != 0) {
      outer.Problem(absl::StrCat("quantization_config.weight_block_size [",
                                 c.weight_block_size[0], ", ", c.weight_block_size[1],
                                 "] is not supported (columns must be a multiple of 16)"));
    }
  }
}

absl::Status Validate(const ModelConfig& c, const std::string& source) {
  std::vector<std::string> problems;
  auto require = [&](bool ok, std::string text) {
    if (!ok) problems.push_back(std::move(text));
  };
  require(c.vocab_size > 0, "vocab_size must be positive");
  require(c.hidden_size > 0, "hidden_size must be positive");
  require(c.num_hidden_layers > 0, "num_hidden_layers must be positive");
  require(c.num_attention_heads > 0, "num_attention_heads must be positive");
  require(c.kv_lora_rank > 0, "kv_lora_rank must be positive");
  require(c.qk_nope_head_dim > 0, "qk_nope_head_dim must be positive");
  require(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0,
          "qk_rope_head_dim must be positive and even");
  require(c.v_head_dim > 0, "v_head_dim must be positive");
  require(c.q_lora_rank >= 0, "q_lora_rank must be positive or null");
  require(c.rms_norm_eps > 0, "rms_norm_eps must be positive");
  require(c.rope_theta > 0, "rope_theta must be positive");
  require(c.num_nextn_predict_layers >= 0 && c.num_nextn_predict_layers <= 1,
          "num_nextn_predict_layers must be 0 or 1");
  if (c.rope_scaling.yarn) {
    require(c.rope_scaling.factor >= 1, "rope_scaling.factor must be >= 1");
    require(c.rope_scaling.original_max_position_embeddings > 0,
            "rope_scaling.original_max_position_embeddings must be positive");
  }
  if (c.n_routed_experts > 0) {
    require(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts,
            "num_experts_per_tok must be in [1, n_routed_experts]");
    require(c.moe_intermediate_size > 0, "moe_intermediate_size must be positive");
    require(c.moe_layer_freq > 0, "moe_layer_freq must be positive");
    require(c.n_shared_experts >= 0, "n_shared_experts must be >= 0");
    require(c.n_group > 0 && c.n_routed_experts % c.n_group == 0,
            "n_routed_experts must be a multiple of n_group");
    require(c.topk_group > 0 && c.topk_group <= c.n_group, "topk_group must be in [1, n_group]");
    if (c.n_group > 0 && c.topk_group > 0 && c.n_routed_experts % c.n_group == 0 &&
        c.topk_method != TopkMethod::kGreedy) {
      require(c.topk_group * (c.n_routed_experts / c.n_group) >= c.num_experts_per_tok,
              "topk_group groups hold fewer experts than num_experts_per_tok");
    }
    if (c.topk_method == TopkMethod::kNoauxTc) {
      require(c.scoring_func == ScoringFunc::kSigmoid,
              "topk_method noaux_tc needs scoring_func sigmoid");
      require(c.n_group > 0 && c.n_routed_experts / c.n_group >= 2,
              "topk_method noaux_tc ranks groups by their top two experts: each group needs two");
    }
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", absl::StrJoin(problems, "; ")));
}

}  // namespace

double YarnMscale(double scale, double mscale) {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

double ModelConfig::SoftmaxScale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling.yarn && rope_scaling.mscale_all_dim != 0) {
    const double m = YarnMscale(rope_scaling.factor, rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

kernels::RouterConfig ModelConfig::Router() const {
  kernels::RouterConfig r;
  r.num_experts = n_routed_experts;
  r.top_k = num_experts_per_tok;
  r.n_group = n_group;
  r.topk_group = topk_group;
  r.scoring = scoring_func;
  r.method = topk_method;
  r.norm_topk_prob = norm_topk_prob;
  r.routed_scaling_factor = static_cast<float>(routed_scaling_factor);
  r.scale_only_unnormalized = !is_v3();
  return r;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source_name) {
  Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, " is not a JSON object"));
  }
  ModelConfig c;
  FieldReader r(root);
  r.Required("model_type", &c.model_type);
  // An unsupported model_type is one more problem: the rest is still checked (with V2's
  // defaults) so that one message lists everything.
  if (r.Has("model_type") && root["model_type"].is_string() && c.model_type != "deepseek_v3" &&
      c.model_type != "deepseek_v2") {
    r.Problem(absl::StrCat("model_type '", c.model_type,
                           "' is not supported (expected deepseek_v3 or deepseek_v2)"));
  }
  const bool v3 = c.model_type == "deepseek_v3";
  r.Required("vocab_size", &c.vocab_size);
  r.Required("hidden_size", &c.hidden_size);
  r.Required("intermediate_size", &c.intermediate_size);
  r.Required("num_hidden_layers", &c.num_hidden_layers);
  r.Required("num_attention_heads", &c.num_attention_heads);
  r.Required("kv_lora_rank", &c.kv_lora_rank);
  r.Required("qk_nope_head_dim", &c.qk_nope_head_dim);
  r.Required("qk_rope_head_dim", &c.qk_rope_head_dim);
  r.Required("v_head_dim", &c.v_head_dim);
  r.Optional("q_lora_rank", &c.q_lora_rank);
  r.Optional("rms_norm_eps", &c.rms_norm_eps);
  r.Optional("rope_theta", &c.rope_theta);
  c.max_position_embeddings = 4096;
  r.Optional("max_position_embeddings", &c.max_position_embeddings);

  std::string hidden_act = "silu";
  r.Optional("hidden_act", &hidden_act);
  if (hidden_act != "silu") r.Problem(absl::StrCat("hidden_act '", hidden_act, "' is not silu"));

  r.Optional("n_routed_experts", &c.n_routed_experts);
  if (c.n_routed_experts > 0) {
    r.Required("num_experts_per_tok", &c.num_experts_per_tok);
    r.Required("moe_intermediate_size", &c.moe_intermediate_size);
  }
  r.Optional("n_shared_experts", &c.n_shared_experts);
  r.Optional("first_k_dense_replace", &c.first_k_dense_replace);
  r.Optional("moe_layer_freq", &c.moe_layer_freq);
  r.Optional("n_group", &c.n_group);
  r.Optional("topk_group", &c.topk_group);
  c.norm_topk_prob = v3;  // the Hugging Face defaults of each model type
  r.Optional("norm_topk_prob", &c.norm_topk_prob);
  r.Optional("routed_scaling_factor", &c.routed_scaling_factor);

  std::string scoring = v3 ? "sigmoid" : "softmax";
  r.Optional("scoring_func", &scoring);
  if (scoring == "sigmoid") {
    c.scoring_func = ScoringFunc::kSigmoid;
  } else if (scoring == "softmax") {
    c.scoring_func = ScoringFunc::kSoftmax;
  } else {
    r.Problem(absl::StrCat("scoring_func '", scoring, "' is not softmax or sigmoid"));
  }
  std::string topk_method = v3 ? "noaux_tc" : "greedy";
  r.Optional("topk_method", &topk_method);
  if (topk_method == "greedy") {
    c.topk_method = TopkMethod::kGreedy;
  } else if (topk_method == "group_limited_greedy") {
    c.topk_method = TopkMethod::kGroupLimitedGreedy;
  } else if (topk_method == "noaux_tc") {
    c.topk_method = TopkMethod::kNoauxTc;
  } else {
    r.Problem(absl::StrCat("topk_method '", topk_method,
                           "' is not greedy, group_limited_greedy or noaux_tc"));
  }

  if (v3) r.Optional("num_nextn_predict_layers", &c.num_nextn_predict_layers);
  r.Optional("tie_word_embeddings", &c.tie_word_embeddings);
  r.Optional("bos_token_id", &c.bos_token_id);
  r.Optional("eos_token_id", &c.eos_token_id);
  ReadRopeScaling(root, c, r);
  ReadQuantization(root, c, r);

  DSERVE_RETURN_IF_ERROR(r.Result(source_name));
  DSERVE_RETURN_IF_ERROR(Validate(c, source_name));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path,
                                            ": is --model a Hugging Face checkpoint folder?"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseModelConfig(text.str(), path);
}

}  // namespace dserve::models
