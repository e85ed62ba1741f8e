// ChatTemplate against Hugging Face: every real template of ../shared/testdata/templates on every
// conversation of conversations.json, and every interpreter snippet of snippets.py, must render
// byte-identically to goldens.json (made by make_goldens.py with jinja2 3.1.2 configured as
// transformers does) or raise the same error. Plus the API around it: FromModelDir, inputs,
// concurrency and the `dserve chat-template` command.
#include "engine/chat/chat_template.h"

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_env.h"

namespace dserve::engine {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The parsed file, or (after a test failure naming it) an object with empty golden lists.
Json ReadJson(const std::string& path) {
  Json j = Json::parse(ReadText(path), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    ADD_FAILURE() << path << " is not a JSON object";
    return Json{{"templates", Json::object()},
                {"cases", Json::array()},
                {"snippets", Json::array()},
                {"conversations", Json::array()}};
  }
  return j;
}

const Json& Goldens() {
  static const Json* goldens =
      new Json(ReadJson(std::string(DSERVE_CHAT_TEST_DIR) + "/goldens.json"));
  return *goldens;
}

const Json& Conversations() {
  static const Json* convs = new Json(
      ReadJson(std::string(DSERVE_CHAT_TEST_DIR) + "/conversations.json")["conversations"]);
  return *convs;
}

// 2024-09-05 14:30:00, the instant make_goldens.py gives strftime_now; TZ=UTC makes it local.
std::time_t FixedNow() {
  setenv("TZ", "UTC", 1);
  tzset();
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 8;
  tm.tm_mday = 5;
  tm.tm_hour = 14;
  tm.tm_min = 30;
  return timegm(&tm);
}

// Checks a render against a golden entry: the same text, or the same exception. A template's
// raise_exception message must come back unchanged; Python errors as "Type: message".
void ExpectMatches(const absl::StatusOr<std::string>& got, const Json& golden,
                   const std::string& label) {
  if (golden.contains("output")) {
    ASSERT_TRUE(got.ok()) << label << ": " << got.status();
    EXPECT_EQ(*got, golden["output"].get<std::string>()) << label;
    return;
  }
  const std::string type = golden["error_type"];
  const std::string message = golden["error"];
  ASSERT_FALSE(got.ok()) << label << ": rendered " << Json(*got).dump() << " where Python raised "
                         << type << ": " << message;
  const std::string status_message(got.status().message());
  if (type == "TemplateError") {
    EXPECT_EQ(status_message, message) << label;
    EXPECT_TRUE(absl::IsInvalidArgument(got.status())) << label;
  } else if (type == "TemplateSyntaxError") {
    // Syntax errors are dserve's own wording; the kind and a line must be named.
    EXPECT_TRUE(absl::StrContains(status_message, "TemplateSyntaxError"))
        << label << ": " << status_message;
    EXPECT_TRUE(absl::StrContains(status_message, "line ")) << label << ": " << status_message;
  } else {
    EXPECT_TRUE(absl::StrContains(status_message, absl::StrCat(type, ": ", message)))
        << label << ": got '" << status_message << "', Python raised " << type << ": " << message;
    EXPECT_TRUE(absl::StrContains(status_message, "chat template line ")) << label;
  }
}

ChatTemplateInputs InputsOf(const Json& conv) {
  ChatTemplateInputs in;
  in.messages = conv["messages"];
  if (conv.contains("tools")) in.tools = conv["tools"];
  in.add_generation_prompt = conv.value("add_generation_prompt", false);
  if (conv.contains("kwargs")) in.extra = conv["kwargs"];
  return in;
}

class GoldenTemplateTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTemplateTest, EveryConversationMatchesHuggingFace) {
  const std::string name = GetParam();
  const std::string source = ReadText(testing::TestdataPath("templates/" + name + ".jinja"));
  ASSERT_FALSE(source.empty()) << name;
  absl::StatusOr<ChatTemplate> tmpl =
      ChatTemplate::Compile(source, Goldens()["templates"].value(name, Json::object()));
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  std::map<std::string, const Json*> convs;
  for (const Json& c : Conversations()) convs[c["name"]] = &c;
  int checked = 0;
  for (const Json& golden : Goldens()["cases"]) {
    if (golden["template"] != name) continue;
    const std::string conv_name = golden["conversation"];
    ASSERT_TRUE(convs.contains(conv_name)) << conv_name;
    ExpectMatches(tmpl->Render(InputsOf(*convs[conv_name])), golden,
                  absl::StrCat(name, " / ", conv_name));
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(Conversations().size())) << name;
}

INSTANTIATE_TEST_SUITE_P(RealTemplates, GoldenTemplateTest,
                         ::testing::Values("deepseek-ai-DeepSeek-V3", "deepseek-ai-DeepSeek-V3.1",
                                           "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
                                           "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
                                           "Qwen-Qwen2.5-7B-Instruct",
                                           "meta-llama-Llama-3.1-8B-Instruct"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

TEST(GoldenTemplateCoverage, FortyConversationsSixTemplates) {
  EXPECT_GE(Conversations().size(), 40u);
  EXPECT_EQ(Goldens()["cases"].size(), 6 * Conversations().size());
}

TEST(GoldenSnippetTest, InterpreterMatchesJinja2) {
  const std::time_t now = FixedNow();
  int checked = 0;
  for (const Json& snippet : Goldens()["snippets"]) {
    const std::string name = snippet["name"];
    const std::string label = absl::StrCat("snippet ", name, ": ", snippet["template"].dump());
    ChatTemplateInputs in;
    if (snippet.contains("vars")) {
      for (const auto& [key, value] : snippet["vars"].items()) {
        if (key == "messages") {
          in.messages = value;
        } else if (key == "tools") {
          in.tools = value;
        } else {
          in.extra[key] = value;
        }
      }
    }
    absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Compile(snippet["template"], Json());
    if (!tmpl.ok()) {
      ExpectMatches(tmpl.status(), snippet, label);
    } else {
      tmpl->SetClockForTesting([now] { return now; });
      ExpectMatches(tmpl->Render(in), snippet, label);
    }
    ++checked;
  }
  EXPECT_GT(checked, 150);
}

// ---- the API around the interpreter ----------------------------------------------------------

std::string WriteModelDir(const Json& tokenizer_config) {
  const std::string dir = testing::ScratchDir("chat");
  std::ofstream(dir + "/tokenizer_config.json") << tokenizer_config.dump(1);
  return dir;
}

TEST(ChatTemplateApi, FromModelDirReadsTemplateAndTokens) {
  Json config = {{"add_bos_token", true},
                 {"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}, {"lstrip", false}}},
                 {"eos_token", "</s>"},
                 {"pad_token", nullptr},
                 {"unk_token", {{"content", "<unk>"}}},
                 {"additional_special_tokens", Json::array({"<x>", {{"content", "<y>"}}})},
                 {"chat_template",
                  "{{ bos_token }}|{{ eos_token }}|{{ unk_token }}|{{ pad_token is defined }}|"
                  "{{ add_bos_token is defined }}|{{ additional_special_tokens }}|"
                  "{% for m in messages %}{{ m.content }}{% endfor %}"}};
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(WriteModelDir(config));
  ASSERT_TRUE(t.ok()) << t.status();
  ChatTemplateInputs in;
  in.messages = Json::array({{{"role", "user"}, {"content", "hi"}}});
  absl::StatusOr<std::string> out = t->Render(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>|</s>|<unk>|False|False|['<x>', '<y>']|hi");
}

TEST(ChatTemplateApi, FromModelDirNamedTemplatesAndFallbackFile) {
  Json named = {{"chat_template", Json::array({{{"name", "tool_use"}, {"template", "tools"}},
                                               {{"name", "default"}, {"template", "plain"}}})}};
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(WriteModelDir(named));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->Render(ChatTemplateInputs()), "plain");

  const std::string dir = WriteModelDir(Json{{"eos_token", "E"}});
  std::ofstream(dir + "/chat_template.jinja") << "from file {{ eos_token }}\n";
  t = ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->Render(ChatTemplateInputs()), "from file E");
}

TEST(ChatTemplateApi, FromModelDirErrorsNameTheProblem) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir("/nonexistent/model");
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "tokenizer_config.json"));

  t = ChatTemplate::FromModelDir(WriteModelDir(Json{{"eos_token", "E"}}));
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "no chat template")) << t.status();

  t = ChatTemplate::FromModelDir(
      WriteModelDir(Json{{"chat_template", Json::array({{{"name", "x"}, {"template", "y"}}})}}));
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "'default'")) << t.status();

  t = ChatTemplate::FromModelDir(WriteModelDir(Json{{"chat_template", "{% for %}"}}));
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(
      absl::StrContains(t.status().message(), "tokenizer_config.json: chat template line 1"))
      << t.status();
}

TEST(ChatTemplateApi, InputsAreValidated) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile("{{ x }}", Json());
  ASSERT_TRUE(t.ok());
  ChatTemplateInputs in;
  in.messages = Json::object();
  EXPECT_FALSE(t->Render(in).ok());
  in.messages = Json::array();
  in.extra = {{"messages", 1}};
  absl::StatusOr<std::string> out = t->Render(in);
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(absl::StrContains(out.status().message(), "'messages'"));
  in.extra = {{"x", "kw"}};
  EXPECT_EQ(*t->Render(in), "kw");
  EXPECT_FALSE(ChatTemplate::Compile("x", Json::array()).ok());
  EXPECT_FALSE(ChatTemplate::Compile("x", Json{{"bos_token", 5}}).ok());
}

TEST(ChatTemplateApi, KwargsOverrideSpecialTokens) {
  absl::StatusOr<ChatTemplate> t =
      ChatTemplate::Compile("{{ bos_token }}", Json{{"bos_token", "B"}});
  ASSERT_TRUE(t.ok());
  ChatTemplateInputs in;
  EXPECT_EQ(*t->Render(in), "B");
  in.extra = {{"bos_token", "override"}};
  EXPECT_EQ(*t->Render(in), "override");
}

TEST(ChatTemplateApi, ConcurrentRendersOfOneTemplate) {
  const std::string source =
      ReadText(testing::TestdataPath("templates/deepseek-ai-DeepSeek-V3.1.jinja"));
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile(
      source, Goldens()["templates"].value("deepseek-ai-DeepSeek-V3.1", Json::object()));
  ASSERT_TRUE(t.ok());
  const Json& conv = Conversations()[0];
  const std::string expected = *t->Render(InputsOf(conv));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 200; ++k) {
        absl::StatusOr<std::string> out = t->Render(InputsOf(conv));
        if (!out.ok() || *out != expected) ++mismatches[i];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(ChatTemplateCli, RendersPromptAsTextAndJson) {
  const std::string source =
      ReadText(testing::TestdataPath("templates/deepseek-ai-DeepSeek-V3.1.jinja"));
  Json config = {{"bos_token", {{"content", "<｜begin▁of▁sentence｜>"}}},
                 {"eos_token", "<｜end▁of▁sentence｜>"},
                 {"chat_template", source}};
  const std::string dir = WriteModelDir(config);
  std::ofstream(dir + "/messages.json")
      << R"([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])";
  std::string out;
  int code = testing::RunCommand(
      absl::StrCat(testing::DserveBinary(), " chat-template --model ", dir, " --messages ", dir,
                   "/messages.json --add-generation-prompt 2>&1"),
      &out);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "<｜begin▁of▁sentence｜>S<｜User｜>Hi<｜Assistant｜><think></think>");
  code = testing::RunCommand(
      absl::StrCat(testing::DserveBinary(), " chat-template --json --kwargs '{\"thinking\": true}'",
                   " --model ", dir, " --messages ", dir, "/messages.json --add-generation-prompt"),
      &out);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "\"<｜begin▁of▁sentence｜>S<｜User｜>Hi<｜Assistant｜><think>\"\n");
}

TEST(ChatTemplateCli, ReportsTemplateErrors) {
  Json config = {{"chat_template", "{{ raise_exception('no tools here') }}"}};
  const std::string dir = WriteModelDir(config);
  std::ofstream(dir + "/messages.json") << "[]";
  std::string out;
  const int code =
      testing::RunCommand(absl::StrCat(testing::DserveBinary(), " chat-template --model ", dir,
                                       " --messages ", dir, "/messages.json 2>&1"),
                          &out);
  EXPECT_EQ(code, 2);
  EXPECT_EQ(out, "dserve chat-template: no tools here\n");
}

}  // namespace
}  // namespace dserve::engine
