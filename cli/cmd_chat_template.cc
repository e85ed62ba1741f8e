// dserve chat-template: renders a checkpoint's own chat template on a conversation, exactly as
// Hugging Face's apply_chat_template would, and prints the prompt text.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/model_session.h"
#include "core/check.h"
#include "engine/chat/chat_template.h"
#include "nlohmann/json.hpp"

namespace dserve::cli {
namespace {

using Json = nlohmann::ordered_json;

absl::StatusOr<Json> ReadJson(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  Json j = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " is not valid JSON"));
  }
  return j;
}

absl::Status Run(const Flags& flags) {
  DSERVE_ASSIGN_OR_RETURN(engine::ChatTemplate tmpl,
                          engine::ChatTemplate::FromModelDir(flags.Get("model")));
  engine::ChatTemplateInputs inputs;
  DSERVE_ASSIGN_OR_RETURN(Json messages, ReadJson(flags.Get("messages"), "messages"));
  if (messages.is_object() && messages.contains("messages")) {
    // An OpenAI-style request body: its tools and chat_template_kwargs come along.
    if (messages.contains("tools")) inputs.tools = messages["tools"];
    if (messages.contains("chat_template_kwargs")) {
      inputs.extra = messages["chat_template_kwargs"];
    }
    inputs.messages = messages["messages"];
  } else {
    inputs.messages = std::move(messages);
  }
  if (!inputs.messages.is_array()) {
    return absl::InvalidArgumentError(
        "--messages: expected a JSON array of messages or an object with \"messages\"");
  }
  if (flags.Has("tools")) {
    DSERVE_ASSIGN_OR_RETURN(inputs.tools, ReadJson(flags.Get("tools"), "tools"));
  }
  if (flags.Has("kwargs")) {
    inputs.extra = Json::parse(flags.Get("kwargs"), nullptr, /*allow_exceptions=*/false);
    if (inputs.extra.is_discarded() || !inputs.extra.is_object()) {
      return absl::InvalidArgumentError(
          "--kwargs: expected a JSON object, e.g. '{\"thinking\": true}'");
    }
  }
  inputs.add_generation_prompt = flags.GetBool("add-generation-prompt");
  DSERVE_ASSIGN_OR_RETURN(std::string prompt, tmpl.Render(inputs));
  if (flags.GetBool("json")) {
    const std::string quoted = Json(prompt).dump(-1, ' ', false, Json::error_handler_t::replace);
    std::printf("%s\n", quoted.c_str());
  } else {
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  }
  return absl::OkStatus();
}

}  // namespace

int RunChatTemplate(const Args& args) {
  const std::vector<FlagSpec> specs = {
      {"model", "checkpoint folder with tokenizer_config.json", "", false, true},
      {"messages", "JSON file: a list of messages, or a request body with \"messages\"", "", false,
       true},
      {"tools", "JSON file: the list of tool schemas", ""},
      {"kwargs", "chat_template_kwargs as a JSON object, e.g. '{\"thinking\": true}'", ""},
      {"add-generation-prompt", "end with the assistant's turn header", "", true},
      {"json", "print the prompt as one JSON string (trailing newlines stay visible)", "", true},
  };
  Flags flags;
  int code;
  if (!ParseOrExit("chat-template",
                   "Render a checkpoint's chat template on a conversation (as Hugging Face "
                   "would).",
                   specs, args, &flags, &code)) {
    return code;
  }
  const absl::Status status = Run(flags);
  if (!status.ok()) return ReportError("chat-template", status);
  return 0;
}

}  // namespace dserve::cli
