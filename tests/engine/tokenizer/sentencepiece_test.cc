// A checkpoint that ships tokenizer.model instead of tokenizer.json: LoadTokenizer picks
// SentencePiece, BOS follows LlamaTokenizer's rules, decoding and streaming agree.
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/spm_train.h"
#include "tests/support/test_env.h"

namespace dserve::engine {
namespace {

const std::string& ModelDir() {
  static const std::string dir = [] {
    const std::string d = testing::ScratchDir("spm");
    std::ofstream corpus(d + "/corpus.txt");
    const char* lines[] = {"The quick brown fox jumps over the lazy dog.",
                           "A tokenizer turns text into ids and back again.",
                           "Streaming output must never split a character: é, ü, 你好.",
                           "Numbers like 12345 and 67890 appear in text too."};
    for (int i = 0; i < 200; ++i) corpus << lines[i % 4] << "\n";
    corpus.close();
    const std::string error = testing::TrainSentencePiece(d + "/corpus.txt", d + "/tokenizer", 400);
    EXPECT_EQ(error, "");
    return d;
  }();
  return dir;
}

TEST(SentencePieceTokenizer, LoadsEncodesAndDecodes) {
  auto t = LoadTokenizer(ModelDir());
  ASSERT_TRUE(t.ok()) << t.status();
  const std::string text = "The lazy fox turns text into ids: é 你好 12345.";
  auto ids = (*t)->Encode(text, /*add_special_tokens=*/true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  // LlamaTokenizer's default without a tokenizer_config.json: BOS first, no EOS.
  EXPECT_EQ(ids->front(), (*t)->bos_id());
  EXPECT_NE(ids->back(), (*t)->eos_id());
  EXPECT_TRUE((*t)->IsSpecial((*t)->bos_id()));
  auto back = (*t)->Decode(*ids, /*skip_special_tokens=*/true);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, text);
  // Byte fallback covers characters the tiny vocabulary never saw.
  auto rare = (*t)->Encode("ß∑", false);
  ASSERT_TRUE(rare.ok());
  EXPECT_EQ(*(*t)->Decode(*rare, false), "ß∑");

  // Streaming drops the leading space exactly as the full decode does.
  IncrementalDetokenizer d(**t, true);
  std::string streamed;
  for (int32_t id : *ids) streamed += d.Add(id).text;
  streamed += d.Finish().text;
  EXPECT_EQ(streamed, text);
}

TEST(SentencePieceTokenizer, TokenizerConfigTurnsBosOff) {
  const std::string dir = testing::ScratchDir("spm-nobos");
  std::filesystem::copy_file(ModelDir() + "/tokenizer.model", dir + "/tokenizer.model");
  std::ofstream(dir + "/tokenizer_config.json") << R"({"add_bos_token": false, "add_eos_token": true})";
  auto t = LoadTokenizer(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  auto ids = (*t)->Encode("lazy dog", true);
  ASSERT_TRUE(ids.ok());
  EXPECT_NE(ids->front(), (*t)->bos_id());
  EXPECT_EQ(ids->back(), (*t)->eos_id());
}

TEST(LoadTokenizer, FolderWithoutATokenizerIsAnError) {
  auto t = LoadTokenizer(testing::ScratchDir("empty"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("neither tokenizer.json nor tokenizer.model"),
            std::string::npos);
}

}  // namespace
}  // namespace dserve::engine
