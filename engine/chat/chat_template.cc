#include "engine/chat/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/interpreter.h"
#include "engine/chat/parser.h"
#include "engine/chat/value_json.h"

namespace dserve::engine {
namespace {

namespace fs = std::filesystem;
using jinja::Value;

// A special token as tokenizer_config.json writes it: "text" or an AddedToken {"content": ...}.
std::optional<std::string> TokenText(const nlohmann::ordered_json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return std::nullopt;
}

absl::StatusOr<Value> SpecialTokenValue(const std::string& name, const nlohmann::ordered_json& j) {
  if (std::optional<std::string> text = TokenText(j)) return jinja::FromJson(*text);
  if (j.is_array()) {
    std::vector<Value> items;
    for (const auto& item : j) {
      std::optional<std::string> text = TokenText(item);
      if (!text) break;
      DSERVE_ASSIGN_OR_RETURN(Value v, jinja::FromJson(*text));
      items.push_back(std::move(v));
    }
    if (items.size() == j.size()) return Value::List(std::move(items));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "special token '", name, "' must be a string, {\"content\": string} or a list of those"));
}

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The template source of a tokenizer_config.json's "chat_template" value.
absl::StatusOr<std::string> TemplateSource(const nlohmann::ordered_json& value,
                                           const std::string& where) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    for (const auto& entry : value) {
      if (entry.is_object() && entry.contains("name") && entry["name"] == "default" &&
          entry.contains("template") && entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"chat_template\" is a list without a template named 'default'"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": \"chat_template\" must be a string or a list of {name, template}"));
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Compile(const std::string& source,
                                                   nlohmann::ordered_json special_tokens) {
  if (!special_tokens.is_null() && !special_tokens.is_object()) {
    return absl::InvalidArgumentError("special tokens must be a JSON object of name -> token");
  }
  auto tokens = std::make_shared<jinja::Dict>();
  if (special_tokens.is_object()) {
    for (const auto& [name, value] : special_tokens.items()) {
      if (value.is_null()) continue;  // Hugging Face leaves unset tokens out
      DSERVE_ASSIGN_OR_RETURN(Value v, SpecialTokenValue(name, value));
      tokens->Set(name, std::move(v));
    }
  }
  DSERVE_ASSIGN_OR_RETURN(jinja::Template parsed, jinja::ParseTemplate(source));
  ChatTemplate t;
  t.template_ = std::make_shared<const jinja::Template>(std::move(parsed));
  t.special_tokens_ = std::move(tokens);
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDir(const std::string& model_dir) {
  const fs::path dir(model_dir);
  const fs::path config_path = dir / "tokenizer_config.json";
  DSERVE_ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  const auto config = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path.string(), " is not a JSON object"));
  }
  std::string source;
  if (config.contains("chat_template") && !config["chat_template"].is_null()) {
    DSERVE_ASSIGN_OR_RETURN(source, TemplateSource(config["chat_template"], config_path.string()));
  } else if (fs::exists(dir / "chat_template.jinja")) {
    // Newer transformers save the template beside the config instead of inside it.
    DSERVE_ASSIGN_OR_RETURN(source, ReadFile(dir / "chat_template.jinja"));
  } else {
    return absl::NotFoundError(
        absl::StrCat(config_path.string(), " has no \"chat_template\" and ", model_dir,
                     " has no chat_template.jinja: this checkpoint ships no chat template"));
  }
  nlohmann::ordered_json tokens = nlohmann::ordered_json::object();
  for (const auto& [name, value] : config.items()) {
    const bool token_key = absl::EndsWith(name, "_token") || name == "additional_special_tokens";
    if (!token_key || value.is_null()) continue;
    // Flags such as add_bos_token end in _token too; only token texts become variables.
    if (TokenText(value) || (value.is_array() && name == "additional_special_tokens")) {
      tokens[name] = value;
    }
  }
  absl::StatusOr<ChatTemplate> t = Compile(source, std::move(tokens));
  if (!t.ok()) {
    return absl::Status(t.status().code(),
                        absl::StrCat(config_path.string(), ": ", t.status().message()));
  }
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatTemplateInputs& inputs) const {
  if (template_ == nullptr) return absl::FailedPreconditionError("chat template was not compiled");
  if (!inputs.messages.is_array()) {
    return absl::InvalidArgumentError("chat template input: messages must be a JSON array");
  }
  if (!inputs.extra.is_null() && !inputs.extra.is_object()) {
    return absl::InvalidArgumentError(
        "chat template input: chat_template_kwargs must be a JSON object");
  }
  // The variables apply_chat_template passes: special tokens, then messages, tools, documents
  // and add_generation_prompt, with chat_template_kwargs overriding the special tokens.
  jinja::Dict variables = *special_tokens_;
  DSERVE_ASSIGN_OR_RETURN(Value messages, jinja::FromJson(inputs.messages));
  DSERVE_ASSIGN_OR_RETURN(Value tools, jinja::FromJson(inputs.tools));
  variables.Set("messages", std::move(messages));
  variables.Set("tools", std::move(tools));
  variables.Set("documents", Value::None());
  variables.Set("add_generation_prompt", Value::Bool(inputs.add_generation_prompt));
  if (inputs.extra.is_object()) {
    for (const auto& [name, value] : inputs.extra.items()) {
      if (name == "messages" || name == "tools" || name == "documents" ||
          name == "add_generation_prompt") {
        return absl::InvalidArgumentError(absl::StrCat("chat_template_kwargs may not set '", name,
                                                       "': it is a chat template input"));
      }
      DSERVE_ASSIGN_OR_RETURN(Value v, jinja::FromJson(value));
      variables.Set(name, std::move(v));
    }
  }
  return jinja::RenderTemplate(*template_, variables, clock_);
}

}  // namespace dserve::engine
