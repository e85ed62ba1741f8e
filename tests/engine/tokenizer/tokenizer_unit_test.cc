// The tokenizer's parts on inputs whose answers are known from the specifications: UTF-8
// repair (Unicode's own worked example of maximal subparts), the byte-level alphabet, BPE
// merge order, added-token options and split behaviours on a hand-written tokenizer.json.
#include <set>
#include <string>
#include <vector>

#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/byte_level.h"
#include "core/utf8.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {
namespace {

using Json = nlohmann::json;
const std::string kFffd = "\xEF\xBF\xBD";

std::string Lossy(const std::string& s) {
  std::string out;
  AppendUtf8Lossy(s, &out);
  return out;
}

TEST(Utf8, LossyDecodingReplacesMaximalSubparts) {
  // Unicode 15, section 3.9, table 3-11: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64.
  EXPECT_EQ(Lossy("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a" + kFffd + kFffd + kFffd + "b" + kFffd + "c" + kFffd + kFffd + "d");
  EXPECT_EQ(Lossy("\xF0\x80\x80"), kFffd + kFffd + kFffd);       // overlong: F0 needs 90..BF
  EXPECT_EQ(Lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);       // a surrogate
  EXPECT_EQ(Lossy("\xC0\xAF"), kFffd + kFffd);                   // C0 never leads
  EXPECT_EQ(Lossy("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // above U+10FFFF
  EXPECT_EQ(Lossy("\xE2\x82"), kFffd);                           // truncated at the end
  EXPECT_EQ(Lossy("ok \xE2\x82\xAC \xF0\x9F\x98\x80"), "ok \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(Lossy(""), "");
}

TEST(Utf8, IncompleteTailIsAValidPrefixOnly) {
  EXPECT_EQ(IncompleteTailLength("abc"), 0);
  EXPECT_EQ(IncompleteTailLength("ab\xE2"), 1);
  EXPECT_EQ(IncompleteTailLength("ab\xE2\x82"), 2);
  EXPECT_EQ(IncompleteTailLength("ab\xE2\x82\xAC"), 0);  // complete
  EXPECT_EQ(IncompleteTailLength("\xF0\x9F\x98"), 3);
  EXPECT_EQ(IncompleteTailLength("\xF0\x80"), 0);  // can never complete: decode it now
  EXPECT_EQ(IncompleteTailLength("\x80\x80"), 0);
  EXPECT_EQ(IncompleteTailLength("\xC3"), 1);
  EXPECT_EQ(FindInvalidUtf8("fine \xC3\xA9"), std::string::npos);
  EXPECT_EQ(FindInvalidUtf8("bad \xC3("), 4u);
}

TEST(ByteLevel, AlphabetIsABijectionKeepingPrintableBytes) {
  std::set<uint32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = ByteToCodePoint()[b];
    EXPECT_TRUE(seen.insert(cp).second) << b;
    EXPECT_EQ(CodePointToByte(cp), b);
    if (b >= '!' && b <= '~') {
      EXPECT_EQ(cp, static_cast<uint32_t>(b));
    }
  }
  EXPECT_EQ(ByteToCodePoint()[' '], 0x120u);  // "Ġ", GPT-2's space
  EXPECT_EQ(ByteToCodePoint()['\n'], 0x10Au);  // "Ċ"
  std::string raw;
  ASSERT_TRUE(ByteLevelToBytes(BytesToByteLevel("a b\n\xFF"), &raw));
  EXPECT_EQ(raw, "a b\n\xFF");
  EXPECT_FALSE(ByteLevelToBytes("\xE4\xBD\xA0", &raw));  // U+4F60 is outside the alphabet
}

// A small byte-level BPE tokenizer.json: every byte, a few merges, added tokens with options.
Json TinyTokenizerJson() {
  Json vocab = Json::object();
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    vocab[BytesToByteLevel(std::string(1, static_cast<char>(b)))] = next++;
  }
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "b"}, {"b", "c"}, {"ab", "c"}, {"Ġ", "a"}, {"x", "x"}, {"xx", "x"}};
  Json merge_list = Json::array();
  for (const auto& [l, r] : merges) {
    if (!vocab.contains(l + r)) vocab[l + r] = next++;
    merge_list.push_back(l + " " + r);
  }
  Json added = Json::array();
  auto add = [&](const std::string& content, bool special, bool lstrip, bool rstrip,
                 bool single_word, bool normalized) {
    added.push_back({{"id", next++}, {"content", content}, {"special", special},
                     {"lstrip", lstrip}, {"rstrip", rstrip}, {"single_word", single_word},
                     {"normalized", normalized}});
  };
  add("<s>", true, false, false, false, false);         // 262
  add("<sep>", false, false, false, false, true);       // 263
  add("<L>", true, true, false, false, false);          // 264: eats whitespace on its left
  add("<R>", true, false, true, false, false);          // 265: ... on its right
  add("word", false, false, false, true, true);         // 266: only as a whole word
  add("<sep>long", true, false, false, false, false);   // 267: longer than <sep>
  return Json{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}},
              {"added_tokens", added},
              {"normalizer", nullptr},
              {"pre_tokenizer",
               {{"type", "Sequence"},
                {"pretokenizers",
                 {{{"type", "Split"}, {"pattern", {{"Regex", "\\s+|[a-z]+"}}},
                   {"behavior", "Isolated"}, {"invert", false}},
                  {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
              {"decoder", {{"type", "ByteLevel"}}}};
}

std::unique_ptr<BpeTokenizer> Tiny(TokenizerConfig config = {}) {
  auto t = BpeTokenizer::Create(TinyTokenizerJson().dump(), config);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

std::vector<int32_t> Ids(const BpeTokenizer& t, const std::string& text, bool special = false) {
  auto ids = t.Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(BpeTokenizer, MergesApplyByRankLeftmostFirst) {
  auto t = Tiny();
  const int a = 'a', b = 'b', c = 'c';
  // Merge ids: ab=256, bc=257, abc=258, Ġa=259, xx=260, xxx=261.
  EXPECT_EQ(Ids(*t, "abc"), (std::vector<int32_t>{258}));  // (a b) before (b c), then (ab c)
  EXPECT_EQ(Ids(*t, "bc"), (std::vector<int32_t>{257}));
  EXPECT_EQ(Ids(*t, "cab"), (std::vector<int32_t>{c, 256}));
  EXPECT_EQ(Ids(*t, "xxxx"), (std::vector<int32_t>{260, 260}));  // leftmost (x x) twice
  // x x x x x -> xx x x x -> xx xx x (rank 4 first, leftmost first) -> xx xxx (rank 5).
  EXPECT_EQ(Ids(*t, "xxxxx"), (std::vector<int32_t>{260, 261}));
  EXPECT_EQ(Ids(*t, "ba"), (std::vector<int32_t>{b, a}));
  // " a" is split from "a" by the regex: the Ġa merge never sees them together.
  EXPECT_EQ(Ids(*t, " a"), (std::vector<int32_t>{' ', a}));
}

TEST(BpeTokenizer, AddedTokensLongestFirstWithTheirOptions) {
  auto t = Tiny();
  EXPECT_EQ(Ids(*t, "<s>ab"), (std::vector<int32_t>{262, 256}));
  EXPECT_EQ(Ids(*t, "<sep>long"), (std::vector<int32_t>{267}));  // longest match wins
  EXPECT_EQ(Ids(*t, "<sep>lon"), (std::vector<int32_t>{263, 'l', 'o', 'n'}));
  EXPECT_EQ(Ids(*t, "a  <L>b"), (std::vector<int32_t>{'a', 264, 'b'}));  // lstrip eats "  "
  EXPECT_EQ(Ids(*t, "a<R> \n b"), (std::vector<int32_t>{'a', 265, 'b'}));  // rstrip eats " \n "
  EXPECT_EQ(Ids(*t, "a word b"), (std::vector<int32_t>{'a', ' ', 266, ' ', 'b'}));
  for (int32_t id : Ids(*t, "swordfish")) EXPECT_NE(id, 266);  // not a whole word there
  // Decoding gives the token texts back; skip_special drops only the special ones.
  auto text = t->Decode({262, 'a', 263, 264}, false);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "<s>a<sep><L>");
  text = t->Decode({262, 'a', 263, 264}, true);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "a<sep>");
}

TEST(BpeTokenizer, BosAndEosFollowTokenizerConfig) {
  TokenizerConfig c;
  c.has_add_flags = true;
  c.add_bos_token = true;
  c.bos_token = "<s>";
  c.eos_token = "<R>";
  auto t = Tiny(c);
  EXPECT_EQ(t->bos_id(), 262);
  EXPECT_EQ(t->eos_id(), 265);
  EXPECT_EQ(Ids(*t, "ab", true), (std::vector<int32_t>{262, 256}));
  EXPECT_EQ(Ids(*t, "ab", false), (std::vector<int32_t>{256}));
  c.add_eos_token = true;
  EXPECT_EQ(Ids(*Tiny(c), "ab", true), (std::vector<int32_t>{262, 256, 265}));
}

TEST(BpeTokenizer, ErrorsNameTheProblem) {
  auto t = Tiny();
  auto bad = t->Encode("ok \xC3(", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid UTF-8 (byte 3"), std::string::npos);
  EXPECT_FALSE(t->Decode({-1}, false).ok());
  // Ids past the vocabulary (a model's padded rows) decode to nothing, as in Hugging Face.
  auto text = t->Decode({'a', 100000}, false);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "a");

  Json j = TinyTokenizerJson();
  j["normalizer"] = {{"type", "NFKC"}};
  auto s = BpeTokenizer::Create(j.dump(), {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("normalizer 'NFKC'"), std::string::npos);
  j = TinyTokenizerJson();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  s = BpeTokenizer::Create(j.dump(), {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("'Metaspace'"), std::string::npos);
  j = TinyTokenizerJson();
  j["model"]["merges"].push_back("q zz");
  s = BpeTokenizer::Create(j.dump(), {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("outside the vocabulary"), std::string::npos);
}

TEST(BpeTokenizer, SplitBehaviours) {
  // The same text under each behaviour of a Split on "-" (what each piece becomes shows in
  // the ids: "-" is byte 45, pieces never merge across).
  const std::vector<std::pair<std::string, std::vector<int32_t>>> cases = {
      {"Removed", {'a', 'b'}},
      {"Isolated", {'a', '-', '-', 'b'}},
      {"MergedWithPrevious", {'a', '-', '-', 'b'}},
      {"MergedWithNext", {'a', '-', '-', 'b'}},
      {"Contiguous", {'a', '-', '-', 'b'}},
  };
  for (const auto& [behavior, want] : cases) {
    Json j = TinyTokenizerJson();
    j["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"String", "-"}}},
                          {"behavior", behavior},
                          {"invert", false}};
    auto t = BpeTokenizer::Create(j.dump(), {});
    ASSERT_TRUE(t.ok()) << behavior << ": " << t.status();
    EXPECT_EQ(Ids(**t, "a--b"), want) << behavior;
  }
  // Where pieces end decides merges: "ab" merges only if the split keeps a and b together.
  Json j = TinyTokenizerJson();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "b"}}},
                        {"behavior", "MergedWithPrevious"}, {"invert", false}};
  EXPECT_EQ(Ids(**BpeTokenizer::Create(j.dump(), {}), "abab"), (std::vector<int32_t>{256, 256}));
  j["pre_tokenizer"]["behavior"] = "MergedWithNext";
  EXPECT_EQ(Ids(**BpeTokenizer::Create(j.dump(), {}), "abab"),
            (std::vector<int32_t>{'a', 'b', 'a', 'b'}));
  j["pre_tokenizer"]["behavior"] = "Isolated";
  EXPECT_EQ(Ids(**BpeTokenizer::Create(j.dump(), {}), "abab"),
            (std::vector<int32_t>{'a', 'b', 'a', 'b'}));
}

}  // namespace
}  // namespace dserve::engine
