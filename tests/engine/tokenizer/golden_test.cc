// The real DeepSeek-V3 tokenizer against golden vectors made by @lenml/tokenizers (the
// transformers.js port) from the same files: ids for every corpus string (no special tokens
// added; special-token text inside the strings included), decodes, and decodes of id
// sequences that form invalid UTF-8. Where @lenml/tokenizers itself departs from Hugging Face
// (JavaScript's \s is not Unicode White_Space: U+FEFF counts, U+0085 does not), the expected
// ids are Hugging Face's, listed with the reason in hf_divergences.jsonl.
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "models/model_generator.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {
namespace {

using Json = nlohmann::json;

std::vector<Json> ReadJsonl(const std::string& name) {
  std::ifstream in(std::string(DSERVE_TOKENIZER_GOLDENS) + "/" + name);
  EXPECT_TRUE(in.good()) << name;
  std::vector<Json> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(Json::parse(line));
  }
  return rows;
}

class GoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto t = LoadTokenizer(models::DefaultTokenizerDir());
    ASSERT_TRUE(t.ok()) << t.status() << " (scripts/setup.sh fetches the tokenizer)";
    tokenizer_ = std::move(t).value().release();
  }
  static void TearDownTestSuite() { delete tokenizer_; }
  static const Tokenizer* tokenizer_;
};
const Tokenizer* GoldenTest::tokenizer_ = nullptr;

TEST_F(GoldenTest, EncodeMatchesEveryCorpusString) {
  std::map<std::string, std::vector<int32_t>> hugging_face;
  for (const Json& d : ReadJsonl("hf_divergences.jsonl")) {
    hugging_face[d["text"].get<std::string>()] = d["hf_ids"].get<std::vector<int32_t>>();
  }
  const std::vector<Json> goldens = ReadJsonl("goldens.jsonl");
  ASSERT_GE(goldens.size(), 500u);
  int identical = 0, as_hugging_face = 0;
  for (const Json& g : goldens) {
    const std::string text = g["text"].get<std::string>();
    auto ids = tokenizer_->Encode(text, /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto hf = hugging_face.find(text);
    const std::vector<int32_t> want =
        hf != hugging_face.end() ? hf->second : g["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(*ids, want) << Json(text).dump();
    if (*ids == want) (hf != hugging_face.end() ? as_hugging_face : identical)++;
    // The decode of those ids, as the golden decoded them.
    auto text_back = tokenizer_->Decode(g["ids"].get<std::vector<int32_t>>(), false);
    ASSERT_TRUE(text_back.ok());
    EXPECT_EQ(*text_back, g["decoded"].get<std::string>()) << Json(text).dump();
  }
  RecordProperty("identical_to_lenml", identical);
  RecordProperty("identical_to_hugging_face_where_lenml_differs", as_hugging_face);
  EXPECT_EQ(identical + as_hugging_face, static_cast<int>(goldens.size()));
  EXPECT_EQ(as_hugging_face, static_cast<int>(hugging_face.size()));
}

TEST_F(GoldenTest, DecodeMatchesIncludingInvalidUtf8AndSkippedSpecials) {
  const std::vector<Json> goldens = ReadJsonl("decode_goldens.jsonl");
  ASSERT_GE(goldens.size(), 300u);
  for (const Json& g : goldens) {
    auto text = tokenizer_->Decode(g["ids"].get<std::vector<int32_t>>(),
                                   g["skip_special_tokens"].get<bool>());
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, g["decoded"].get<std::string>()) << g.dump();
  }
}

TEST_F(GoldenTest, BosIsAddedAsTokenizerConfigSays) {
  // tokenizer_config.json: add_bos_token true, bos <｜begin▁of▁sentence｜> (id 0); the
  // goldens hold the text's ids alone because @lenml/tokenizers does not apply this rule.
  EXPECT_EQ(tokenizer_->bos_id(), 0);
  EXPECT_EQ(tokenizer_->eos_id(), 1);
  auto with = tokenizer_->Encode("Hello world", true);
  auto without = tokenizer_->Encode("Hello world", false);
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_EQ(with->front(), 0);
  EXPECT_EQ(std::vector<int32_t>(with->begin() + 1, with->end()), *without);
  EXPECT_EQ(without->back(), with->back());  // no EOS: add_eos_token is false
}

}  // namespace
}  // namespace dserve::engine
