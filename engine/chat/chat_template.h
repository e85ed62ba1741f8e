// ChatTemplate: a checkpoint's own chat template (the jinja2 `chat_template` of its
// tokenizer_config.json), compiled once and rendered byte-identically to Hugging Face's
// apply_chat_template. Owns the public API of engine/chat/; the interpreter lives in the
// jinja-named files beside it.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/chat/ast.h"
#include "engine/chat/value.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {

struct ChatTemplateInputs {
  // role, content (a string or [{"type": "text", "text": ...}]), tool_calls, tool_call_id,
  // name, reasoning_content, ... passed to the template as given.
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  // null when absent (templates test `tools is not none` / `tools is defined`).
  nlohmann::ordered_json tools;
  bool add_generation_prompt = false;
  // chat_template_kwargs: extra top-level variables (e.g. {"thinking": true}).
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

class ChatTemplate {
 public:
  // Parses the template once; errors name the construct and line. special_tokens: an object of
  // name -> string or {"content": string} (or a list of those, as additional_special_tokens).
  static absl::StatusOr<ChatTemplate> Compile(const std::string& source,
                                              nlohmann::ordered_json special_tokens);
  // Reads tokenizer_config.json in model_dir: "chat_template" (a string, or a list of
  // {"name", "template"} of which "default" is used; chat_template.jinja when the config has
  // none), and every "*_token" entry (string or {"content": ...}) plus
  // additional_special_tokens.
  static absl::StatusOr<ChatTemplate> FromModelDir(const std::string& model_dir);

  // The prompt text, or the template's failure: raise_exception's own message
  // (InvalidArgument), a Python error the template ran into ("chat template line N:
  // TypeError: ..."), or Unimplemented naming a construct dserve does not support.
  absl::StatusOr<std::string> Render(const ChatTemplateInputs& inputs) const;

  // strftime_now uses this clock (local time); tests fix it so renders are reproducible.
  void SetClockForTesting(std::function<std::time_t()> now) { clock_ = std::move(now); }

 private:
  std::shared_ptr<const jinja::Template> template_;
  std::shared_ptr<const jinja::Dict> special_tokens_;
  std::function<std::time_t()> clock_;
};

}  // namespace dserve::engine
