#include "server/openai_format.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace dserve::server {
namespace {

using json = nlohmann::json;

// JSON has no -inf: a token the model gave no probability reports the lowest float, as
// OpenAI-compatible servers do.
double JsonLogprob(float lp) {
  return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0;
}

json BytesJson(const std::string& bytes) {
  json out = json::array();
  for (unsigned char b : bytes) out.push_back(static_cast<int>(b));
  return out;
}

json ChatLogprobEntry(const TokenLogprob& lp) {
  json top = json::array();
  for (const TopLogprob& t : lp.top) {
    top.push_back({{"token", t.token}, {"logprob", JsonLogprob(t.logprob)},
                   {"bytes", BytesJson(t.bytes)}});
  }
  return {{"token", lp.token}, {"logprob", JsonLogprob(lp.logprob)},
          {"bytes", BytesJson(lp.bytes)}, {"top_logprobs", std::move(top)}};
}

json ChatLogprobs(const std::vector<TokenLogprob>& lps) {
  json content = json::array();
  for (const TokenLogprob& lp : lps) content.push_back(ChatLogprobEntry(lp));
  return {{"content", std::move(content)}};
}

// Characters (code points) of UTF-8 text: what OpenAI's text_offset counts.
int64_t CodePoints(std::string_view text) {
  int64_t n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// Completions' logprobs object; offsets[i] is where token i's text starts in the choice text.
json CompletionLogprobs(const std::vector<TokenLogprob>& lps, const std::vector<int64_t>& offsets) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array();
  for (const TokenLogprob& lp : lps) {
    tokens.push_back(lp.token);
    token_logprobs.push_back(JsonLogprob(lp.logprob));
    json alternatives = json::object();
    for (const TopLogprob& t : lp.top) alternatives[t.token] = JsonLogprob(t.logprob);
    top.push_back(std::move(alternatives));
  }
  return {{"tokens", std::move(tokens)}, {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top)}, {"text_offset", offsets}};
}

json ToolCallDeltaJson(const ToolCallParser::Delta::CallDelta& c) {
  json fn = {{"arguments", c.arguments}};
  json out = {{"index", c.index}};
  if (!c.id.empty()) {
    fn["name"] = c.name;
    out["id"] = c.id;
    out["type"] = "function";
  }
  out["function"] = std::move(fn);
  return out;
}

json Base(const ResponseHeader& h, const char* object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model},
          {"system_fingerprint", nullptr}};
}

json FinishJson(const std::optional<std::string>& reason) {
  return reason ? json(*reason) : json(nullptr);
}

}  // namespace

std::vector<int64_t> TokenOffsets(const ChoiceDelta& d, int64_t* chars) {
  // The delta's text ends with its tokens' text (an echoed prompt may come first).
  int64_t token_chars = 0;
  for (const TokenLogprob& lp : d.logprobs) token_chars += CodePoints(lp.token);
  int64_t at = *chars + std::max<int64_t>(0, CodePoints(d.content) - token_chars);
  std::vector<int64_t> offsets;
  for (const TokenLogprob& lp : d.logprobs) {
    offsets.push_back(at);
    at += CodePoints(lp.token);
  }
  *chars += CodePoints(d.content);
  return offsets;
}

json UsageJson(const engine::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_prompt_tokens}}}};
}

json ChatRoleChunk(const ResponseHeader& h, int index, bool include_usage) {
  json chunk = Base(h, "chat.completion.chunk");
  chunk["choices"] = json::array({{{"index", index},
                                   {"delta", {{"role", "assistant"}, {"content", ""}}},
                                   {"logprobs", nullptr},
                                   {"finish_reason", nullptr}}});
  if (include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json DeltaChunk(const ResponseHeader& h, const ChoiceDelta& d, bool include_usage,
                int64_t* text_offset) {
  json chunk = Base(h, h.chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", d.index}};
  if (h.chat) {
    json delta = json::object();
    if (!d.content.empty()) delta["content"] = d.content;
    if (!d.reasoning.empty()) {
      delta["reasoning_content"] = d.reasoning;
      delta["reasoning"] = d.reasoning;
    }
    if (!d.tool_calls.empty()) {
      json calls = json::array();
      for (const auto& c : d.tool_calls) calls.push_back(ToolCallDeltaJson(c));
      delta["tool_calls"] = std::move(calls);
    }
    choice["delta"] = std::move(delta);
    choice["logprobs"] = d.logprobs.empty() ? json(nullptr) : ChatLogprobs(d.logprobs);
  } else {
    choice["text"] = d.content;
    const std::vector<int64_t> offsets = TokenOffsets(d, text_offset);
    choice["logprobs"] =
        d.logprobs.empty() ? json(nullptr) : CompletionLogprobs(d.logprobs, offsets);
  }
  choice["finish_reason"] = FinishJson(d.finish_reason);
  chunk["choices"] = json::array({std::move(choice)});
  if (include_usage) chunk["usage"] = nullptr;
  return chunk;
}

namespace {

// s as a JSON string literal, escaped as nlohmann's dump() escapes it (invalid UTF-8 never
// reaches here: the detokenizer emits whole characters).
void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

}  // namespace

std::optional<std::string> FastDeltaChunk(const ResponseHeader& h, const ChoiceDelta& d,
                                          bool include_usage) {
  if (!d.logprobs.empty() || !d.tool_calls.empty()) return std::nullopt;
  if (!IsValidUtf8(d.content) || !IsValidUtf8(d.reasoning)) return std::nullopt;  // dump() repairs
  // Keys in nlohmann's (sorted) order, so the bytes match DeltaChunk(...).dump().
  std::string out = "{\"choices\":[{";
  if (h.chat) {
    out += "\"delta\":{";
    bool first = true;
    if (!d.content.empty()) {
      out += "\"content\":";
      AppendJsonString(out, d.content);
      first = false;
    }
    if (!d.reasoning.empty()) {
      if (!first) out += ',';
      out += "\"reasoning\":";
      AppendJsonString(out, d.reasoning);
      out += ",\"reasoning_content\":";
      AppendJsonString(out, d.reasoning);
    }
    out += "},";
  }
  out += "\"finish_reason\":";
  if (d.finish_reason) {
    AppendJsonString(out, *d.finish_reason);
  } else {
    out += "null";
  }
  absl::StrAppend(&out, ",\"index\":", d.index, ",\"logprobs\":null");
  if (!h.chat) {
    out += ",\"text\":";
    AppendJsonString(out, d.content);
  }
  absl::StrAppend(&out, "}],\"created\":", h.created, ",\"id\":");
  AppendJsonString(out, h.id);
  out += ",\"model\":";
  AppendJsonString(out, h.model);
  out += h.chat ? ",\"object\":\"chat.completion.chunk\"" : ",\"object\":\"text_completion\"";
  out += ",\"system_fingerprint\":null";
  if (include_usage) out += ",\"usage\":null";
  out += '}';
  return out;
}

json UsageChunk(const ResponseHeader& h, const engine::Usage& usage) {
  json chunk = Base(h, h.chat ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = json::array();
  chunk["usage"] = UsageJson(usage);
  return chunk;
}

ResponseBuilder::ResponseBuilder(ResponseHeader header, int num_choices, bool want_logprobs)
    : header_(std::move(header)), want_logprobs_(want_logprobs), choices_(num_choices) {}

void ResponseBuilder::Add(const ChoiceDelta& d) {
  if (d.index < 0 || d.index >= static_cast<int>(choices_.size())) return;
  Choice& c = choices_[d.index];
  c.content += d.content;
  c.reasoning += d.reasoning;
  for (const auto& call : d.tool_calls) {
    if (!call.id.empty() || call.index >= static_cast<int>(c.tool_calls.size())) {
      c.tool_calls.resize(std::max<size_t>(c.tool_calls.size(), call.index + 1));
      if (!call.id.empty()) {
        c.tool_calls[call.index].id = call.id;
        c.tool_calls[call.index].name = call.name;
      }
    }
    c.tool_calls[call.index].arguments += call.arguments;
  }
  c.logprobs.insert(c.logprobs.end(), d.logprobs.begin(), d.logprobs.end());
  const std::vector<int64_t> offsets = TokenOffsets(d, &c.chars);
  c.offsets.insert(c.offsets.end(), offsets.begin(), offsets.end());
  if (d.finish_reason) c.finish_reason = *d.finish_reason;
}

json ResponseBuilder::Build(const engine::Usage& usage) const {
  json out = Base(header_, header_.chat ? "chat.completion" : "text_completion");
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    json choice = {{"index", static_cast<int>(i)}};
    if (header_.chat) {
      json message = {{"role", "assistant"}};
      message["content"] =
          c.content.empty() && !c.tool_calls.empty() ? json(nullptr) : json(c.content);
      if (!c.reasoning.empty()) {
        message["reasoning_content"] = c.reasoning;
        message["reasoning"] = c.reasoning;
      }
      if (!c.tool_calls.empty()) {
        json calls = json::array();
        for (const ToolCall& t : c.tool_calls) {
          calls.push_back({{"id", t.id},
                           {"type", "function"},
                           {"function", {{"name", t.name}, {"arguments", t.arguments}}}});
        }
        message["tool_calls"] = std::move(calls);
      }
      choice["message"] = std::move(message);
      choice["logprobs"] = want_logprobs_ ? ChatLogprobs(c.logprobs) : json(nullptr);
    } else {
      choice["text"] = c.content;
      choice["logprobs"] = want_logprobs_ ? CompletionLogprobs(c.logprobs, c.offsets) : json(nullptr);
    }
    choice["finish_reason"] = c.finish_reason.empty() ? json(nullptr) : json(c.finish_reason);
    choices.push_back(std::move(choice));
  }
  out["choices"] = std::move(choices);
  out["usage"] = UsageJson(usage);
  return out;
}

}  // namespace dserve::server
