// The streaming output parsers (server/reasoning_parser.h, server/tool_call_parser.h): each
// case is checked one-shot, and the split-invariance cases replay it cut at every byte.
#include <gtest/gtest.h>

#include <cctype>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "server/reasoning_parser.h"
#include "server/tool_call_parser.h"

namespace dserve::server {
namespace {

// Spelled in escapes here so a mistyped lookalike in the parser cannot match a mistyped test.
#define DS_BAR "\xef\xbd\x9c"  // U+FF5C FULLWIDTH VERTICAL LINE
#define DS_SP "\xe2\x96\x81"   // U+2581 LOWER ONE EIGHTH BLOCK
const std::string kCallsBegin = "<" DS_BAR "tool" DS_SP "calls" DS_SP "begin" DS_BAR ">";
const std::string kCallsEnd = "<" DS_BAR "tool" DS_SP "calls" DS_SP "end" DS_BAR ">";
const std::string kCallBegin = "<" DS_BAR "tool" DS_SP "call" DS_SP "begin" DS_BAR ">";
const std::string kCallEnd = "<" DS_BAR "tool" DS_SP "call" DS_SP "end" DS_BAR ">";
const std::string kSep = "<" DS_BAR "tool" DS_SP "sep" DS_BAR ">";
const std::string kEos = "<" DS_BAR "end" DS_SP "of" DS_SP "sentence" DS_BAR ">";
#undef DS_BAR
#undef DS_SP

// One V3/R1-format call, as the chat template renders it.
std::string V3Call(const std::string& name, const std::string& args) {
  return kCallBegin + "function" + kSep + name + "\n```json\n" + args + "\n```" + kCallEnd;
}
std::string V31Call(const std::string& name, const std::string& args) {
  return kCallBegin + name + kSep + args + kCallEnd;
}

// Ways to cut `text` into deltas: every two-piece split, byte by byte, and random cuts.
std::vector<std::vector<std::string>> Splits(const std::string& text) {
  std::vector<std::vector<std::string>> splits;
  for (size_t i = 0; i <= text.size(); ++i) splits.push_back({text.substr(0, i), text.substr(i)});
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  splits.push_back(bytes);
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<std::string> pieces;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t n = std::uniform_int_distribution<size_t>(0, 9)(rng);
      pieces.push_back(text.substr(pos, n));
      pos += n;
    }
    splits.push_back(pieces);
  }
  return splits;
}

// ---------------------------------------------------------------------------------------
// ReasoningParser

struct Split {
  std::string reasoning;
  std::string content;
};

Split RunReasoning(bool starts_in_reasoning, const std::vector<std::string>& pieces) {
  ReasoningParser parser(starts_in_reasoning);
  Split result;
  for (const std::string& piece : pieces) {
    ReasoningParser::Delta delta = parser.Push(piece);
    result.reasoning += delta.reasoning;
    result.content += delta.content;
  }
  ReasoningParser::Delta delta = parser.Finish();
  result.reasoning += delta.reasoning;
  result.content += delta.content;
  return result;
}

Split RunReasoning(bool starts_in_reasoning, const std::string& text) {
  return RunReasoning(starts_in_reasoning, std::vector<std::string>{text});
}

TEST(ReasoningParserTest, NoThinkTagIsAllContent) {
  Split r = RunReasoning(false, "The answer is 4.");
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.content, "The answer is 4.");
}

TEST(ReasoningParserTest, LeadingThinkTagOpensReasoning) {
  Split r = RunReasoning(false, "<think>\nLet me add.\n</think>\n\nThe answer is 4.");
  EXPECT_EQ(r.reasoning, "\nLet me add.\n");
  EXPECT_EQ(r.content, "\n\nThe answer is 4.");  // kept exactly as generated
}

TEST(ReasoningParserTest, WhitespaceBeforeOpenerIsDropped) {
  Split r = RunReasoning(false, "\n  <think>hmm</think>ok");
  EXPECT_EQ(r.reasoning, "hmm");
  EXPECT_EQ(r.content, "ok");
}

TEST(ReasoningParserTest, StartsInReasoningWithoutOpener) {
  Split r = RunReasoning(true, "Let me add.\n</think>\n\nThe answer is 4.");
  EXPECT_EQ(r.reasoning, "Let me add.\n");
  EXPECT_EQ(r.content, "\n\nThe answer is 4.");
}

TEST(ReasoningParserTest, StartsInReasoningRepeatedOpenerIsStripped) {
  Split r = RunReasoning(true, "<think>\nhmm</think>x");
  EXPECT_EQ(r.reasoning, "\nhmm");
  EXPECT_EQ(r.content, "x");
}

TEST(ReasoningParserTest, StartsInReasoningKeepsLeadingWhitespace) {
  Split r = RunReasoning(true, "\n  step one</think>done");
  EXPECT_EQ(r.reasoning, "\n  step one");
  EXPECT_EQ(r.content, "done");
}

TEST(ReasoningParserTest, CloseTagInContentStaysContent) {
  Split r = RunReasoning(false, "Use </think> to close and <think> to open.");
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.content, "Use </think> to close and <think> to open.");
  // After the think block, a second close tag is content too.
  r = RunReasoning(false, "<think>a</think>b</think>c");
  EXPECT_EQ(r.reasoning, "a");
  EXPECT_EQ(r.content, "b</think>c");
}

TEST(ReasoningParserTest, OpenerLaterInTextIsContent) {
  Split r = RunReasoning(false, "Hi <think>x</think>y");
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.content, "Hi <think>x</think>y");
}

TEST(ReasoningParserTest, TagsSplitAcrossDeltasAreHeldBack) {
  ReasoningParser parser(false);
  EXPECT_FALSE(parser.in_reasoning());
  ReasoningParser::Delta d = parser.Push("<th");
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "");
  d = parser.Push("ink>Let me");
  EXPECT_TRUE(parser.in_reasoning());
  EXPECT_EQ(d.reasoning, "Let me");
  d = parser.Push(" think.</");
  EXPECT_EQ(d.reasoning, " think.");  // "</" may open the close tag
  d = parser.Push("thi");
  EXPECT_EQ(d.reasoning, "");
  d = parser.Push("nk>\n\nAnswer");
  EXPECT_FALSE(parser.in_reasoning());
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "\n\nAnswer");
  d = parser.Finish();
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "");
}

TEST(ReasoningParserTest, FalseAlarmIsReleasedByTheNextDelta) {
  ReasoningParser parser(true);
  ReasoningParser::Delta d = parser.Push("a </th");
  EXPECT_EQ(d.reasoning, "a ");
  d = parser.Push("eory");
  EXPECT_EQ(d.reasoning, "</theory");
  EXPECT_TRUE(parser.in_reasoning());
}

TEST(ReasoningParserTest, FinishFlushesHeldTextInItsSection) {
  Split r = RunReasoning(false, "<think>partial </thi");
  EXPECT_EQ(r.reasoning, "partial </thi");
  EXPECT_EQ(r.content, "");
  r = RunReasoning(false, "  <thi");  // never became the opener: content
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.content, "  <thi");
  r = RunReasoning(true, "\n");  // nothing but whitespace inside the prompt's think block
  EXPECT_EQ(r.reasoning, "\n");
  EXPECT_EQ(r.content, "");
  r = RunReasoning(false, "");
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.content, "");
}

TEST(ReasoningParserTest, InReasoningFollowsTheStream) {
  ReasoningParser parser(true);
  EXPECT_TRUE(parser.in_reasoning());
  parser.Push("x");
  EXPECT_TRUE(parser.in_reasoning());
  parser.Push("</think>");
  EXPECT_FALSE(parser.in_reasoning());
  ReasoningParser plain(false);
  plain.Push("hello");
  EXPECT_FALSE(plain.in_reasoning());
}

TEST(ReasoningParserTest, SplitInvariance) {
  const std::vector<std::string> texts = {
      "<think>\nStep 1: add.\nStep 2: check </th not a tag.\n</think>\n\nFour.",
      "\n<think></think>Done",
      "Plain answer with </think> and <think> inside.",
      "Reasoning only, unterminated </thi",
      "  <thin",
      "<think>a</think>b</think>c<think>d",
      "Der Käse kostet 5 € — </think>日本語の答え",
  };
  for (bool starts : {false, true}) {
    for (const std::string& text : texts) {
      Split expected = RunReasoning(starts, text);
      for (const auto& pieces : Splits(text)) {
        Split got = RunReasoning(starts, pieces);
        ASSERT_EQ(got.reasoning, expected.reasoning) << "starts=" << starts << " text=" << text;
        ASSERT_EQ(got.content, expected.content) << "starts=" << starts << " text=" << text;
      }
    }
  }
}

TEST(ReasoningParserTest, SplitInvarianceOnRandomTags) {
  const std::vector<std::string> atoms = {"<think>", "</think>", "<",  "</", "<th", "</thi",
                                          "think>",  " ",        "\n", "a",  ">"};
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    int n = std::uniform_int_distribution<int>(1, 16)(rng);
    for (int i = 0; i < n; ++i) {
      text += atoms[std::uniform_int_distribution<size_t>(0, atoms.size() - 1)(rng)];
    }
    for (bool starts : {false, true}) {
      Split expected = RunReasoning(starts, text);
      for (const auto& pieces : Splits(text)) {
        Split got = RunReasoning(starts, pieces);
        ASSERT_EQ(got.reasoning, expected.reasoning) << text;
        ASSERT_EQ(got.content, expected.content) << text;
      }
    }
  }
}

TEST(ReasoningParserTest, PromptOpensReasoning) {
  EXPECT_TRUE(PromptOpensReasoning("<｜User｜>hi<｜Assistant｜><think>\n"));
  EXPECT_TRUE(PromptOpensReasoning("<｜Assistant｜><think>"));
  EXPECT_TRUE(PromptOpensReasoning("<think>\r\n  "));
  EXPECT_FALSE(PromptOpensReasoning("<｜Assistant｜></think>"));  // V3.1 non-thinking
  EXPECT_FALSE(PromptOpensReasoning("<｜User｜>hi<｜Assistant｜>"));
  EXPECT_FALSE(PromptOpensReasoning(""));
}

// ---------------------------------------------------------------------------------------
// ToolCallParser

struct Streamed {
  std::string content;
  std::vector<ToolCall> calls;          // parser.calls() at the end
  std::vector<std::string> ids, names;  // from the first piece of each call
  std::vector<std::string> arguments;   // concatenated argument fragments per call
  std::vector<std::string> fragments;   // every argument fragment, for marker checks
};

Streamed RunTools(const std::vector<std::string>& pieces) {
  ToolCallParser parser;
  Streamed s;
  auto take = [&s](const ToolCallParser::Delta& delta) {
    s.content += delta.content;
    for (const auto& call : delta.calls) {
      if (!call.id.empty()) {
        // A call's first piece: the next index, with its id and name.
        EXPECT_EQ(call.index, static_cast<int>(s.ids.size()));
        EXPECT_EQ(call.arguments, "");
        s.ids.push_back(call.id);
        s.names.push_back(call.name);
        s.arguments.emplace_back();
      } else {
        // Argument text only for the call opened last, never empty.
        EXPECT_EQ(call.index + 1, static_cast<int>(s.ids.size()));
        EXPECT_EQ(call.name, "");
        EXPECT_FALSE(call.arguments.empty());
        if (call.index >= 0 && call.index < static_cast<int>(s.arguments.size())) {
          s.arguments[call.index] += call.arguments;
        }
        s.fragments.push_back(call.arguments);
      }
    }
  };
  for (const std::string& piece : pieces) take(parser.Push(piece));
  take(parser.Finish());
  s.calls = parser.calls();
  return s;
}

Streamed RunTools(const std::string& text) { return RunTools(std::vector<std::string>{text}); }

bool IsCallId(const std::string& id) {
  if (id.size() != 5 + 24 || id.rfind("call_", 0) != 0) return false;
  for (size_t i = 5; i < id.size(); ++i) {
    if (!std::isalnum(static_cast<unsigned char>(id[i]))) return false;
  }
  return true;
}

TEST(ToolCallParserTest, V3SingleCall) {
  std::string text = kCallsBegin + V3Call("get_weather", R"({"city": "Paris"})") + kCallsEnd;
  ParsedToolCalls parsed = ParseToolCalls(text);
  EXPECT_EQ(parsed.content, "");
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].name, "get_weather");
  EXPECT_EQ(parsed.calls[0].arguments, R"({"city": "Paris"})");
  EXPECT_TRUE(IsCallId(parsed.calls[0].id)) << parsed.calls[0].id;
}

TEST(ToolCallParserTest, V3SeveralCalls) {
  std::string text =
      kCallsBegin + V3Call("get_weather", R"({"city": "Paris"})") + "\n" + V3Call("other", "{}") +
      "\n" + V3Call("search", "{\n  \"q\": \"a\\nb\",\n  \"k\": [1, 2]\n}") + kCallsEnd + kEos;
  ParsedToolCalls parsed = ParseToolCalls(text);
  EXPECT_EQ(parsed.content, "");  // the "\n" between calls is dropped
  ASSERT_EQ(parsed.calls.size(), 3u);
  EXPECT_EQ(parsed.calls[0].name, "get_weather");
  EXPECT_EQ(parsed.calls[1].name, "other");
  EXPECT_EQ(parsed.calls[1].arguments, "{}");
  EXPECT_EQ(parsed.calls[2].name, "search");
  EXPECT_EQ(parsed.calls[2].arguments, "{\n  \"q\": \"a\\nb\",\n  \"k\": [1, 2]\n}");
  std::set<std::string> ids;
  for (const ToolCall& call : parsed.calls) ids.insert(call.id);
  EXPECT_EQ(ids.size(), 3u);
}

TEST(ToolCallParserTest, V31Format) {
  std::string text = kCallsBegin + V31Call("get_weather", R"({"city": "Paris"})") +
                     V31Call("get_time", R"({"tz": "CET"})") + kCallsEnd;
  ParsedToolCalls parsed = ParseToolCalls(text);
  EXPECT_EQ(parsed.content, "");
  ASSERT_EQ(parsed.calls.size(), 2u);
  EXPECT_EQ(parsed.calls[0].name, "get_weather");
  EXPECT_EQ(parsed.calls[0].arguments, R"({"city": "Paris"})");
  EXPECT_EQ(parsed.calls[1].name, "get_time");
  EXPECT_EQ(parsed.calls[1].arguments, R"({"tz": "CET"})");
}

TEST(ToolCallParserTest, V31ToolNamedFunction) {
  ParsedToolCalls parsed =
      ParseToolCalls(kCallsBegin + V31Call("function", R"({"x": 1})") + kCallsEnd);
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].name, "function");
  EXPECT_EQ(parsed.calls[0].arguments, R"({"x": 1})");
}

TEST(ToolCallParserTest, ContentBeforeCalls) {
  std::string text = "Let me check the weather.\n\n" + kCallsBegin +
                     V3Call("get_weather", R"({"city": "Paris"})") + kCallsEnd;
  ParsedToolCalls parsed = ParseToolCalls(text);
  EXPECT_EQ(parsed.content, "Let me check the weather.\n\n");
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].name, "get_weather");
}

TEST(ToolCallParserTest, BlankSegmentsNextToTheBlockAreDropped) {
  std::string text = "\n\n" + kCallsBegin + "\n" + V31Call("f", "{}") + " \n " +
                     V31Call("g", "{}") + "\n" + kCallsEnd + "\n";
  ParsedToolCalls parsed = ParseToolCalls(text);
  EXPECT_EQ(parsed.content, "");
  EXPECT_EQ(parsed.calls.size(), 2u);
}

TEST(ToolCallParserTest, TextBetweenAndAfterCallsIsContent) {
  std::string text = kCallsBegin + V31Call("f", "{}") + "\nstray words\n" + V31Call("g", "{}") +
                     kCallsEnd + "\nDone.";
  ParsedToolCalls parsed = ParseToolCalls(text);
  EXPECT_EQ(parsed.content, "\nstray words\n\nDone.");
  ASSERT_EQ(parsed.calls.size(), 2u);
  EXPECT_EQ(parsed.calls[1].name, "g");
}

TEST(ToolCallParserTest, PlainTextWithoutCalls) {
  ToolCallParser parser;
  std::string text = "if a < b and b > c: print(\"<｜not a marker｜>\")\n";
  std::string content = parser.Push(text).content;
  content += parser.Finish().content;
  EXPECT_EQ(content, text);
  EXPECT_TRUE(parser.calls().empty());
  EXPECT_FALSE(parser.saw_tool_calls());
  // Whitespace-only output with no block is still the answer.
  EXPECT_EQ(ParseToolCalls("\n").content, "\n");
}

TEST(ToolCallParserTest, EndOfSentenceIsDroppedAnywhere) {
  std::string text = "Hi" + kEos + " there" + kCallsBegin + kEos +
                     V31Call("f", R"({"a":)" + kEos + " 1}") + kCallsEnd + kEos;
  ParsedToolCalls parsed = ParseToolCalls(text);
  EXPECT_EQ(parsed.content, "Hi there");
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].arguments, R"({"a": 1})");
  EXPECT_EQ(ParseToolCalls("Bye." + kEos).content, "Bye.");
}

TEST(ToolCallParserTest, UnterminatedCallsAreFlushed) {
  // Cut off inside the arguments: emitted with what it has, the opening fence removed.
  ParsedToolCalls parsed = ParseToolCalls(kCallsBegin + kCallBegin + "function" + kSep +
                                          "get_weather\n```json\n" + R"({"city": "Pa)");
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].name, "get_weather");
  EXPECT_EQ(parsed.calls[0].arguments, R"({"city": "Pa)");
  // Cut off after the closing fence but before the end marker.
  parsed = ParseToolCalls(kCallsBegin + kCallBegin + "function" + kSep + "f\n```json\n{}\n```");
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].arguments, "{}");
  // Cut off inside the closing fence.
  parsed = ParseToolCalls(kCallsBegin + kCallBegin + "function" + kSep + "f\n```json\n{}\n``");
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].arguments, "{}");
  // Cut off in the name.
  parsed = ParseToolCalls(kCallsBegin + kCallBegin + "get_wea");
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].name, "get_wea");
  EXPECT_EQ(parsed.calls[0].arguments, "");
  // Cut off right after the block opened: no call, nothing else.
  ToolCallParser parser;
  EXPECT_EQ(parser.Push("ok " + kCallsBegin).content, "ok ");
  EXPECT_EQ(parser.Finish().content, "");
  EXPECT_FALSE(parser.saw_tool_calls());
  EXPECT_TRUE(parser.calls().empty());
  // An empty block is no tool call either.
  ToolCallParser empty;
  empty.Push(kCallsBegin + kCallsEnd);
  empty.Finish();
  EXPECT_FALSE(empty.saw_tool_calls());
}

TEST(ToolCallParserTest, MissingCallEndStillEndsTheCall) {
  std::string text = kCallsBegin + kCallBegin + "f" + kSep + R"({"a": 1})" + kCallBegin + "g" +
                     kSep + "{}" + kCallsEnd;
  ParsedToolCalls parsed = ParseToolCalls(text);
  ASSERT_EQ(parsed.calls.size(), 2u);
  EXPECT_EQ(parsed.calls[0].arguments, R"({"a": 1})");
  EXPECT_EQ(parsed.calls[1].name, "g");
  EXPECT_EQ(parsed.calls[1].arguments, "{}");
}

TEST(ToolCallParserTest, ArgumentsAreTrimmed) {
  std::string text = kCallsBegin + kCallBegin + "function" + kSep +
                     " f \n\n```json\n  {\"a\": 1}  \n\n```  " + kCallEnd + V31Call("g", "  {}\n") +
                     kCallsEnd;
  ParsedToolCalls parsed = ParseToolCalls(text);
  ASSERT_EQ(parsed.calls.size(), 2u);
  EXPECT_EQ(parsed.calls[0].name, "f");
  EXPECT_EQ(parsed.calls[0].arguments, R"({"a": 1})");
  EXPECT_EQ(parsed.calls[1].arguments, "{}");
}

TEST(ToolCallParserTest, StreamsNameFirstThenArgumentsWithoutTheFence) {
  ToolCallParser parser;
  ToolCallParser::Delta d = parser.Push("Checking." + kCallsBegin + kCallBegin + "function" + kSep);
  EXPECT_EQ(d.content, "Checking.");
  EXPECT_TRUE(d.calls.empty());
  EXPECT_FALSE(parser.saw_tool_calls());  // the name is not known yet
  d = parser.Push("get_weather\n```json\n{\"city\": ");
  EXPECT_TRUE(parser.saw_tool_calls());
  ASSERT_EQ(d.calls.size(), 2u);
  EXPECT_EQ(d.calls[0].index, 0);
  EXPECT_TRUE(IsCallId(d.calls[0].id));
  EXPECT_EQ(d.calls[0].name, "get_weather");
  EXPECT_EQ(d.calls[0].arguments, "");
  EXPECT_EQ(d.calls[1].index, 0);
  EXPECT_EQ(d.calls[1].id, "");
  EXPECT_EQ(d.calls[1].arguments, "{\"city\":");  // the trailing space waits
  d = parser.Push("\"Paris\"}\n``");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].arguments, " \"Paris\"}");  // "\n``" may be the closing fence
  d = parser.Push("`" + kCallEnd.substr(0, 5));
  EXPECT_TRUE(d.calls.empty());
  EXPECT_TRUE(parser.calls().empty());  // not complete until the end marker
  d = parser.Push(kCallEnd.substr(5) + kCallsEnd);
  EXPECT_TRUE(d.calls.empty());
  EXPECT_EQ(d.content, "");
  ASSERT_EQ(parser.calls().size(), 1u);
  EXPECT_EQ(parser.calls()[0].arguments, "{\"city\": \"Paris\"}");
  d = parser.Finish();
  EXPECT_TRUE(d.calls.empty());
  EXPECT_EQ(d.content, "");
}

TEST(ToolCallParserTest, BacktickThatIsNotAFenceIsReleased) {
  ToolCallParser parser;
  parser.Push(kCallsBegin + kCallBegin + "function" + kSep + "run\n```json\n{\"cmd\": \"ls");
  ToolCallParser::Delta d = parser.Push(" `");
  EXPECT_TRUE(d.calls.empty());  // " `" may still be the closing fence
  d = parser.Push("pwd`\"}\n```" + kCallEnd);
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].arguments, " `pwd`\"}");
  parser.Finish();
  ASSERT_EQ(parser.calls().size(), 1u);
  EXPECT_EQ(parser.calls()[0].arguments, "{\"cmd\": \"ls `pwd`\"}");
}

TEST(ToolCallParserTest, IdsHaveTheOpenAiShapeAndDiffer) {
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ParsedToolCalls parsed = ParseToolCalls(kCallsBegin + V31Call("f", "{}") + kCallsEnd);
    ASSERT_EQ(parsed.calls.size(), 1u);
    EXPECT_TRUE(IsCallId(parsed.calls[0].id)) << parsed.calls[0].id;
    ids.insert(parsed.calls[0].id);
  }
  EXPECT_EQ(ids.size(), 20u);
}

TEST(ToolCallParserTest, StreamedIdsAndNamesMatchTheCalls) {
  Streamed s = RunTools(kCallsBegin + V3Call("a", "{}") + "\n" + V31Call("b", "[1]") + kCallsEnd);
  ASSERT_EQ(s.calls.size(), 2u);
  ASSERT_EQ(s.ids.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(s.ids[i], s.calls[i].id);
    EXPECT_EQ(s.names[i], s.calls[i].name);
    EXPECT_EQ(s.arguments[i], s.calls[i].arguments);
  }
}

TEST(ToolCallParserTest, SplitInvariance) {
  const std::vector<std::string> texts = {
      "Let me look that up.\n\n" + kCallsBegin + V3Call("get_weather", R"({"city": "Paris"})") +
          "\n" + V3Call("other", "{}") + kCallsEnd + kEos,
      kCallsBegin + V31Call("get_weather", R"({"city": "Zürich", "note": "a < b"})") +
          V31Call("function", "[1, 2]") + kCallsEnd + "\nDone.",
      kCallsBegin + V3Call("code", "{\"src\": \"```py\\nx=1\\n```\", \"t\": \"` `` \"}") +
          kCallsEnd,
      "Plain text, no calls: <｜tool or ``` or </think>." + kEos,
      kCallsBegin + kCallBegin + "function" + kSep + "cut_off\n```json\n{\"a\": [1, 2",
      kCallsBegin + kCallBegin + "function" + kSep + "f\n```json\n{}\n``",
      "\n" + kCallsBegin + "\n" + V31Call("f", " {} ") + "junk" + V31Call("g", "{}") + "\n",
  };
  for (const std::string& text : texts) {
    ParsedToolCalls expected = ParseToolCalls(text);
    for (const auto& pieces : Splits(text)) {
      Streamed got = RunTools(pieces);
      ASSERT_EQ(got.content, expected.content) << text;
      ASSERT_EQ(got.calls.size(), expected.calls.size()) << text;
      ASSERT_EQ(got.ids.size(), expected.calls.size()) << text;
      for (size_t i = 0; i < expected.calls.size(); ++i) {
        ASSERT_EQ(got.calls[i].name, expected.calls[i].name) << text;
        ASSERT_EQ(got.calls[i].arguments, expected.calls[i].arguments) << text;
        ASSERT_EQ(got.arguments[i], expected.calls[i].arguments) << text;
        ASSERT_EQ(got.names[i], expected.calls[i].name) << text;
        ASSERT_EQ(got.ids[i], got.calls[i].id) << text;
      }
      for (const std::string& fragment : got.fragments) {
        ASSERT_EQ(fragment.find("<｜"), std::string::npos) << fragment;
      }
    }
  }
}

// Random outputs built from markers, fences and their pieces: whatever the markup, the
// streamed result must match the one-shot parse.
TEST(ToolCallParserTest, SplitInvarianceOnRandomMarkup) {
  std::vector<std::string> atoms = {kCallsBegin, kCallsEnd, kCallBegin, kCallEnd, kSep, kEos};
  atoms.push_back(kCallEnd.substr(0, 4));  // partial markers
  atoms.push_back(kEos.substr(0, 7));
  for (const char* atom : {"function", "get", "\n", " ", "```", "`", "json", "{", "}", "<", "x"}) {
    atoms.push_back(atom);
  }
  std::mt19937 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    std::string text;
    int n = std::uniform_int_distribution<int>(1, 24)(rng);
    for (int i = 0; i < n; ++i) {
      text += atoms[std::uniform_int_distribution<size_t>(0, atoms.size() - 1)(rng)];
    }
    ParsedToolCalls expected = ParseToolCalls(text);
    std::vector<std::vector<std::string>> splits = Splits(text);
    for (int k = 0; k < 12; ++k) {  // a sample: all splits of 400 texts would be slow at -O0
      const auto& pieces = splits[std::uniform_int_distribution<size_t>(0, splits.size() - 1)(rng)];
      Streamed got = RunTools(pieces);
      ASSERT_EQ(got.content, expected.content) << text;
      ASSERT_EQ(got.calls.size(), expected.calls.size()) << text;
      ASSERT_EQ(got.ids.size(), expected.calls.size()) << text;
      for (size_t i = 0; i < expected.calls.size(); ++i) {
        ASSERT_EQ(got.calls[i].name, expected.calls[i].name) << text;
        ASSERT_EQ(got.calls[i].arguments, expected.calls[i].arguments) << text;
        ASSERT_EQ(got.arguments[i], expected.calls[i].arguments) << text;
      }
    }
  }
}

TEST(ToolCallParserTest, FragmentsNeverContainTheClosingFence) {
  std::string text =
      kCallsBegin + V3Call("f", R"({"x": "y"})") + "\n" + V3Call("g", "{}") + kCallsEnd;
  for (const auto& pieces : Splits(text)) {
    Streamed got = RunTools(pieces);
    for (const std::string& fragment : got.fragments) {
      ASSERT_EQ(fragment.find('`'), std::string::npos) << fragment;
      ASSERT_NE(fragment.back(), '\n') << fragment;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Both parsers in a row, as the chat front end runs them: reasoning first, its content into
// the tool-call parser.

struct Composed {
  std::string reasoning;
  std::string content;
  std::vector<ToolCall> calls;
};

Composed RunComposed(bool starts_in_reasoning, const std::vector<std::string>& pieces) {
  ReasoningParser reasoning(starts_in_reasoning);
  ToolCallParser tools;
  Composed out;
  auto take = [&](const ReasoningParser::Delta& delta, bool last) {
    out.reasoning += delta.reasoning;
    out.content += tools.Push(delta.content).content;
    if (last) out.content += tools.Finish().content;
  };
  for (const std::string& piece : pieces) take(reasoning.Push(piece), false);
  take(reasoning.Finish(), true);
  out.calls = tools.calls();
  return out;
}

TEST(OutputParsersTest, ReasoningThenToolCalls) {
  std::string text = "I need the weather.\n</think>\n\n" + kCallsBegin +
                     V3Call("get_weather", R"({"city": "Paris"})") + kCallsEnd + kEos;
  Composed expected = RunComposed(true, {text});
  EXPECT_EQ(expected.reasoning, "I need the weather.\n");
  EXPECT_EQ(expected.content, "");  // the "\n\n" before the block is dropped
  ASSERT_EQ(expected.calls.size(), 1u);
  EXPECT_EQ(expected.calls[0].name, "get_weather");
  EXPECT_EQ(expected.calls[0].arguments, R"({"city": "Paris"})");
  for (const auto& pieces : Splits(text)) {
    Composed got = RunComposed(true, pieces);
    ASSERT_EQ(got.reasoning, expected.reasoning);
    ASSERT_EQ(got.content, expected.content);
    ASSERT_EQ(got.calls.size(), 1u);
    ASSERT_EQ(got.calls[0].arguments, expected.calls[0].arguments);
  }
}

TEST(OutputParsersTest, ThinkOpenerThenV31CallWithContent) {
  std::string text =
      "<think>Call it.</think>Sure." + kCallsBegin + V31Call("f", R"({"a": 1})") + kCallsEnd;
  Composed expected = RunComposed(false, {text});
  EXPECT_EQ(expected.reasoning, "Call it.");
  EXPECT_EQ(expected.content, "Sure.");
  ASSERT_EQ(expected.calls.size(), 1u);
  EXPECT_EQ(expected.calls[0].arguments, R"({"a": 1})");
  for (const auto& pieces : Splits(text)) {
    Composed got = RunComposed(false, pieces);
    ASSERT_EQ(got.reasoning, expected.reasoning);
    ASSERT_EQ(got.content, expected.content);
    ASSERT_EQ(got.calls.size(), 1u);
    ASSERT_EQ(got.calls[0].name, "f");
  }
}

}  // namespace
}  // namespace dserve::server
