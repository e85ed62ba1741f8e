// Engine outputs -> choice deltas -> OpenAI JSON, for what a random-weight test model never
// generates: R1 reasoning (reasoning_content / reasoning, streamed and whole) and DeepSeek tool
// calls (tool_calls with finish_reason "tool_calls"), plus finish-reason mapping, echo and the
// token text of logprobs.
#include "server/choice_translator.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "server/openai_format.h"

namespace dserve::server {
namespace {

using json = nlohmann::json;

// The markers as the model writes them (U+FF5C fullwidth bar, U+2581 lower block).
const std::string kCallsBegin = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "calls\xE2\x96\x81" "begin\xEF\xBD\x9C>";
const std::string kCallsEnd = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "calls\xE2\x96\x81" "end\xEF\xBD\x9C>";
const std::string kCallBegin = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "call\xE2\x96\x81" "begin\xEF\xBD\x9C>";
const std::string kCallEnd = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "call\xE2\x96\x81" "end\xEF\xBD\x9C>";
const std::string kSep = "<\xEF\xBD\x9Ctool\xE2\x96\x81sep\xEF\xBD\x9C>";

engine::RequestOutput Out(std::string text, engine::FinishReason finish = engine::FinishReason::kNone) {
  engine::RequestOutput out;
  out.tokens = {7};
  out.text = std::move(text);
  out.finish = finish;
  return out;
}

std::vector<ChoiceDelta> Feed(ChoiceTranslator& t, const std::vector<std::string>& pieces,
                             engine::FinishReason finish) {
  std::vector<ChoiceDelta> deltas;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const bool last = i + 1 == pieces.size();
    deltas.push_back(t.Translate(Out(pieces[i], last ? finish : engine::FinishReason::kNone)));
  }
  return deltas;
}

ResponseHeader Header(bool chat) { return ResponseHeader{"id-1", 1700000000, "tiny-v3", chat}; }

TEST(ChoiceTranslatorTest, ReasoningSplitsIntoReasoningContentWholeAndStreamed) {
  ChoiceTranslator::Options o;
  o.reasoning = true;
  ChoiceTranslator t(0, o, nullptr);
  auto deltas = Feed(t, {"<thi", "nk>Let me", " think.</th", "ink>\n\nThe answer", " is 42."},
                    engine::FinishReason::kStop);
  ASSERT_TRUE(t.finished());

  ResponseBuilder whole(Header(true), 1, false);
  std::string streamed_reasoning, streamed_content;
  for (const ChoiceDelta& d : deltas) {
    whole.Add(d);
    int64_t offset = 0;
    const json chunk = DeltaChunk(Header(true), d, false, &offset);
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("reasoning_content")) {
      EXPECT_EQ(delta["reasoning"], delta["reasoning_content"]);
      streamed_reasoning += delta["reasoning_content"].get<std::string>();
    }
    if (delta.contains("content")) streamed_content += delta["content"].get<std::string>();
  }
  EXPECT_EQ(streamed_reasoning, "Let me think.");
  EXPECT_EQ(streamed_content, "\n\nThe answer is 42.");
  const json message = whole.Build({})["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "Let me think.");
  EXPECT_EQ(message["reasoning"], "Let me think.");
  EXPECT_EQ(message["content"], "\n\nThe answer is 42.");
  EXPECT_EQ(deltas.back().finish_reason, "stop");
}

TEST(ChoiceTranslatorTest, PromptThatOpensThinkingStartsInReasoning) {
  ChoiceTranslator::Options o;
  o.reasoning = true;
  o.starts_in_reasoning = true;
  ChoiceTranslator t(0, o, nullptr);
  auto deltas = Feed(t, {"Hmm.", "</think>", "Done"}, engine::FinishReason::kLength);
  std::string reasoning, content;
  for (const auto& d : deltas) {
    reasoning += d.reasoning;
    content += d.content;
  }
  EXPECT_EQ(reasoning, "Hmm.");
  EXPECT_EQ(content, "Done");
  EXPECT_EQ(deltas.back().finish_reason, "length");
}

TEST(ChoiceTranslatorTest, ToolCallsBecomeOpenAiToolCallsWholeAndStreamed) {
  ChoiceTranslator::Options o;
  o.reasoning = true;
  o.tools = true;
  ChoiceTranslator t(1, o, nullptr);
  const std::string output = kCallsBegin + kCallBegin + "function" + kSep +
                             "get_weather\n```json\n{\"city\": \"Paris\"}\n```" + kCallEnd +
                             kCallsEnd;
  // Cut every few bytes, markers included.
  std::vector<std::string> pieces;
  for (size_t i = 0; i < output.size(); i += 5) pieces.push_back(output.substr(i, 5));
  auto deltas = Feed(t, pieces, engine::FinishReason::kStop);
  EXPECT_EQ(deltas.back().finish_reason, "tool_calls");

  ResponseBuilder whole(Header(true), 2, false);
  std::string name, id, arguments;
  int first_pieces = 0;
  for (const ChoiceDelta& d : deltas) {
    EXPECT_EQ(d.index, 1);
    whole.Add(d);
    int64_t offset = 0;
    const json chunk = DeltaChunk(Header(true), d, false, &offset);
    const json& delta = chunk["choices"][0]["delta"];
    EXPECT_FALSE(delta.contains("content")) << chunk.dump();
    if (!delta.contains("tool_calls")) continue;
    for (const json& call : delta["tool_calls"]) {
      EXPECT_EQ(call["index"], 0);
      if (call.contains("id")) {
        ++first_pieces;
        id = call["id"];
        EXPECT_EQ(call["type"], "function");
        name = call["function"]["name"];
      }
      arguments += call["function"]["arguments"].get<std::string>();
    }
  }
  EXPECT_EQ(first_pieces, 1);
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(id.rfind("call_", 0), 0u);
  EXPECT_EQ(json::parse(arguments), json::parse(R"({"city": "Paris"})"));

  const json response = whole.Build({});
  const json& choice = response["choices"][1];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  const json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["id"], id);
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()),
            json::parse(R"({"city": "Paris"})"));
}

TEST(ChoiceTranslatorTest, WithoutToolsTheMarkupIsPlainContent) {
  ChoiceTranslator t(0, {}, nullptr);
  auto deltas = Feed(t, {kCallsBegin, "x"}, engine::FinishReason::kStop);
  std::string content;
  for (const auto& d : deltas) content += d.content;
  EXPECT_EQ(content, kCallsBegin + "x");
  EXPECT_EQ(deltas.back().finish_reason, "stop");
}

TEST(ChoiceTranslatorTest, EchoComesFirstAndFinishReasonsMap) {
  ChoiceTranslator::Options o;
  o.echo = "Prompt:";
  ChoiceTranslator t(0, o, nullptr);
  EXPECT_EQ(t.Translate(Out(" a")).content, "Prompt: a");
  EXPECT_EQ(t.Translate(Out(" b")).content, " b");
  EXPECT_EQ(FinishReasonName(engine::FinishReason::kStop, false), "stop");
  EXPECT_EQ(FinishReasonName(engine::FinishReason::kStop, true), "tool_calls");
  EXPECT_EQ(FinishReasonName(engine::FinishReason::kLength, true), "length");
  EXPECT_EQ(FinishReasonName(engine::FinishReason::kCancelled, false), "abort");
  EXPECT_EQ(FinishReasonName(engine::FinishReason::kError, false), "error");
}

TEST(ChoiceTranslatorTest, TokenTextReplacesInvalidUtf8) {
  EXPECT_EQ(TokenText("abc"), "abc");
  EXPECT_EQ(TokenText("\xE4\xBD\xA0"), "\xE4\xBD\xA0");                 // 你
  EXPECT_EQ(TokenText("\xE4\xBD"), "\xEF\xBF\xBD\xEF\xBF\xBD");        // cut character
  EXPECT_EQ(TokenText("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");        // overlong '/'
  EXPECT_EQ(TokenText("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(TokenText("\xF4\x90\x80\x80").substr(0, 3), "\xEF\xBF\xBD");  // past U+10FFFF
  // Whatever comes out is valid JSON text.
  EXPECT_NO_THROW(json(TokenText("\xFF\xFE")).dump());
  for (std::string_view s : {"abc", "\xE4\xBD\xA0", "\xF0\x9F\x98\x80", "\xE4\xBD", "\xC0\xAF",
                             "\xED\xA0\x80", "\xF4\x90\x80\x80", "a\xFF" "b", ""}) {
    EXPECT_EQ(IsValidUtf8(s), TokenText(s) == s) << json(TokenText(s)).dump();
  }
}

TEST(ChoiceTranslatorTest, FastChunksAreByteForByteTheJsonOnes) {
  std::vector<ChoiceDelta> deltas(6);
  deltas[0].content = "plain";
  deltas[1].content = "quote \" backslash \\ newline \n tab \t bell \x07 del \x7f";
  deltas[2].reasoning = "think \xE4\xBD\xA0\xE5\xA5\xBD";
  deltas[2].content = "and \xF0\x9F\x98\x80";
  deltas[3].finish_reason = "length";
  deltas[4].index = 3;
  deltas[4].content = "x";
  deltas[4].finish_reason = "stop";
  deltas[5].content = "cut \xE4\xBD";  // invalid UTF-8: left to the JSON library
  for (bool chat : {true, false}) {
    for (bool usage : {true, false}) {
      for (size_t i = 0; i < deltas.size(); ++i) {
        SCOPED_TRACE(std::to_string(i) + (chat ? " chat" : " completion"));
        int64_t offset = 0;
        const std::string want =
            DeltaChunk(Header(chat), deltas[i], usage, &offset)
                .dump(-1, ' ', false, json::error_handler_t::replace);
        const auto fast = FastDeltaChunk(Header(chat), deltas[i], usage);
        if (i == 5) {
          EXPECT_FALSE(fast.has_value());
          continue;
        }
        ASSERT_TRUE(fast.has_value());
        EXPECT_EQ(*fast, want);
      }
    }
  }
  ChoiceDelta with_logprobs;
  with_logprobs.logprobs.emplace_back();
  EXPECT_FALSE(FastDeltaChunk(Header(true), with_logprobs, false).has_value());
}

TEST(ChoiceTranslatorTest, TextOffsetsCountCharactersAfterTheEcho) {
  auto delta = [](std::string content, std::vector<std::string> tokens) {
    ChoiceDelta d;
    d.content = std::move(content);
    for (std::string& t : tokens) {
      TokenLogprob lp;
      lp.token = std::move(t);
      d.logprobs.push_back(std::move(lp));
    }
    return d;
  };
  int64_t chars = 0;
  // The first delta carries the echoed prompt (5 characters, one of them 2 bytes) before its
  // token's text.
  EXPECT_EQ(TokenOffsets(delta("h\xC3\xA9llo world", {" world"}), &chars),
            (std::vector<int64_t>{5}));
  EXPECT_EQ(chars, 11);
  EXPECT_EQ(TokenOffsets(delta("\xE4\xBD\xA0\xE5\xA5\xBD", {"\xE4\xBD\xA0", "\xE5\xA5\xBD"}), &chars),
            (std::vector<int64_t>{11, 12}));
  EXPECT_EQ(chars, 13);
  // And through the whole-response builder.
  ResponseBuilder whole(Header(false), 1, true);
  whole.Add(delta("ab", {"a", "b"}));
  whole.Add(delta("c", {"c"}));
  const json lp = whole.Build({})["choices"][0]["logprobs"];
  EXPECT_EQ(lp["text_offset"], json::parse("[0, 1, 2]"));
  EXPECT_EQ(lp["tokens"], json::parse(R"(["a", "b", "c"])"));
}

}  // namespace
}  // namespace dserve::server
