// The OpenAI request parser: valid chat/completions/tokenize/detokenize bodies become the specs
// the service expects, and every malformed one becomes a 400 whose param and message name the
// offending field — including hostile bodies (deep nesting, invalid UTF-8, huge numbers).
#include "server/openai_parse.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <variant>

#include "absl/strings/str_cat.h"

namespace dserve::server {
namespace {

using Json = nlohmann::ordered_json;

// Parses a chat body that must fail and checks the 400's param and that the message names it.
void ExpectChatError(const std::string& body, const std::string& param,
                     const std::string& mention) {
  SCOPED_TRACE(body);
  const ParsedRequest r = ParseChatCompletionRequest(body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error.http_status, 400);
  EXPECT_EQ(r.error.type, "invalid_request_error");
  EXPECT_EQ(r.error.param, param);
  EXPECT_NE(r.error.message.find(mention), std::string::npos) << r.error.message;
}

void ExpectCompletionError(const std::string& body, const std::string& param,
                           const std::string& mention) {
  SCOPED_TRACE(body);
  const ParsedRequest r = ParseCompletionRequest(body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error.http_status, 400);
  EXPECT_EQ(r.error.param, param);
  EXPECT_NE(r.error.message.find(mention), std::string::npos) << r.error.message;
}

// A valid chat body with `extra` (",\"key\": value...") appended.
std::string Chat(const std::string& extra) {
  return R"({"model": "m", "messages": [{"role": "user", "content": "hi"}])" + extra + "}";
}
std::string Completion(const std::string& extra) {
  return R"({"model": "m", "prompt": "hi")" + extra + "}";
}

GenerationSpec ChatOk(const std::string& body) {
  const ParsedRequest r = ParseChatCompletionRequest(body);
  EXPECT_TRUE(r.ok()) << r.error.message;
  return r.ok() ? *r.spec : GenerationSpec{};
}
GenerationSpec CompletionOk(const std::string& body) {
  const ParsedRequest r = ParseCompletionRequest(body);
  EXPECT_TRUE(r.ok()) << r.error.message;
  return r.ok() ? *r.spec : GenerationSpec{};
}

// ---- ApiError ----

TEST(ApiErrorTest, JsonShapeWithNullParamAndCode) {
  const nlohmann::json j = ApiError::BadRequest("bad").ToJson();
  EXPECT_EQ(j["error"]["message"], "bad");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(j["error"]["param"].is_null());
  EXPECT_TRUE(j["error"]["code"].is_null());
  EXPECT_EQ(ApiError::BadRequest("bad", "temperature").ToJson()["error"]["param"], "temperature");
}

TEST(ApiErrorTest, StatusesTypesAndCodes) {
  EXPECT_EQ(ApiError::NotFound("x").http_status, 404);
  EXPECT_EQ(ApiError::NotFound("x").ToJson()["error"]["code"], "model_not_found");
  EXPECT_EQ(ApiError::Unauthorized("x").http_status, 401);
  EXPECT_EQ(ApiError::Unauthorized("x").type, "authentication_error");
  EXPECT_EQ(ApiError::Unauthorized("x").code, "invalid_api_key");
  EXPECT_EQ(ApiError::TooLarge("x").http_status, 413);
  EXPECT_EQ(ApiError::TooManyRequests("x").http_status, 429);
  EXPECT_EQ(ApiError::TooManyRequests("x").code, "rate_limit_exceeded");
  EXPECT_EQ(ApiError::Internal("x").http_status, 500);
  EXPECT_EQ(ApiError::Unavailable("x").http_status, 503);
}

// ---- JSON-level problems ----

TEST(JsonNestingDepthTest, CountsOutsideStringsAndStopsEarly) {
  EXPECT_EQ(JsonNestingDepth(R"({"a": [1, {"b": 2}]})", 64), 3);
  EXPECT_EQ(JsonNestingDepth(R"({"a": "[[[[\"[[[["})", 64), 1);
  EXPECT_EQ(JsonNestingDepth("[[[[[[", 3), 4);
  EXPECT_EQ(JsonNestingDepth("", 64), 0);
}

TEST(OpenAiParseTest, DeepNestingIsRefusedWithoutCrashing) {
  const std::string body = std::string(100000, '[') + std::string(100000, ']');
  const ParsedRequest r = ParseChatCompletionRequest(body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error.http_status, 400);
  EXPECT_NE(r.error.message.find("deeper than 64"), std::string::npos);
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  const ParsedRequest nested = ParseCompletionRequest(objects);  // truncated as well as deep
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.error.message.find("deeper than 64"), std::string::npos);
  // Depth 64 itself is fine as JSON (it then fails as a non-object body).
  const std::string ok_depth = std::string(64, '[') + std::string(64, ']');
  EXPECT_EQ(ParseChatCompletionRequest(ok_depth).error.message.find("deeper"), std::string::npos);
}

// {"k0": 0, "k1": 0, ...}: `members` distinct keys.
std::string FlatObject(int members) {
  std::string s = "{";
  for (int i = 0; i < members; ++i) absl::StrAppend(&s, i > 0 ? "," : "", "\"k", i, "\":0");
  return s + "}";
}

TEST(ScanJsonShapeTest, CountsMembersPerObjectOutsideStrings) {
  JsonShape shape = ScanJsonShape(R"({"a": 1, "b": {"c": 2, "d": [3, {"e": 4}]}, "f": "x:y"})", 64);
  EXPECT_EQ(shape.depth, 4);
  EXPECT_EQ(shape.max_object_members, 3);  // the outer one; the ':' inside "x:y" is not counted
  EXPECT_EQ(shape.member_pairs, 3 + 1);    // 3*2/2 + 2*1/2 + 0
  shape = ScanJsonShape(R"({"a:b": "{\":", "c": []})", 64);
  EXPECT_EQ(shape.max_object_members, 2);
  EXPECT_EQ(ScanJsonShape("{}", 64).max_object_members, 0);
  EXPECT_EQ(ScanJsonShape("[1, 2, 3]", 64).max_object_members, 0);  // arrays are not limited
  // A truncated object still counts: nlohmann inserts its members before failing.
  EXPECT_EQ(ScanJsonShape(R"({"a": 1, "b": 2, "c)", 64).max_object_members, 2);
  EXPECT_EQ(ScanJsonShape(FlatObject(5000), 64).max_object_members, 5000);
  EXPECT_EQ(ScanJsonShape("[[[[[[", 3).depth, 4);
}

TEST(CheckJsonShapeTest, NamesTheField) {
  EXPECT_FALSE(CheckJsonShape(FlatObject(kMaxJsonObjectMembers), "tools_json").has_value());
  const std::optional<ApiError> wide = CheckJsonShape(FlatObject(5000), "tools_json");
  ASSERT_TRUE(wide.has_value());
  EXPECT_EQ(wide->http_status, 400);
  EXPECT_EQ(wide->param, "tools_json");
  EXPECT_EQ(wide->message, "a JSON object in 'tools_json' has more than 4096 members");
  const std::optional<ApiError> deep = CheckJsonShape(std::string(65, '['), "x_json");
  ASSERT_TRUE(deep.has_value());
  EXPECT_EQ(deep->param, "x_json");
  EXPECT_NE(deep->message.find("deeper than 64"), std::string::npos);
}

// ordered_json inserts each key with a linear search, so a flat object of ~900k members (8 MiB)
// would take ~1e11 comparisons; the scan refuses it before nlohmann sees it.
TEST(OpenAiParseTest, ObjectWithTooManyMembersIsRefusedBeforeParsing) {
  const std::string wide = FlatObject(5000);
  const std::string message = "a JSON object in the body has more than 4096 members";
  ExpectChatError(Chat(", \"x\": " + wide), "", message);
  ExpectCompletionError(Completion(", \"x\": " + wide), "", message);
  const auto tokenize = ParseTokenizeRequest(R"({"prompt": "a", "x": )" + wide + "}");
  ASSERT_TRUE(std::holds_alternative<ApiError>(tokenize));
  EXPECT_EQ(std::get<ApiError>(tokenize).message, message);
  const auto detokenize = ParseDetokenizeRequest(R"({"tokens": [1], "x": )" + wide + "}");
  ASSERT_TRUE(std::holds_alternative<ApiError>(detokenize));
  EXPECT_EQ(std::get<ApiError>(detokenize).message, message);

  // The attack itself: an 8 MiB body of one flat object. Refused by the linear scan, so this
  // returns in milliseconds rather than hanging in ordered_map insertion.
  std::string huge = "{\"messages\": []";
  for (int i = 0; huge.size() < (size_t{8} << 20); ++i) absl::StrAppend(&huge, ",\"a", i, "\":0");
  ExpectChatError(huge + "}", "", message);
  ExpectChatError(huge, "", message);  // truncated as well
}

TEST(OpenAiParseTest, ObjectWithMaxMembersIsAcceptedAsUnknownFields) {
  // Unknown top-level keys are ignored, so the body itself may be that wide.
  std::string body = FlatObject(kMaxJsonObjectMembers - 1);
  body.back() = ',';
  const GenerationSpec spec = ChatOk(body + R"("messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_EQ(spec.messages.size(), 1u);
  EXPECT_EQ(ScanJsonShape(body, kMaxJsonDepth).max_object_members, kMaxJsonObjectMembers - 1);
}

// Many objects each under the per-object cap cost m^2/2 comparisons apiece: 235 objects of 4096
// members fit in 8 MiB and took ~5 s, so the total is bounded too.
TEST(OpenAiParseTest, ManyWideObjectsAreRefusedInTotal) {
  const std::string wide = FlatObject(kMaxJsonObjectMembers);
  EXPECT_TRUE(ChatOk(Chat(", \"x\": [" + wide + "," + wide + "]")).chat);
  const ParsedRequest r =
      ParseChatCompletionRequest(Chat(", \"x\": [" + wide + "," + wide + "," + wide + "]"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error.http_status, 400);
  EXPECT_NE(r.error.message.find("too many members in all"), std::string::npos) << r.error.message;
  // A long array of small objects (e.g. many messages) is fine.
  std::string messages;
  for (int i = 0; i < 20000; ++i) messages += R"({"role": "user", "content": "hi"},)";
  messages.pop_back();
  EXPECT_EQ(ChatOk(R"({"messages": [)" + messages + "]}").messages.size(), 20000u);
}

TEST(OpenAiParseTest, TruncatedJson) {
  const ParsedRequest r = ParseChatCompletionRequest(R"({"messages": [{"role": "user")");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error.param, "");
  EXPECT_EQ(r.error.message.rfind("invalid JSON body: ", 0), 0u) << r.error.message;
}

TEST(OpenAiParseTest, InvalidUtf8InsideStringIsInvalidJsonAndErrorSerialises) {
  const std::string body = R"({"messages": [{"role": "user", "content": "h)"
                           "\xff\xfe"
                           R"("}]})";
  const ParsedRequest r = ParseChatCompletionRequest(body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error.http_status, 400);
  EXPECT_NE(r.error.message.find("invalid JSON body"), std::string::npos);
  EXPECT_NO_THROW(r.error.ToJson().dump());  // the parser's quote of the bad bytes is escaped
}

TEST(OpenAiParseTest, NumberBeyondDoubleIsInvalidJson) {
  // nlohmann refuses 1e999 (out_of_range 406) rather than producing inf.
  ExpectChatError(Chat(R"(, "temperature": 1e999)"), "", "invalid JSON body");
}

TEST(OpenAiParseTest, BodyMustBeAnObject) {
  ExpectChatError("[1, 2]", "", "JSON object");
  ExpectChatError("", "", "invalid JSON body");
}

// ---- Chat: valid ----

TEST(ChatParseTest, StringContentAndDefaults) {
  const GenerationSpec spec = ChatOk(Chat(""));
  EXPECT_TRUE(spec.chat);
  EXPECT_EQ(spec.model, "m");
  ASSERT_EQ(spec.messages.size(), 1u);
  EXPECT_EQ(spec.messages[0], Json({{"role", "user"}, {"content", "hi"}}));
  EXPECT_TRUE(spec.tools.is_null());
  EXPECT_TRUE(spec.tool_choice.is_null());
  EXPECT_TRUE(spec.add_generation_prompt);
  EXPECT_FALSE(spec.max_tokens_set);
  EXPECT_FALSE(spec.stream);
  EXPECT_FALSE(spec.want_logprobs);
  EXPECT_FALSE(spec.params.logprobs.has_value());
  EXPECT_TRUE(spec.prompts.empty());
}

TEST(ChatParseTest, ModelMayBeAbsentUnknownFieldsAndNullsIgnored) {
  const GenerationSpec spec = ChatOk(
      R"({"messages": [{"role": "user", "content": "hi"}], "frobnicate": [1], "temperature": null,
          "tools": null, "stop": null})");
  EXPECT_EQ(spec.model, "");
  EXPECT_FLOAT_EQ(spec.params.temperature, 1.0f);
  EXPECT_TRUE(spec.tools.is_null());
}

TEST(ChatParseTest, ContentPartsAreJoinedAndDeveloperBecomesSystem) {
  const GenerationSpec spec = ChatOk(R"({"messages": [
      {"role": "developer", "content": "be brief"},
      {"role": "user", "name": "ann", "content": [{"type": "text", "text": "a"},
                                                  {"type": "text", "text": "b"}]}]})");
  ASSERT_EQ(spec.messages.size(), 2u);
  EXPECT_EQ(spec.messages[0]["role"], "system");
  EXPECT_EQ(spec.messages[1]["content"], "a\nb");
  EXPECT_EQ(spec.messages[1]["name"], "ann");
}

TEST(ChatParseTest, ToolsToolCallsAndToolMessages) {
  const GenerationSpec spec = ChatOk(R"({"messages": [
      {"role": "user", "content": "weather?"},
      {"role": "assistant", "content": null, "reasoning_content": "think",
       "tool_calls": [{"id": "c1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
               "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": "auto"})");
  ASSERT_EQ(spec.messages.size(), 3u);
  EXPECT_TRUE(spec.messages[1]["content"].is_null());
  EXPECT_EQ(spec.messages[1]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(spec.messages[1]["reasoning_content"], "think");
  EXPECT_EQ(spec.messages[2]["tool_call_id"], "c1");
  EXPECT_EQ(spec.messages[2]["content"], "sunny");
  ASSERT_TRUE(spec.tools.is_array());
  EXPECT_EQ(spec.tools[0]["function"]["name"], "get_weather");
  EXPECT_EQ(spec.tool_choice, "auto");
}

TEST(ChatParseTest, ToolChoiceAutoAndNoneAreAccepted) {
  const std::string tools = R"(, "tools": [{"type": "function", "function": {"name": "f"}}])";
  EXPECT_EQ(ChatOk(Chat(tools + R"(, "tool_choice": "auto")")).tool_choice, "auto");
  EXPECT_EQ(ChatOk(Chat(tools + R"(, "tool_choice": "none")")).tool_choice, "none");
  EXPECT_EQ(ChatOk(Chat(R"(, "tool_choice": "auto")")).tool_choice, "auto");
  EXPECT_EQ(ChatOk(Chat(R"(, "tool_choice": "none")")).tool_choice, "none");
}

TEST(ChatParseTest, SamplingFields) {
  const GenerationSpec spec = ChatOk(Chat(
      R"(, "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5,
         "min_p": 0.1, "presence_penalty": -1, "frequency_penalty": 1.5,
         "repetition_penalty": 1.1, "top_k": -1, "n": 3, "seed": -1, "stop": "END",
         "stop_token_ids": [1, 2], "min_tokens": 2, "ignore_eos": true,
         "skip_special_tokens": false, "stream": true, "stream_options": {"include_usage": true},
         "user": "u", "chat_template_kwargs": {"thinking": true}, "add_generation_prompt": false,
         "response_format": {"type": "text"}, "logit_bias": {})"));
  EXPECT_TRUE(spec.max_tokens_set);
  EXPECT_EQ(spec.params.max_tokens, 7);  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(spec.params.temperature, 0.0f);
  EXPECT_FLOAT_EQ(spec.params.top_p, 0.5f);
  EXPECT_FLOAT_EQ(spec.params.min_p, 0.1f);
  EXPECT_FLOAT_EQ(spec.params.presence_penalty, -1.0f);
  EXPECT_FLOAT_EQ(spec.params.frequency_penalty, 1.5f);
  EXPECT_FLOAT_EQ(spec.params.repetition_penalty, 1.1f);
  EXPECT_EQ(spec.params.top_k, -1);
  EXPECT_EQ(spec.params.n, 3);
  EXPECT_EQ(spec.params.seed, UINT64_MAX);
  EXPECT_EQ(spec.params.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(spec.params.stop_token_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(spec.params.min_tokens, 2);
  EXPECT_TRUE(spec.params.ignore_eos);
  EXPECT_FALSE(spec.params.skip_special_tokens);
  EXPECT_TRUE(spec.stream);
  EXPECT_TRUE(spec.include_usage);
  EXPECT_EQ(spec.user, "u");
  EXPECT_EQ(spec.chat_template_kwargs["thinking"], true);
  EXPECT_FALSE(spec.add_generation_prompt);
}

TEST(ChatParseTest, IntegralFloatAndBigSeed) {
  const GenerationSpec spec =
      ChatOk(Chat(R"(, "max_tokens": 4.0, "seed": 18446744073709551615, "stop": ["a", "b"])"));
  EXPECT_EQ(spec.params.max_tokens, 4);
  EXPECT_EQ(spec.params.seed, UINT64_MAX);
  EXPECT_EQ(spec.params.stop.size(), 2u);
}

TEST(ChatParseTest, Logprobs) {
  GenerationSpec spec = ChatOk(Chat(R"(, "logprobs": true, "top_logprobs": 5)"));
  EXPECT_TRUE(spec.want_logprobs);
  EXPECT_EQ(spec.top_logprobs, 5);
  EXPECT_EQ(spec.params.logprobs, 5);
  spec = ChatOk(Chat(R"(, "logprobs": true)"));
  EXPECT_EQ(spec.params.logprobs, 0);
  spec = ChatOk(Chat(R"(, "logprobs": false, "top_logprobs": 0)"));
  EXPECT_FALSE(spec.params.logprobs.has_value());
}

// ---- Chat: errors ----

TEST(ChatParseTest, MessagesMissingNullEmptyOrWrongType) {
  ExpectChatError(R"({"model": "m"})", "messages", "'messages' is required");
  ExpectChatError(R"({"messages": null})", "messages", "'messages' is required");
  ExpectChatError(R"({"messages": []})", "messages", "non-empty");
  ExpectChatError(R"({"messages": "hi"})", "messages", "'messages' must be an array, got string");
  ExpectChatError(R"({"messages": ["hi"]})", "messages[0]", "must be an object");
}

TEST(ChatParseTest, RoleProblems) {
  ExpectChatError(R"({"messages": [{"content": "x"}]})", "messages[0].role", "is required");
  ExpectChatError(R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role",
                  "'wizard'");
  ExpectChatError(R"({"messages": [{"role": 3, "content": "x"}]})", "messages[0].role",
                  "must be a string, got integer");
}

TEST(ChatParseTest, NullContentOnlyForAssistantWithToolCalls) {
  ExpectChatError(
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": null}]})",
      "messages[1].content", "'messages[1].content'");
  ExpectChatError(R"({"messages": [{"role": "assistant"}]})", "messages[0].content", "tool_calls");
  ExpectChatError(R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content",
                  "got integer");
}

TEST(ChatParseTest, ImagePartIsRefused) {
  ExpectChatError(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                     {"type": "image_url", "image_url": {"url": "http://x"}}]}]})",
                  "messages[0].content[1].type",
                  "content part type 'image_url' is not supported (text-only model)");
  ExpectChatError(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})",
                  "messages[0].content[0].text", "is required");
}

TEST(ChatParseTest, BadToolCalls) {
  ExpectChatError(R"({"messages": [{"role": "assistant", "content": null, "tool_calls": [
                     {"type": "function", "function": {"name": "f", "arguments": {}}}]}]})",
                  "messages[0].tool_calls[0].function.arguments", "must be a string");
  ExpectChatError(
      R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]})",
      "messages[0].tool_calls[0].function.name", "is required");
}

TEST(ChatParseTest, BadTools) {
  ExpectChatError(Chat(R"(, "tools": {})"), "tools", "must be an array");
  ExpectChatError(Chat(R"(, "tools": [{"type": "retrieval"}])"), "tools[0].type", "'function'");
  ExpectChatError(Chat(R"(, "tools": [{"type": "function", "function": {"name": ""}}])"),
                  "tools[0].function.name", "non-empty");
  ExpectChatError(
      Chat(R"(, "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}])"),
      "tools[0].function.parameters", "must be an object");
}

// Without constrained decoding dserve cannot force a tool call, so it says so instead of
// accepting a tool_choice it would not honour.
TEST(ChatParseTest, ForcedToolChoiceIsRefused) {
  const std::string tools = R"(, "tools": [{"type": "function", "function": {"name": "f"}}])";
  const std::string cannot =
      "is not supported: dserve cannot force a tool call (no constrained decoding); use \"auto\"";
  ExpectChatError(Chat(tools + R"(, "tool_choice": "required")"), "tool_choice",
                  "tool_choice 'required' " + cannot);
  ExpectChatError(Chat(R"(, "tool_choice": "required")"), "tool_choice", cannot);
  ExpectChatError(
      Chat(tools + R"(, "tool_choice": {"type": "function", "function": {"name": "f"}})"),
      "tool_choice", "tool_choice naming a function " + cannot);
  ExpectChatError(
      Chat(tools + R"(, "tool_choice": {"type": "function", "function": {"name": "g"}})"),
      "tool_choice", cannot);
}

TEST(ChatParseTest, BadToolChoice) {
  ExpectChatError(Chat(R"(, "tool_choice": "sometimes")"), "tool_choice", "'sometimes'");
  ExpectChatError(Chat(R"(, "tool_choice": {"type": "tool", "function": {"name": "f"}})"),
                  "tool_choice.type", "'tool'");
  ExpectChatError(Chat(R"(, "tool_choice": {"type": "function"})"), "tool_choice.function",
                  "is required");
  ExpectChatError(Chat(R"(, "tool_choice": {"type": "function", "function": {}})"),
                  "tool_choice.function.name", "is required");
  ExpectChatError(Chat(R"(, "tool_choice": 1)"), "tool_choice", "got integer");
}

TEST(ChatParseTest, WrongTypesForSamplingFields) {
  ExpectChatError(Chat(R"(, "temperature": "0.5")"), "temperature",
                  "'temperature' must be a number, got string");
  ExpectChatError(Chat(R"(, "top_p": true)"), "top_p", "'top_p' must be a number, got boolean");
  ExpectChatError(Chat(R"(, "stream": "true")"), "stream", "'stream' must be a boolean");
  ExpectChatError(Chat(R"(, "ignore_eos": 1)"), "ignore_eos", "'ignore_eos' must be a boolean");
  ExpectChatError(Chat(R"(, "model": 7)"), "model", "'model' must be a string");
  ExpectChatError(Chat(R"(, "user": {})"), "user", "'user' must be a string");
  ExpectChatError(Chat(R"(, "chat_template_kwargs": [])"), "chat_template_kwargs",
                  "must be an object");
  ExpectChatError(Chat(R"(, "add_generation_prompt": "no")"), "add_generation_prompt",
                  "must be a boolean");
}

TEST(ChatParseTest, FloatsWhereIntegersAreExpected) {
  ExpectChatError(Chat(R"(, "max_tokens": 1.5)"), "max_tokens",
                  "'max_tokens' must be an integer, got 1.5");
  ExpectChatError(Chat(R"(, "top_k": 2.5)"), "top_k", "'top_k' must be an integer");
  ExpectChatError(Chat(R"(, "n": "2")"), "n", "'n' must be an integer, got string");
}

TEST(ChatParseTest, HugeNumbers) {
  ExpectChatError(Chat(R"(, "max_tokens": 1e30)"), "max_tokens", "'max_tokens' is out of range");
  ExpectChatError(Chat(R"(, "max_tokens": 2147483648)"), "max_tokens", "out of range");
  ExpectChatError(Chat(R"(, "max_tokens": 99999999999999999999999)"), "max_tokens", "out of range");
  ExpectChatError(Chat(R"(, "temperature": 1e300)"), "temperature",
                  "'temperature' is out of range");
  ExpectChatError(Chat(R"(, "seed": 1e30)"), "seed", "'seed' is out of range");
  ExpectChatError(Chat(R"(, "stop_token_ids": [1, 4294967296])"), "stop_token_ids[1]",
                  "out of range");
}

TEST(ChatParseTest, MaxTokensAndMinTokensBounds) {
  ExpectChatError(Chat(R"(, "max_tokens": 0)"), "max_tokens", "'max_tokens' must be >= 1, got 0");
  ExpectChatError(Chat(R"(, "max_completion_tokens": -3)"), "max_completion_tokens",
                  "'max_completion_tokens' must be >= 1");
  ExpectChatError(Chat(R"(, "min_tokens": -1)"), "min_tokens", "'min_tokens' must be >= 0");
}

TEST(ChatParseTest, StopProblems) {
  ExpectChatError(Chat(R"(, "stop": "")"), "stop", "'stop' must be a non-empty string");
  ExpectChatError(Chat(R"(, "stop": ["a", ""])"), "stop[1]", "'stop[1]' must be non-empty");
  ExpectChatError(Chat(R"(, "stop": ["a", 3])"), "stop[1]", "must be a string");
  ExpectChatError(Chat(R"(, "stop": 3)"), "stop", "'stop' must be a string or an array");
  std::string many = R"(, "stop": [)";
  for (int i = 0; i < 17; ++i) many += (i ? ",\"s" : "\"s") + std::to_string(i) + "\"";
  ExpectChatError(Chat(many + "]"), "stop", "at most 16");
}

TEST(ChatParseTest, StopTokenIdsMustBeIntegers) {
  ExpectChatError(Chat(R"(, "stop_token_ids": 5)"), "stop_token_ids", "must be an array");
  ExpectChatError(Chat(R"(, "stop_token_ids": [1, "2"])"), "stop_token_ids[1]",
                  "'stop_token_ids[1]' must be an integer");
}

TEST(ChatParseTest, StreamOptionsWithoutStream) {
  ExpectChatError(Chat(R"(, "stream_options": {"include_usage": true})"), "stream_options",
                  "stream_options is only allowed when stream is true");
  ExpectChatError(Chat(R"(, "stream": false, "stream_options": {"include_usage": true})"),
                  "stream_options", "stream_options");
  ExpectChatError(Chat(R"(, "stream": true, "stream_options": {"include_usage": "yes"})"),
                  "stream_options.include_usage", "must be a boolean");
}

TEST(ChatParseTest, LogprobsErrors) {
  ExpectChatError(Chat(R"(, "top_logprobs": 3)"), "top_logprobs", "'logprobs'");
  ExpectChatError(Chat(R"(, "logprobs": false, "top_logprobs": 3)"), "top_logprobs",
                  "'top_logprobs'");
  ExpectChatError(Chat(R"(, "logprobs": true, "top_logprobs": 21)"), "top_logprobs",
                  "'top_logprobs' must be in [0, 20], got 21");
  ExpectChatError(Chat(R"(, "logprobs": 5)"), "logprobs", "'logprobs' must be a boolean");
}

TEST(ChatParseTest, UnsupportedFeatures) {
  ExpectChatError(Chat(R"(, "response_format": {"type": "json_object"})"), "response_format",
                  "response_format 'json_object' is not supported");
  ExpectChatError(Chat(R"(, "response_format": {"type": "json_schema", "json_schema": {}})"),
                  "response_format", "'json_schema'");
  ExpectChatError(Chat(R"(, "response_format": {"type": "yaml"})"), "response_format.type",
                  "'yaml'");
  ExpectChatError(Chat(R"(, "logit_bias": {"50256": -100})"), "logit_bias",
                  "logit_bias is not supported");
}

// ---- Completions ----

TEST(CompletionParseTest, StringPrompt) {
  const GenerationSpec spec = CompletionOk(Completion(R"(, "echo": true, "max_tokens": 3)"));
  EXPECT_FALSE(spec.chat);
  ASSERT_EQ(spec.prompts.size(), 1u);
  EXPECT_EQ(spec.prompts[0].kind, PromptKind::kText);
  EXPECT_EQ(spec.prompts[0].text, "hi");
  EXPECT_TRUE(spec.echo);
  EXPECT_EQ(spec.params.max_tokens, 3);
  EXPECT_TRUE(spec.max_tokens_set);
}

TEST(CompletionParseTest, ArrayOfStrings) {
  const GenerationSpec spec = CompletionOk(R"({"prompt": ["a", "b", ""]})");
  ASSERT_EQ(spec.prompts.size(), 3u);
  EXPECT_EQ(spec.prompts[1].kind, PromptKind::kText);
  EXPECT_EQ(spec.prompts[1].text, "b");
}

TEST(CompletionParseTest, ArrayOfTokenIds) {
  const GenerationSpec spec = CompletionOk(R"({"prompt": [0, 19923, 2147483647]})");
  ASSERT_EQ(spec.prompts.size(), 1u);
  EXPECT_EQ(spec.prompts[0].kind, PromptKind::kTokens);
  EXPECT_EQ(spec.prompts[0].tokens, (std::vector<int32_t>{0, 19923, 2147483647}));
}

TEST(CompletionParseTest, ArrayOfTokenIdArrays) {
  const GenerationSpec spec = CompletionOk(R"({"prompt": [[1, 2], [3]], "n": 2, "best_of": 2})");
  ASSERT_EQ(spec.prompts.size(), 2u);
  EXPECT_EQ(spec.prompts[0].tokens, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(spec.prompts[1].tokens, (std::vector<int32_t>{3}));
  EXPECT_EQ(spec.params.n, 2);
}

TEST(CompletionParseTest, Logprobs) {
  GenerationSpec spec = CompletionOk(Completion(R"(, "logprobs": 3)"));
  EXPECT_TRUE(spec.want_logprobs);
  EXPECT_EQ(spec.top_logprobs, 3);
  EXPECT_EQ(spec.params.logprobs, 3);
  spec = CompletionOk(Completion(R"(, "logprobs": null)"));
  EXPECT_FALSE(spec.want_logprobs);
  ExpectCompletionError(Completion(R"(, "logprobs": 21)"), "logprobs", "'logprobs'");
  ExpectCompletionError(Completion(R"(, "logprobs": true)"), "logprobs",
                        "'logprobs' must be an integer, got boolean");
}

TEST(CompletionParseTest, PromptProblems) {
  ExpectCompletionError(R"({"model": "m"})", "prompt", "'prompt' is required");
  ExpectCompletionError(R"({"prompt": null})", "prompt", "'prompt' is required");
  ExpectCompletionError(R"({"prompt": []})", "prompt", "'prompt' must not be an empty array");
  ExpectCompletionError(R"({"prompt": [[1], []]})", "prompt[1]",
                        "'prompt[1]' must not be an empty array");
  ExpectCompletionError(R"({"prompt": [1, -2]})", "prompt[1]", "'prompt[1]' must be >= 0, got -2");
  ExpectCompletionError(R"({"prompt": [1, 2147483648]})", "prompt[1]", "out of range");
  ExpectCompletionError(R"({"prompt": [1, 2.5]})", "prompt[1]", "must be an integer");
  ExpectCompletionError(R"({"prompt": ["a", 1]})", "prompt[1]", "must be a string");
  ExpectCompletionError(R"({"prompt": [[1], "a"]})", "prompt[1]", "'prompt[1]'");
  ExpectCompletionError(R"({"prompt": 5})", "prompt", "'prompt' must be a string");
}

// ["p", "p", ...] or [[1], [1], ...] with `count` prompts.
std::string PromptList(size_t count, const std::string& one) {
  std::string s = "[";
  for (size_t i = 0; i < count; ++i) absl::StrAppend(&s, i > 0 ? "," : "", one);
  return s + "]";
}

TEST(CompletionParseTest, AtMost256PromptsPerRequest) {
  EXPECT_EQ(CompletionOk(R"({"prompt": )" + PromptList(256, "\"p\"") + "}").prompts.size(), 256u);
  EXPECT_EQ(CompletionOk(R"({"prompt": )" + PromptList(256, "[1]") + "}").prompts.size(), 256u);
  ExpectCompletionError(R"({"prompt": )" + PromptList(257, "\"p\"") + "}", "prompt",
                        "prompt holds 257 prompts; at most 256 per request");
  ExpectCompletionError(R"({"prompt": )" + PromptList(257, "[1]") + "}", "prompt",
                        "prompt holds 257 prompts; at most 256 per request");
  // One prompt of many token ids is one prompt.
  EXPECT_EQ(CompletionOk(R"({"prompt": )" + PromptList(100000, "7") + "}").prompts[0].tokens.size(),
            100000u);
}

TEST(CompletionParseTest, AtMost1024ChoicesPerRequest) {
  const std::string prompts200 = PromptList(200, "\"p\"");
  ExpectCompletionError(R"({"n": 8, "prompt": )" + prompts200 + "}", "n",
                        "n (8) times the number of prompts (200) is 1600 choices; at most 1024");
  EXPECT_EQ(CompletionOk(R"({"n": 5, "prompt": )" + prompts200 + "}").prompts.size(), 200u);
  EXPECT_EQ(CompletionOk(R"({"n": 4, "prompt": )" + PromptList(256, "[1]") + "}").params.n, 4);
  // A single prompt's n is left to the engine's own bound (n in [1, 128]).
  EXPECT_EQ(CompletionOk(Completion(R"(, "n": 2000)")).params.n, 2000);
}

TEST(CompletionParseTest, SuffixAndBestOf) {
  ExpectCompletionError(Completion(R"(, "suffix": "end")"), "suffix", "suffix is not supported");
  ExpectCompletionError(Completion(R"(, "best_of": 3)"), "best_of", "best_of is not supported");
  ExpectCompletionError(Completion(R"(, "best_of": 1.5)"), "best_of",
                        "'best_of' must be an integer");
  EXPECT_TRUE(ParseCompletionRequest(Completion(R"(, "suffix": null, "best_of": 1)")).ok());
}

TEST(CompletionParseTest, SharedFieldErrorsAndMaxCompletionTokensIgnored) {
  ExpectCompletionError(Completion(R"(, "echo": "yes")"), "echo", "'echo' must be a boolean");
  ExpectCompletionError(Completion(R"(, "stream_options": {})"), "stream_options", "stream");
  ExpectCompletionError(Completion(R"(, "frequency_penalty": [])"), "frequency_penalty",
                        "must be a number, got array");
  const GenerationSpec spec = CompletionOk(Completion(R"(, "max_completion_tokens": 9)"));
  EXPECT_FALSE(spec.max_tokens_set);
}

// ---- Tokenize / detokenize ----

TEST(TokenizeParseTest, PromptForm) {
  const auto r = ParseTokenizeRequest(R"({"model": "m", "prompt": "Hello"})");
  ASSERT_TRUE(std::holds_alternative<TokenizeSpec>(r));
  const TokenizeSpec& spec = std::get<TokenizeSpec>(r);
  EXPECT_FALSE(spec.chat);
  EXPECT_EQ(spec.model, "m");
  EXPECT_EQ(spec.prompt, "Hello");
  EXPECT_TRUE(spec.add_special_tokens);
}

TEST(TokenizeParseTest, MessagesForm) {
  const auto r = ParseTokenizeRequest(
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
          "add_generation_prompt": false, "chat_template_kwargs": {"k": 1}})");
  ASSERT_TRUE(std::holds_alternative<TokenizeSpec>(r));
  const TokenizeSpec& spec = std::get<TokenizeSpec>(r);
  EXPECT_TRUE(spec.chat);
  EXPECT_FALSE(spec.add_special_tokens);
  EXPECT_FALSE(spec.add_generation_prompt);
  EXPECT_EQ(spec.messages[0]["content"], "x");
  EXPECT_EQ(spec.chat_template_kwargs["k"], 1);
  const auto with_special = ParseTokenizeRequest(
      R"({"messages": [{"role": "user", "content": "x"}], "add_special_tokens": true})");
  EXPECT_TRUE(std::get<TokenizeSpec>(with_special).add_special_tokens);
}

TEST(TokenizeParseTest, Errors) {
  auto error = [](const std::string& body) {
    const auto r = ParseTokenizeRequest(body);
    EXPECT_TRUE(std::holds_alternative<ApiError>(r)) << body;
    return std::holds_alternative<ApiError>(r) ? std::get<ApiError>(r) : ApiError{};
  };
  EXPECT_EQ(error(R"({"model": "m"})").param, "prompt");
  EXPECT_EQ(error(R"({"prompt": 3})").param, "prompt");
  EXPECT_EQ(error(R"({"prompt": "a", "messages": []})").param, "messages");
  EXPECT_EQ(error(R"({"messages": [{"role": "x", "content": "a"}]})").param, "messages[0].role");
  EXPECT_EQ(error(R"({"prompt": "a", "add_special_tokens": "no"})").param, "add_special_tokens");
  EXPECT_EQ(error("{").http_status, 400);
}

TEST(DetokenizeParseTest, ValidAndErrors) {
  const auto ok = ParseDetokenizeRequest(R"({"model": "m", "tokens": [0, 19923, 14]})");
  ASSERT_TRUE(std::holds_alternative<DetokenizeSpec>(ok));
  EXPECT_EQ(std::get<DetokenizeSpec>(ok).tokens, (std::vector<int32_t>{0, 19923, 14}));
  EXPECT_EQ(std::get<DetokenizeSpec>(ok).model, "m");

  const auto missing = ParseDetokenizeRequest(R"({"model": "m"})");
  ASSERT_TRUE(std::holds_alternative<ApiError>(missing));
  EXPECT_EQ(std::get<ApiError>(missing).param, "tokens");
  const auto bad = ParseDetokenizeRequest(R"({"tokens": [1, "a"]})");
  ASSERT_TRUE(std::holds_alternative<ApiError>(bad));
  EXPECT_EQ(std::get<ApiError>(bad).param, "tokens[1]");
  EXPECT_NE(std::get<ApiError>(bad).message.find("'tokens[1]'"), std::string::npos);
  const auto neg = ParseDetokenizeRequest(R"({"tokens": [-1]})");
  ASSERT_TRUE(std::holds_alternative<ApiError>(neg));
  EXPECT_EQ(std::get<ApiError>(neg).param, "tokens[0]");
}

}  // namespace
}  // namespace dserve::server
