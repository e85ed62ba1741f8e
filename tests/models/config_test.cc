// ParseModelConfig / LoadModelConfig: the two reference configs, every required field, type
// errors, unsupported variants, per-model-type defaults and the derived quantities.
#include "models/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/test_env.h"

namespace dserve::models {
namespace {

using Json = nlohmann::json;
using ::dserve::testing::TestdataPath;

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::stringstream text;
  text << in.rdbuf();
  return Json::parse(text.str());
}

Json V3Json() { return ReadJson(TestdataPath("micro-v3/config.json")); }
Json V2Json() { return ReadJson(TestdataPath("micro-v2/config.json")); }

absl::StatusOr<ModelConfig> Parse(const Json& j) { return ParseModelConfig(j.dump(), "cfg.json"); }

// The smallest config each model type accepts: only the required fields (plus an MoE).
Json Minimal(const std::string& model_type) {
  return Json{{"model_type", model_type},   {"vocab_size", 100},      {"hidden_size", 64},
              {"intermediate_size", 128},   {"num_hidden_layers", 3}, {"num_attention_heads", 4},
              {"kv_lora_rank", 32},         {"qk_nope_head_dim", 16}, {"qk_rope_head_dim", 8},
              {"v_head_dim", 16},           {"n_routed_experts", 8},  {"num_experts_per_tok", 2},
              {"moe_intermediate_size", 32}};
}

void ExpectInvalid(const absl::StatusOr<ModelConfig>& c, const std::vector<std::string>& words) {
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  for (const std::string& w : words) {
    EXPECT_NE(c.status().message().find(w), std::string::npos)
        << "message does not name '" << w << "': " << c.status().message();
  }
}

// YaRN's mscale as DeepSeek defines it, for the expected values below.
double Mscale(double factor, double m) {
  return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1;
}

TEST(ModelConfig, MicroV3) {
  auto c = LoadModelConfig(TestdataPath("micro-v3"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "deepseek_v3");
  EXPECT_TRUE(c->is_v3());
  EXPECT_EQ(c->vocab_size, 2048);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 512);
  EXPECT_EQ(c->num_hidden_layers, 4);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->q_lora_rank, 128);
  EXPECT_EQ(c->kv_lora_rank, 128);
  EXPECT_EQ(c->qk_nope_head_dim, 32);
  EXPECT_EQ(c->qk_rope_head_dim, 16);
  EXPECT_EQ(c->qk_head_dim(), 48);
  EXPECT_EQ(c->v_head_dim, 32);
  EXPECT_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_EQ(c->rope_theta, 10000);
  EXPECT_EQ(c->max_position_embeddings, 163840);
  EXPECT_TRUE(c->rope_scaling.yarn);
  EXPECT_EQ(c->rope_scaling.factor, 40);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_EQ(c->rope_scaling.beta_fast, 32);
  EXPECT_EQ(c->rope_scaling.beta_slow, 1);
  EXPECT_EQ(c->rope_scaling.mscale, 1.0);
  EXPECT_EQ(c->rope_scaling.mscale_all_dim, 1.0);
  EXPECT_EQ(c->n_routed_experts, 16);
  EXPECT_EQ(c->n_shared_experts, 1);
  EXPECT_EQ(c->num_experts_per_tok, 4);
  EXPECT_EQ(c->moe_intermediate_size, 128);
  EXPECT_EQ(c->first_k_dense_replace, 1);
  EXPECT_EQ(c->moe_layer_freq, 1);
  EXPECT_EQ(c->n_group, 4);
  EXPECT_EQ(c->topk_group, 2);
  EXPECT_EQ(c->topk_method, TopkMethod::kNoauxTc);
  EXPECT_EQ(c->scoring_func, ScoringFunc::kSigmoid);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->routed_scaling_factor, 2.5);
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_EQ(c->eos_token_id, 1);
  EXPECT_TRUE(c->fp8);
  EXPECT_EQ(c->weight_block_size[0], 128);
  EXPECT_EQ(c->weight_block_size[1], 128);
}

TEST(ModelConfig, MicroV2) {
  auto c = LoadModelConfig(TestdataPath("micro-v2"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "deepseek_v2");
  EXPECT_FALSE(c->is_v3());
  EXPECT_EQ(c->vocab_size, 2048);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 512);
  EXPECT_EQ(c->num_hidden_layers, 4);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->q_lora_rank, 0);  // null in the file
  EXPECT_EQ(c->kv_lora_rank, 128);
  EXPECT_EQ(c->qk_nope_head_dim, 32);
  EXPECT_EQ(c->qk_rope_head_dim, 16);
  EXPECT_EQ(c->v_head_dim, 32);
  EXPECT_TRUE(c->rope_scaling.yarn);
  EXPECT_EQ(c->rope_scaling.factor, 40);
  EXPECT_EQ(c->rope_scaling.mscale, 0.707);
  EXPECT_EQ(c->rope_scaling.mscale_all_dim, 0.707);
  EXPECT_EQ(c->n_routed_experts, 16);
  EXPECT_EQ(c->n_shared_experts, 2);
  EXPECT_EQ(c->num_experts_per_tok, 4);
  EXPECT_EQ(c->n_group, 1);
  EXPECT_EQ(c->topk_group, 1);
  EXPECT_EQ(c->topk_method, TopkMethod::kGreedy);
  EXPECT_EQ(c->scoring_func, ScoringFunc::kSoftmax);
  EXPECT_FALSE(c->norm_topk_prob);
  EXPECT_EQ(c->routed_scaling_factor, 1.0);
  EXPECT_EQ(c->num_nextn_predict_layers, 0);
  EXPECT_FALSE(c->fp8);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_EQ(c->eos_token_id, 1);
}

TEST(ModelConfig, LoadFromMissingFolderIsNotFound) {
  auto c = LoadModelConfig("/nonexistent/dserve-model");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/dserve-model/config.json"), std::string::npos)
      << c.status();
}

TEST(ModelConfig, NotJson) {
  for (const char* text : {"", "{", "not json", "[1, 2]", "42", "\"deepseek_v3\""}) {
    auto c = ParseModelConfig(text, "weird.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find("weird.json"), std::string::npos) << c.status();
  }
}

TEST(ModelConfig, EmptyObjectNamesEveryRequiredField) {
  ExpectInvalid(ParseModelConfig("{}", "cfg.json"),
                {"cfg.json", "model_type", "vocab_size", "hidden_size", "intermediate_size",
                 "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                 "qk_rope_head_dim", "v_head_dim"});
}

TEST(ModelConfig, EveryMissingFieldIsNamedAtOnce) {
  const std::vector<std::string> required = {
      "vocab_size",          "hidden_size",         "intermediate_size",    "num_hidden_layers",
      "num_attention_heads", "kv_lora_rank",        "qk_nope_head_dim",     "qk_rope_head_dim",
      "v_head_dim",          "num_experts_per_tok", "moe_intermediate_size"};
  Json j = V3Json();
  for (const std::string& f : required) j.erase(f);
  ExpectInvalid(Parse(j), required);
  // null counts as missing.
  Json n = V3Json();
  for (const std::string& f : required) n[f] = nullptr;
  ExpectInvalid(Parse(n), required);
}

TEST(ModelConfig, EachMissingFieldAloneIsNamed) {
  for (const std::string f :
       {"model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
        "num_experts_per_tok", "moe_intermediate_size"}) {
    SCOPED_TRACE(f);
    Json j = V3Json();
    j.erase(f);
    ExpectInvalid(Parse(j), {"missing", f});
  }
}

TEST(ModelConfig, MoeFieldsOnlyRequiredWithRoutedExperts) {
  Json j = Minimal("deepseek_v2");
  j.erase("n_routed_experts");
  j.erase("num_experts_per_tok");
  j.erase("moe_intermediate_size");
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_routed_experts, 0);
  for (int layer = 0; layer < 3; ++layer) EXPECT_FALSE(c->IsMoeLayer(layer));
}

TEST(ModelConfig, WrongTypesAreNamed) {
  {
    Json j = V3Json();
    j["hidden_size"] = "256";
    ExpectInvalid(Parse(j), {"hidden_size", "integer", "\"256\""});
  }
  {
    Json j = V3Json();
    j["hidden_size"] = 256.5;
    ExpectInvalid(Parse(j), {"hidden_size", "integer"});
  }
  {
    Json j = V3Json();
    j["norm_topk_prob"] = 1;
    ExpectInvalid(Parse(j), {"norm_topk_prob", "boolean"});
  }
  {
    Json j = V3Json();
    j["rms_norm_eps"] = "1e-6";
    ExpectInvalid(Parse(j), {"rms_norm_eps", "number"});
  }
  {
    Json j = V3Json();
    j["model_type"] = 3;
    j.erase("vocab_size");
    // The wrong JSON type is reported as such, and the other problems are not dropped.
    ExpectInvalid(Parse(j), {"model_type must be a string", "vocab_size"});
    EXPECT_EQ(Parse(j).status().message().find("model_type ''"), std::string::npos);
  }
  {
    // Out of the field's range: not silently truncated to another value.
    Json j = V3Json();
    j["num_hidden_layers"] = 4294967296;
    ExpectInvalid(Parse(j), {"num_hidden_layers", "in range"});
    j = V3Json();
    j["vocab_size"] = uint64_t{1} << 63;
    ExpectInvalid(Parse(j), {"vocab_size", "in range"});
  }
  {
    // Several at once: all of them named in one message.
    Json j = V3Json();
    j["num_attention_heads"] = "8";
    j["kv_lora_rank"] = true;
    j["scoring_func"] = 7;
    j["tie_word_embeddings"] = "false";
    j["rope_scaling"]["factor"] = "40";
    ExpectInvalid(Parse(j), {"num_attention_heads", "kv_lora_rank", "scoring_func",
                             "tie_word_embeddings", "factor"});
  }
  {
    Json j = V3Json();
    j["rope_scaling"] = "yarn";
    ExpectInvalid(Parse(j), {"rope_scaling"});
  }
}

TEST(ModelConfig, UnsupportedModelType) {
  for (const char* type : {"llama", "deepseek", "deepseek_v4", ""}) {
    Json j = V3Json();
    j["model_type"] = type;
    j.erase("hidden_size");
    // Every problem in one message: the unsupported type and the missing field.
    ExpectInvalid(Parse(j), {"model_type", std::string("'") + type + "'", "hidden_size"});
  }
}

TEST(ModelConfig, UnsupportedEnumValues) {
  {
    Json j = V3Json();
    j["scoring_func"] = "tanh";
    ExpectInvalid(Parse(j), {"scoring_func", "tanh"});
  }
  {
    Json j = V3Json();
    j["topk_method"] = "random";
    ExpectInvalid(Parse(j), {"topk_method", "random"});
  }
  {
    Json j = V3Json();
    j["hidden_act"] = "gelu";
    ExpectInvalid(Parse(j), {"hidden_act", "gelu"});
  }
}

TEST(ModelConfig, RopeScalingOtherThanYarnIsRejected) {
  for (const char* type : {"linear", "dynamic", "longrope", "default", ""}) {
    SCOPED_TRACE(type);
    Json j = V3Json();
    j["rope_scaling"] = Json{{"type", type}, {"factor", 4.0}};
    ExpectInvalid(Parse(j), {"rope_scaling", std::string("'") + type + "'"});
  }
  // The newer key spelling is read too.
  Json j = V3Json();
  j["rope_scaling"] = Json{{"rope_type", "linear"}, {"factor", 4.0}};
  ExpectInvalid(Parse(j), {"rope_scaling", "'linear'"});
}

TEST(ModelConfig, RopeScalingVariantsAccepted) {
  {
    Json j = V3Json();
    j["rope_scaling"] = nullptr;
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_FALSE(c->rope_scaling.yarn);
  }
  {
    Json j = V3Json();
    j.erase("rope_scaling");
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_FALSE(c->rope_scaling.yarn);
  }
  {
    // rope_type spelling, defaults for the optional YaRN fields.
    Json j = V3Json();
    j["rope_scaling"] = Json{{"rope_type", "yarn"}, {"factor", 8}};
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->rope_scaling.yarn);
    EXPECT_EQ(c->rope_scaling.factor, 8);
    EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 4096);
    EXPECT_EQ(c->rope_scaling.beta_fast, 32);
    EXPECT_EQ(c->rope_scaling.beta_slow, 1);
    EXPECT_EQ(c->rope_scaling.mscale, 1);
    EXPECT_EQ(c->rope_scaling.mscale_all_dim, 0);
  }
  {
    Json j = V3Json();
    j["rope_scaling"].erase("factor");
    ExpectInvalid(Parse(j), {"rope_scaling", "factor"});
  }
}

TEST(ModelConfig, QuantizationConfig) {
  {
    Json j = V3Json();
    j["quantization_config"]["quant_method"] = "bitsandbytes";
    ExpectInvalid(Parse(j), {"quantization_config", "bitsandbytes"});
  }
  {
    Json j = V3Json();
    j["quantization_config"]["quant_method"] = "awq";
    ExpectInvalid(Parse(j), {"quant_method", "awq"});
  }
  {
    Json j = V3Json();
    j["quantization_config"]["fmt"] = "e5m2";
    ExpectInvalid(Parse(j), {"quantization_config", "e5m2"});
  }
  {
    Json j = V3Json();
    j["quantization_config"].erase("quant_method");
    ExpectInvalid(Parse(j), {"quantization_config", "quant_method"});
  }
  {
    Json j = V3Json();
    j["quantization_config"]["weight_block_size"] = {128, 100};
    ExpectInvalid(Parse(j), {"weight_block_size"});
  }
  {
    Json j = V3Json();
    j["quantization_config"]["weight_block_size"] = {128};
    ExpectInvalid(Parse(j), {"weight_block_size"});
  }
  {
    Json j = V3Json();
    j["quantization_config"]["weight_block_size"] = {64, 32};
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->fp8);
    EXPECT_EQ(c->weight_block_size[0], 64);
    EXPECT_EQ(c->weight_block_size[1], 32);
  }
  {
    Json j = V3Json();
    j["quantization_config"].erase("weight_block_size");
    j["quantization_config"].erase("fmt");
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->fp8);
    EXPECT_EQ(c->weight_block_size[0], 128);
    EXPECT_EQ(c->weight_block_size[1], 128);
  }
  {
    Json j = V3Json();
    j.erase("quantization_config");
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_FALSE(c->fp8);
  }
}

TEST(ModelConfig, V2Defaults) {
  auto c = Parse(Minimal("deepseek_v2"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scoring_func, ScoringFunc::kSoftmax);
  EXPECT_EQ(c->topk_method, TopkMethod::kGreedy);
  EXPECT_FALSE(c->norm_topk_prob);
  EXPECT_EQ(c->routed_scaling_factor, 1.0);
  EXPECT_EQ(c->q_lora_rank, 0);
  EXPECT_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_EQ(c->rope_theta, 10000);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_FALSE(c->rope_scaling.yarn);
  EXPECT_EQ(c->n_shared_experts, 0);
  EXPECT_EQ(c->first_k_dense_replace, 0);
  EXPECT_EQ(c->moe_layer_freq, 1);
  EXPECT_EQ(c->n_group, 1);
  EXPECT_EQ(c->topk_group, 1);
  EXPECT_EQ(c->num_nextn_predict_layers, 0);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_EQ(c->eos_token_id, -1);
  EXPECT_FALSE(c->fp8);
  // V2 has no MTP: the field is ignored there.
  Json j = Minimal("deepseek_v2");
  j["num_nextn_predict_layers"] = 1;
  auto with_mtp = Parse(j);
  ASSERT_TRUE(with_mtp.ok()) << with_mtp.status();
  EXPECT_EQ(with_mtp->num_nextn_predict_layers, 0);
}

TEST(ModelConfig, V3Defaults) {
  Json j = Minimal("deepseek_v3");
  j["n_group"] = 4;
  j["topk_group"] = 2;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scoring_func, ScoringFunc::kSigmoid);
  EXPECT_EQ(c->topk_method, TopkMethod::kNoauxTc);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->routed_scaling_factor, 1.0);
  EXPECT_EQ(c->num_nextn_predict_layers, 0);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  // Explicit values override the model type's defaults.
  j["scoring_func"] = "softmax";
  j["topk_method"] = "greedy";
  j["norm_topk_prob"] = false;
  auto o = Parse(j);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->scoring_func, ScoringFunc::kSoftmax);
  EXPECT_EQ(o->topk_method, TopkMethod::kGreedy);
  EXPECT_FALSE(o->norm_topk_prob);
}

TEST(ModelConfig, QLoraRankNullIsZero) {
  Json j = V3Json();
  j["q_lora_rank"] = nullptr;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_lora_rank, 0);
  j.erase("q_lora_rank");
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_lora_rank, 0);
}

TEST(ModelConfig, InconsistentValuesAreRejected) {
  struct Case {
    const char* key;
    Json value;
    const char* word;
  };
  const Case cases[] = {
      {"qk_rope_head_dim", 15, "qk_rope_head_dim"},
      {"hidden_size", 0, "hidden_size"},
      {"num_experts_per_tok", 17, "num_experts_per_tok"},
      {"topk_group", 5, "topk_group"},
      {"n_group", 3, "n_group"},
      {"scoring_func", "softmax", "noaux_tc"},
      {"num_nextn_predict_layers", 2, "num_nextn_predict_layers"},
      {"moe_layer_freq", 0, "moe_layer_freq"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.key);
    Json j = V3Json();
    j[k.key] = k.value;
    ExpectInvalid(Parse(j), {"cfg.json", k.word});
  }
}

TEST(ModelConfig, SoftmaxScale) {
  auto v3 = LoadModelConfig(TestdataPath("micro-v3"));
  ASSERT_TRUE(v3.ok()) << v3.status();
  const double m3 = 0.1 * 1.0 * std::log(40.0) + 1.0;
  EXPECT_NEAR(v3->SoftmaxScale(), std::pow(48.0, -0.5) * m3 * m3, 1e-15);

  auto v2 = LoadModelConfig(TestdataPath("micro-v2"));
  ASSERT_TRUE(v2.ok()) << v2.status();
  const double m2 = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(v2->SoftmaxScale(), std::pow(48.0, -0.5) * m2 * m2, 1e-15);

  // No YaRN, or YaRN without mscale_all_dim: the plain 1/sqrt(q_head_dim).
  Json j = V3Json();
  j.erase("rope_scaling");
  auto plain = Parse(j);
  ASSERT_TRUE(plain.ok());
  EXPECT_NEAR(plain->SoftmaxScale(), std::pow(48.0, -0.5), 1e-15);
  j["rope_scaling"] = Json{{"type", "yarn"}, {"factor", 40}, {"mscale", 1.0}};
  auto no_all_dim = Parse(j);
  ASSERT_TRUE(no_all_dim.ok());
  EXPECT_NEAR(no_all_dim->SoftmaxScale(), std::pow(48.0, -0.5), 1e-15);
  // factor 1: YaRN's mscale is 1.
  j["rope_scaling"] = Json{{"type", "yarn"}, {"factor", 1}, {"mscale_all_dim", 1.0}};
  auto unit = Parse(j);
  ASSERT_TRUE(unit.ok());
  EXPECT_NEAR(unit->SoftmaxScale(), std::pow(48.0, -0.5), 1e-15);

  EXPECT_NEAR(YarnMscale(40, 0.707), Mscale(40, 0.707), 1e-15);
  EXPECT_EQ(YarnMscale(1, 0.707), 1.0);
  EXPECT_EQ(YarnMscale(0.5, 0.707), 1.0);
}

TEST(ModelConfig, IsMoeLayer) {
  auto v3 = LoadModelConfig(TestdataPath("micro-v3"));
  ASSERT_TRUE(v3.ok());
  EXPECT_FALSE(v3->IsMoeLayer(0));
  EXPECT_TRUE(v3->IsMoeLayer(1));
  EXPECT_TRUE(v3->IsMoeLayer(2));
  EXPECT_TRUE(v3->IsMoeLayer(3));
  EXPECT_TRUE(v3->IsMoeLayer(4));  // the MTP layer follows the same rule

  Json j = Minimal("deepseek_v2");
  j["num_hidden_layers"] = 10;
  j["first_k_dense_replace"] = 3;
  j["moe_layer_freq"] = 2;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  for (int layer = 0; layer < 10; ++layer) {
    const bool want = layer >= 3 && layer % 2 == 0;
    EXPECT_EQ(c->IsMoeLayer(layer), want) << "layer " << layer;
  }
}

TEST(ModelConfig, RouterMapping) {
  auto v3 = LoadModelConfig(TestdataPath("micro-v3"));
  ASSERT_TRUE(v3.ok());
  const kernels::RouterConfig r3 = v3->Router();
  EXPECT_EQ(r3.num_experts, 16);
  EXPECT_EQ(r3.top_k, 4);
  EXPECT_EQ(r3.n_group, 4);
  EXPECT_EQ(r3.topk_group, 2);
  EXPECT_EQ(r3.scoring, ScoringFunc::kSigmoid);
  EXPECT_EQ(r3.method, TopkMethod::kNoauxTc);
  EXPECT_TRUE(r3.norm_topk_prob);
  EXPECT_FLOAT_EQ(r3.routed_scaling_factor, 2.5f);
  EXPECT_FALSE(r3.scale_only_unnormalized);

  auto v2 = LoadModelConfig(TestdataPath("micro-v2"));
  ASSERT_TRUE(v2.ok());
  const kernels::RouterConfig r2 = v2->Router();
  EXPECT_EQ(r2.num_experts, 16);
  EXPECT_EQ(r2.top_k, 4);
  EXPECT_EQ(r2.n_group, 1);
  EXPECT_EQ(r2.topk_group, 1);
  EXPECT_EQ(r2.scoring, ScoringFunc::kSoftmax);
  EXPECT_EQ(r2.method, TopkMethod::kGreedy);
  EXPECT_FALSE(r2.norm_topk_prob);
  EXPECT_FLOAT_EQ(r2.routed_scaling_factor, 1.0f);
  EXPECT_TRUE(r2.scale_only_unnormalized);

  Json j = V2Json();
  j["topk_method"] = "group_limited_greedy";
  j["n_group"] = 4;
  j["topk_group"] = 2;
  j["routed_scaling_factor"] = 16.0;
  auto glg = Parse(j);
  ASSERT_TRUE(glg.ok()) << glg.status();
  EXPECT_EQ(glg->Router().method, TopkMethod::kGroupLimitedGreedy);
  EXPECT_EQ(glg->Router().n_group, 4);
  EXPECT_FLOAT_EQ(glg->Router().routed_scaling_factor, 16.0f);
  EXPECT_TRUE(glg->Router().scale_only_unnormalized);
}

}  // namespace
}  // namespace dserve::models
