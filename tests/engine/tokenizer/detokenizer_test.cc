// Streaming detokenisation on the real DeepSeek-V3 tokenizer: random id sequences (byte
// tokens that cut UTF-8 characters included) stream to exactly the full decode, every delta is
// valid UTF-8, and stop strings end the stream at the right place.
#include <random>
#include <string>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "core/utf8.h"
#include "gtest/gtest.h"
#include "models/model_generator.h"

namespace dserve::engine {
namespace {

const Tokenizer& DeepSeekV3() {
  static const std::unique_ptr<Tokenizer> t = [] {
    auto loaded = LoadTokenizer(models::DefaultTokenizerDir());
    EXPECT_TRUE(loaded.ok()) << loaded.status() << " (scripts/setup.sh fetches it)";
    return std::move(loaded).value();
  }();
  return *t;
}

// Ids whose bytes are a single non-ASCII byte: sequences of them cut UTF-8 characters.
std::vector<int32_t> SingleByteIds(const Tokenizer& t) {
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < t.vocab_size(); ++id) {
    const std::string_view b = t.TokenBytes(id);
    if (b.size() == 1 && static_cast<uint8_t>(b[0]) >= 0x80) ids.push_back(id);
  }
  return ids;
}

TEST(IncrementalDetokenizer, DeltasConcatenateToTheFullDecode) {
  const Tokenizer& t = DeepSeekV3();
  const std::vector<int32_t> bytes = SingleByteIds(t);
  ASSERT_GE(bytes.size(), 64u);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> any(0, t.vocab_size() - 1);
  std::uniform_int_distribution<size_t> pick(0, bytes.size() - 1);
  std::uniform_int_distribution<int> coin(0, 2), len(1, 60);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<int32_t> ids(len(rng));
    for (int32_t& id : ids) id = coin(rng) == 0 ? bytes[pick(rng)] : any(rng);
    for (bool skip : {false, true}) {
      auto full = t.Decode(ids, skip);
      ASSERT_TRUE(full.ok());
      IncrementalDetokenizer d(t, skip);
      std::string streamed;
      for (int32_t id : ids) {
        const auto delta = d.Add(id);
        EXPECT_EQ(FindInvalidUtf8(delta.text), std::string::npos);
        streamed += delta.text;
      }
      streamed += d.Finish().text;
      ASSERT_EQ(streamed, *full) << "trial " << trial;
      EXPECT_EQ(d.text(), *full);
    }
  }
}

TEST(IncrementalDetokenizer, MultiByteCharactersAreNeverSplit) {
  const Tokenizer& t = DeepSeekV3();
  // "é" is C3 A9; feed its two byte tokens one at a time.
  std::vector<int32_t> c3, a9;
  for (int32_t id : SingleByteIds(t)) {
    if (t.TokenBytes(id) == "\xC3") c3.push_back(id);
    if (t.TokenBytes(id) == "\xA9") a9.push_back(id);
  }
  ASSERT_EQ(c3.size(), 1u);
  ASSERT_EQ(a9.size(), 1u);
  IncrementalDetokenizer d(t, false);
  EXPECT_EQ(d.Add(c3[0]).text, "");
  EXPECT_EQ(d.Add(a9[0]).text, "\xC3\xA9");
  // A lead byte followed by something that cannot continue it becomes U+FFFD at once.
  EXPECT_EQ(d.Add(c3[0]).text, "");
  auto ids = t.Encode("x", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(d.Add((*ids)[0]).text, std::string(kReplacementChar) + "x");
  // A dangling lead byte at the end is flushed as U+FFFD.
  EXPECT_EQ(d.Add(c3[0]).text, "");
  EXPECT_EQ(d.Finish().text, kReplacementChar);
}

TEST(IncrementalDetokenizer, StopStringsAreHeldBackAndCut) {
  const Tokenizer& t = DeepSeekV3();
  auto ids = t.Encode("The answer is 42.\n\nUser: next question", false);
  ASSERT_TRUE(ids.ok());
  IncrementalDetokenizer d(t, false, {"\n\nUser:", "never"});
  std::string streamed;
  bool stopped = false;
  for (int32_t id : *ids) {
    const auto delta = d.Add(id);
    streamed += delta.text;
    // Nothing emitted may be the start of a stop string that is still possible.
    if (!delta.stopped) {
      EXPECT_EQ(streamed.find("\n\n"), std::string::npos) << streamed;
    }
    if (delta.stopped) {
      EXPECT_EQ(delta.stop_index, 0);
      stopped = true;
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(streamed, "The answer is 42.");
  EXPECT_EQ(d.Add((*ids)[0]).text, "");  // ignored after the stop

  // A partial match that does not complete is released at the end.
  IncrementalDetokenizer e(t, false, {"\n\nUser:"});
  auto tail = t.Encode("done\n\nUs", false);
  ASSERT_TRUE(tail.ok());
  std::string out;
  for (int32_t id : *tail) out += e.Add(id).text;
  EXPECT_EQ(out, "done");
  out += e.Finish().text;
  EXPECT_EQ(out, "done\n\nUs");
}

TEST(IncrementalDetokenizer, SkipsSpecialTokensWhenAsked) {
  const Tokenizer& t = DeepSeekV3();
  auto ids = t.Encode("<｜begin▁of▁sentence｜>hi<｜end▁of▁sentence｜>", false);
  ASSERT_TRUE(ids.ok());
  IncrementalDetokenizer d(t, true);
  std::string out;
  for (int32_t id : *ids) out += d.Add(id).text;
  out += d.Finish().text;
  EXPECT_EQ(out, "hi");
}

}  // namespace
}  // namespace dserve::engine
