#include "server/openai_parse.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace dserve::server {
namespace {

using Json = nlohmann::ordered_json;

constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr size_t kMaxStops = 16;
constexpr int kMaxTopLogprobs = 20;

// OpenAI-style type names; integers and floats are told apart because "must be an integer,
// got number" is the useful hint.
const char* TypeName(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    case Json::value_t::string:
      return "string";
    case Json::value_t::array:
      return "array";
    case Json::value_t::object:
      return "object";
    default:
      return "value";
  }
}

// Client strings echoed in messages are cut short (at a UTF-8 boundary, so the error body
// still serialises) so a huge field cannot bloat the error body.
std::string Quoted(const std::string& s) {
  constexpr size_t kMax = 64;
  if (s.size() <= kMax) return absl::StrCat("'", s, "'");
  size_t end = kMax;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat("'", s.substr(0, end), "...'");
}

// nlohmann's messages quote the last bytes read, which may be the invalid UTF-8 it rejected;
// escape them so the error JSON can be serialised, and drop the "[json.exception...]" tag.
std::string SanitizeParserMessage(std::string_view what) {
  const size_t tag_end = what.find("] ");
  if (!what.empty() && what[0] == '[' && tag_end != std::string_view::npos) {
    what.remove_prefix(tag_end + 2);
  }
  std::string out;
  for (char ch : what.substr(0, 300)) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte < 0x20 || byte >= 0x7F) {
      constexpr char kHex[] = "0123456789ABCDEF";
      out += {'\\', 'x', kHex[byte >> 4], kHex[byte & 15]};
    } else {
      out += ch;
    }
  }
  return out;
}

std::string IndexPath(const std::string& path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

// Remembers the first problem only: later ones are usually consequences of it, and one
// precise message beats a cascade. Every Read* is a no-op once something failed.
class Checker {
 public:
  bool failed() const { return error_.has_value(); }
  const ApiError& error() const { return *error_; }

  bool Fail(const std::string& path, std::string message) {
    if (!failed()) error_ = ApiError::BadRequest(std::move(message), path);
    return false;
  }
  bool TypeError(const Json& v, const std::string& path, const char* expected) {
    return Fail(path, absl::StrCat("'", path, "' must be ", expected, ", got ", TypeName(v)));
  }

  bool ReadBool(const Json& v, const std::string& path, bool* out) {
    if (failed()) return false;
    if (!v.is_boolean()) return TypeError(v, path, "a boolean");
    *out = v.get<bool>();
    return true;
  }

  bool ReadString(const Json& v, const std::string& path, std::string* out) {
    if (failed()) return false;
    if (!v.is_string()) return TypeError(v, path, "a string");
    *out = v.get<std::string>();
    return true;
  }

  bool ReadObject(const Json& v, const std::string& path, Json* out) {
    if (failed()) return false;
    if (!v.is_object()) return TypeError(v, path, "an object");
    *out = v;
    return true;
  }

  // Finite and representable as float (1e300 would silently become inf).
  bool ReadFloat(const Json& v, const std::string& path, float* out) {
    if (failed()) return false;
    if (!v.is_number()) return TypeError(v, path, "a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > FLT_MAX) {
      return Fail(path, absl::StrCat("'", path, "' is out of range"));
    }
    *out = static_cast<float>(d);
    return true;
  }

  // JSON has one number type and pydantic-based servers accept 2.0 for an int, so an integral
  // float is taken; 1.5 is not, and neither is anything beyond int64.
  bool ReadInt64(const Json& v, const std::string& path, int64_t* out) {
    if (failed()) return false;
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return OutOfRange(path);
      *out = static_cast<int64_t>(u);
    } else if (v.is_number_integer()) {
      *out = v.get<int64_t>();
    } else if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && std::trunc(d) != d) {
        return Fail(path, absl::StrCat("'", path, "' must be an integer, got ", d));
      }
      if (!(d >= -0x1p63 && d < 0x1p63)) return OutOfRange(path);
      *out = static_cast<int64_t>(d);
    } else {
      return TypeError(v, path, "an integer");
    }
    return true;
  }

  // An int32 field with the API's own bound [lo, hi] (the engine's Validate checks the rest).
  bool ReadInt(const Json& v, const std::string& path, int64_t lo, int64_t hi, int* out) {
    int64_t x = 0;
    if (!ReadInt64(v, path, &x)) return false;
    if (x < kInt32Min || x > kInt32Max) return OutOfRange(path);
    if (x < lo || x > hi) {
      return Fail(path, hi == kInt32Max ? absl::StrCat("'", path, "' must be >= ", lo, ", got ", x)
                                        : absl::StrCat("'", path, "' must be in [", lo, ", ", hi,
                                                       "], got ", x));
    }
    *out = static_cast<int>(x);
    return true;
  }

  // Seeds are any 64-bit integer; negative ones (numpy habits) wrap to uint64.
  bool ReadSeed(const Json& v, const std::string& path, uint64_t* out) {
    if (failed()) return false;
    if (v.is_number_unsigned()) {
      *out = v.get<uint64_t>();
      return true;
    }
    int64_t x = 0;
    if (!ReadInt64(v, path, &x)) return false;
    *out = static_cast<uint64_t>(x);
    return true;
  }

 private:
  bool OutOfRange(const std::string& path) {
    return Fail(path, absl::StrCat("'", path, "' is out of range"));
  }

  std::optional<ApiError> error_;
};

// The keys of one JSON object, read with their full path ("messages[2].content") for errors.
// A JSON null reads as "not given".
class Fields {
 public:
  Fields(const Json& object, std::string prefix, Checker* checker)
      : object_(object), prefix_(std::move(prefix)), c_(checker) {}

  std::string Path(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : absl::StrCat(prefix_, ".", std::string(key));
  }
  const Json* Get(std::string_view key) const {
    if (c_->failed()) return nullptr;
    const auto it = object_.find(std::string(key));
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  const Json* Require(std::string_view key) const {
    const Json* v = Get(key);
    if (v == nullptr) c_->Fail(Path(key), absl::StrCat("'", Path(key), "' is required"));
    return v;
  }

  // Each leaves *out untouched and returns false when the key is absent or null.
  bool Bool(std::string_view key, bool* out) const {
    const Json* v = Get(key);
    return v != nullptr && c_->ReadBool(*v, Path(key), out);
  }
  bool String(std::string_view key, std::string* out) const {
    const Json* v = Get(key);
    return v != nullptr && c_->ReadString(*v, Path(key), out);
  }
  bool Object(std::string_view key, Json* out) const {
    const Json* v = Get(key);
    return v != nullptr && c_->ReadObject(*v, Path(key), out);
  }
  bool Float(std::string_view key, float* out) const {
    const Json* v = Get(key);
    return v != nullptr && c_->ReadFloat(*v, Path(key), out);
  }
  bool Int(std::string_view key, int64_t lo, int64_t hi, int* out) const {
    const Json* v = Get(key);
    return v != nullptr && c_->ReadInt(*v, Path(key), lo, hi, out);
  }
  bool Int(std::string_view key, int* out) const { return Int(key, kInt32Min, kInt32Max, out); }

 private:
  const Json& object_;
  std::string prefix_;
  Checker* c_;
};

// The 400 for a JSON text over the kMaxJson* limits; `where` reads "the body" or "'field'".
std::optional<ApiError> ShapeError(std::string_view text, const std::string& where,
                                   std::string param) {
  const JsonShape shape = ScanJsonShape(text, kMaxJsonDepth);
  if (shape.depth > kMaxJsonDepth) {
    return ApiError::BadRequest(
        absl::StrCat("JSON in ", where, " is nested deeper than ", kMaxJsonDepth, " levels"),
        std::move(param));
  }
  if (shape.max_object_members > kMaxJsonObjectMembers) {
    return ApiError::BadRequest(absl::StrCat("a JSON object in ", where, " has more than ",
                                             kMaxJsonObjectMembers, " members"),
                                std::move(param));
  }
  if (shape.member_pairs > kMaxJsonMemberPairs) {
    return ApiError::BadRequest(
        absl::StrCat("the JSON objects in ", where,
                     " have too many members in all: parsing them would take more than ",
                     kMaxJsonMemberPairs, " key comparisons (m*(m-1)/2 for an object of m)"),
        std::move(param));
  }
  return std::nullopt;
}

// Size, nesting and object sizes are bounded before nlohmann sees the body; everything it
// rejects (syntax, invalid UTF-8, numbers beyond double like 1e999) becomes one "invalid JSON
// body" 400.
std::optional<ApiError> ParseBody(std::string_view body, Json* out) {
  if (std::optional<ApiError> error = ShapeError(body, "the body", "")) return error;
  try {
    *out = Json::parse(body.begin(), body.end());
  } catch (const Json::exception& e) {
    return ApiError::BadRequest(
        absl::StrCat("invalid JSON body: ", SanitizeParserMessage(e.what())));
  }
  if (!out->is_object()) {
    return ApiError::BadRequest(
        absl::StrCat("request body must be a JSON object, got ", TypeName(*out)));
  }
  return std::nullopt;
}

// A content part list is flattened to text because the chat template and the model are
// text-only; anything else is refused rather than silently dropped.
bool FlattenContent(const Json& content, const std::string& path, Checker* c, std::string* out) {
  if (content.is_string()) {
    *out = content.get<std::string>();
    return true;
  }
  if (!content.is_array()) {
    return c->TypeError(content, path, "a string, an array of content parts or null");
  }
  std::string joined;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string part_path = IndexPath(path, i);
    const Json& part = content[i];
    if (!part.is_object()) return c->TypeError(part, part_path, "an object");
    const Fields fields(part, part_path, c);
    std::string type;
    if (fields.Require("type") == nullptr || !fields.String("type", &type)) return false;
    if (type != "text") {
      return c->Fail(fields.Path("type"), absl::StrCat("content part type ", Quoted(type),
                                                       " is not supported (text-only model)"));
    }
    std::string text;
    if (fields.Require("text") == nullptr || !fields.String("text", &text)) return false;
    if (i > 0) joined += "\n";
    joined += text;
  }
  *out = std::move(joined);
  return true;
}

bool ValidateToolCalls(const Json& calls, const std::string& path, Checker* c) {
  if (!calls.is_array()) return c->TypeError(calls, path, "an array");
  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string call_path = IndexPath(path, i);
    if (!calls[i].is_object()) return c->TypeError(calls[i], call_path, "an object");
    const Fields call(calls[i], call_path, c);
    std::string ignored;
    call.String("id", &ignored);
    if (call.String("type", &ignored) && ignored != "function") {
      return c->Fail(
          call.Path("type"),
          absl::StrCat("'", call.Path("type"), "' must be 'function', got ", Quoted(ignored)));
    }
    const Json* function = call.Require("function");
    if (function == nullptr) return false;
    if (!function->is_object()) return c->TypeError(*function, call.Path("function"), "an object");
    const Fields fn(*function, call.Path("function"), c);
    if (fn.Require("name") == nullptr || !fn.String("name", &ignored)) return false;
    if (fn.Require("arguments") == nullptr || !fn.String("arguments", &ignored)) return false;
  }
  return !c->failed();
}

// Rebuilds one message in the shape the chat template reads: role, content (a string, or null
// for an assistant turn that only calls tools), then the optional keys that were given.
Json ParseMessage(const Json& message, const std::string& path, Checker* c) {
  if (!message.is_object()) {
    c->TypeError(message, path, "an object");
    return nullptr;
  }
  const Fields fields(message, path, c);
  std::string role;
  if (fields.Require("role") == nullptr || !fields.String("role", &role)) return nullptr;
  if (role == "developer") {
    role = "system";  // OpenAI's newer name for it; chat templates only know "system"
  } else if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
    c->Fail(fields.Path("role"),
            absl::StrCat("'", fields.Path("role"),
                         "' must be one of system, developer, user, assistant, tool, got ",
                         Quoted(role)));
    return nullptr;
  }
  Json out = Json::object();
  out["role"] = role;
  const Json* tool_calls = role == "assistant" ? fields.Get("tool_calls") : nullptr;
  if (tool_calls != nullptr && !ValidateToolCalls(*tool_calls, fields.Path("tool_calls"), c)) {
    return nullptr;
  }
  if (const Json* content = fields.Get("content")) {
    std::string text;
    if (!FlattenContent(*content, fields.Path("content"), c, &text)) return nullptr;
    out["content"] = std::move(text);
  } else if (tool_calls != nullptr && !tool_calls->empty()) {
    out["content"] = nullptr;
  } else {
    c->Fail(fields.Path("content"),
            absl::StrCat("'", fields.Path("content"),
                         "' is required (it may be null only for an assistant message with "
                         "tool_calls)"));
    return nullptr;
  }
  std::string value;
  if (fields.String("name", &value)) out["name"] = value;
  if (tool_calls != nullptr) out["tool_calls"] = *tool_calls;
  if (role == "tool" && fields.String("tool_call_id", &value)) out["tool_call_id"] = value;
  if (fields.String("reasoning_content", &value)) out["reasoning_content"] = value;
  if (c->failed()) return nullptr;
  return out;
}

bool ReadMessages(const Json& messages, Checker* c, Json* out) {
  if (!messages.is_array()) return c->TypeError(messages, "messages", "an array");
  if (messages.empty()) return c->Fail("messages", "'messages' must be a non-empty array");
  *out = Json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    Json message = ParseMessage(messages[i], IndexPath("messages", i), c);
    if (c->failed()) return false;
    out->push_back(std::move(message));
  }
  return true;
}

void ValidateTools(const Json& tools, Checker* c) {
  if (!tools.is_array()) {
    c->TypeError(tools, "tools", "an array");
    return;
  }
  for (size_t i = 0; i < tools.size() && !c->failed(); ++i) {
    const std::string tool_path = IndexPath("tools", i);
    if (!tools[i].is_object()) {
      c->TypeError(tools[i], tool_path, "an object");
      break;
    }
    const Fields tool(tools[i], tool_path, c);
    std::string type;
    if (tool.Require("type") == nullptr || !tool.String("type", &type)) break;
    if (type != "function") {
      c->Fail(tool.Path("type"),
              absl::StrCat("'", tool.Path("type"), "' must be 'function', got ", Quoted(type)));
      break;
    }
    const Json* function = tool.Require("function");
    if (function == nullptr) break;
    if (!function->is_object()) {
      c->TypeError(*function, tool.Path("function"), "an object");
      break;
    }
    const Fields fn(*function, tool.Path("function"), c);
    std::string name;
    if (fn.Require("name") == nullptr || !fn.String("name", &name)) break;
    if (name.empty()) {
      c->Fail(fn.Path("name"), absl::StrCat("'", fn.Path("name"), "' must be non-empty"));
      break;
    }
    std::string description;
    fn.String("description", &description);
    Json parameters;
    fn.Object("parameters", &parameters);
  }
}

// Only "auto" and "none" are honoured. "required" and a named function would need constrained
// decoding to force the tool call; accepting them would promise what the model may not do, so
// they are refused (a named one after its shape is checked, so a malformed one hears why).
void ValidateToolChoice(const Json& choice, Checker* c) {
  constexpr char kCannotForce[] =
      " is not supported: dserve cannot force a tool call (no constrained decoding); use \"auto\"";
  if (choice.is_string()) {
    const std::string mode = choice.get<std::string>();
    if (mode == "required") {
      c->Fail("tool_choice", absl::StrCat("tool_choice 'required'", kCannotForce));
    } else if (mode != "none" && mode != "auto") {
      c->Fail("tool_choice", absl::StrCat("'tool_choice' must be 'none', 'auto', 'required' or "
                                          "a function object, got ",
                                          Quoted(mode)));
    }
    return;
  }
  if (!choice.is_object()) {
    c->TypeError(choice, "tool_choice", "a string or an object");
    return;
  }
  const Fields fields(choice, "tool_choice", c);
  std::string type;
  if (fields.Require("type") == nullptr || !fields.String("type", &type)) return;
  if (type != "function") {
    c->Fail("tool_choice.type",
            absl::StrCat("'tool_choice.type' must be 'function', got ", Quoted(type)));
    return;
  }
  const Json* function = fields.Require("function");
  if (function == nullptr) return;
  if (!function->is_object()) {
    c->TypeError(*function, "tool_choice.function", "an object");
    return;
  }
  const Fields fn(*function, "tool_choice.function", c);
  std::string name;
  if (fn.Require("name") == nullptr || !fn.String("name", &name)) return;
  c->Fail("tool_choice", absl::StrCat("tool_choice naming a function", kCannotForce));
}

void ReadStops(const Fields& fields, Checker* c, std::vector<std::string>* out) {
  const Json* stop = fields.Get("stop");
  if (stop == nullptr) return;
  if (stop->is_string()) {
    if (stop->get_ref<const std::string&>().empty()) {
      c->Fail("stop", "'stop' must be a non-empty string");
      return;
    }
    out->push_back(stop->get<std::string>());
    return;
  }
  if (!stop->is_array()) {
    c->TypeError(*stop, "stop", "a string or an array of strings");
    return;
  }
  if (stop->size() > kMaxStops) {
    c->Fail("stop",
            absl::StrCat("'stop' may hold at most ", kMaxStops, " strings, got ", stop->size()));
    return;
  }
  for (size_t i = 0; i < stop->size(); ++i) {
    std::string s;
    if (!c->ReadString((*stop)[i], IndexPath("stop", i), &s)) return;
    if (s.empty()) {
      c->Fail(IndexPath("stop", i), absl::StrCat("'", IndexPath("stop", i), "' must be non-empty"));
      return;
    }
    out->push_back(std::move(s));
  }
}

// Token ids are int32 in the engine; negative ones are never valid.
bool ReadTokenIds(const Json& ids, const std::string& path, Checker* c, std::vector<int32_t>* out) {
  if (!ids.is_array()) return c->TypeError(ids, path, "an array of token ids");
  out->reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    int id = 0;
    if (!c->ReadInt(ids[i], IndexPath(path, i), 0, kInt32Max, &id)) return false;
    out->push_back(id);
  }
  return true;
}

// The fields chat and completions share: sampling knobs, streaming, and the features we refuse
// explicitly rather than ignore (a client relying on them would get silently wrong output).
void ReadCommon(const Fields& fields, Checker* c, GenerationSpec* spec) {
  engine::SamplingParams& p = spec->params;
  fields.String("model", &spec->model);
  int max_tokens = 0;
  if (fields.Int("max_tokens", 1, kInt32Max, &max_tokens)) spec->max_tokens_set = true;
  if (spec->chat && fields.Int("max_completion_tokens", 1, kInt32Max, &max_tokens)) {
    spec->max_tokens_set = true;  // the newer name wins when both are given
  }
  if (spec->max_tokens_set) p.max_tokens = max_tokens;
  fields.Float("temperature", &p.temperature);
  fields.Float("top_p", &p.top_p);
  fields.Float("min_p", &p.min_p);
  fields.Float("presence_penalty", &p.presence_penalty);
  fields.Float("frequency_penalty", &p.frequency_penalty);
  fields.Float("repetition_penalty", &p.repetition_penalty);
  fields.Int("top_k", &p.top_k);
  fields.Int("n", &p.n);
  if (const Json* seed = fields.Get("seed")) {
    uint64_t value = 0;
    if (c->ReadSeed(*seed, "seed", &value)) p.seed = value;
  }
  ReadStops(fields, c, &p.stop);
  if (const Json* ids = fields.Get("stop_token_ids")) {
    if (!ids->is_array()) {
      c->TypeError(*ids, "stop_token_ids", "an array of integers");
    } else {
      for (size_t i = 0; i < ids->size(); ++i) {
        int id = 0;
        if (!c->ReadInt((*ids)[i], IndexPath("stop_token_ids", i), kInt32Min, kInt32Max, &id))
          break;
        p.stop_token_ids.push_back(id);
      }
    }
  }
  fields.Int("min_tokens", 0, kInt32Max, &p.min_tokens);
  fields.Bool("ignore_eos", &p.ignore_eos);
  fields.Bool("skip_special_tokens", &p.skip_special_tokens);
  fields.Bool("stream", &spec->stream);
  if (const Json* options = fields.Get("stream_options")) {
    if (!options->is_object()) {
      c->TypeError(*options, "stream_options", "an object");
    } else if (!spec->stream) {
      c->Fail("stream_options", "stream_options is only allowed when stream is true");
    } else {
      Fields(*options, "stream_options", c).Bool("include_usage", &spec->include_usage);
    }
  }
  fields.String("user", &spec->user);
  if (const Json* format = fields.Get("response_format")) {
    if (!format->is_object()) {
      c->TypeError(*format, "response_format", "an object");
    } else {
      const Fields f(*format, "response_format", c);
      std::string type;
      if (f.Require("type") != nullptr && f.String("type", &type) && type != "text") {
        if (type == "json_object" || type == "json_schema") {
          c->Fail("response_format",
                  absl::StrCat("response_format ", Quoted(type), " is not supported"));
        } else {
          c->Fail("response_format.type",
                  absl::StrCat("'response_format.type' must be one of text, json_object, "
                               "json_schema, got ",
                               Quoted(type)));
        }
      }
    }
  }
  if (const Json* bias = fields.Get("logit_bias")) {
    if (!bias->is_object()) {
      c->TypeError(*bias, "logit_bias", "an object");
    } else if (!bias->empty()) {
      c->Fail("logit_bias", "logit_bias is not supported");
    }
  }
}

ParsedRequest Failed(ApiError error) { return ParsedRequest{std::nullopt, std::move(error)}; }

}  // namespace

JsonShape ScanJsonShape(std::string_view body, int depth_limit) {
  JsonShape shape;
  // One entry per open container: its member count so far for an object, -1 for an array.
  // Pairs are added per member (m for the m+1-th), so a truncated body is counted too: nlohmann
  // inserts every member it reads before it finds the truncation.
  std::vector<int64_t> open;
  bool in_string = false;
  bool escaped = false;
  for (const char ch : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (static_cast<int64_t>(open.size()) >= depth_limit) {
        shape.depth = depth_limit + 1;
        return shape;
      }
      open.push_back(ch == '{' ? 0 : -1);
      shape.depth = std::max(shape.depth, static_cast<int>(open.size()));
    } else if ((ch == ']' || ch == '}') && !open.empty()) {
      open.pop_back();
    } else if (ch == ':' && !open.empty() && open.back() >= 0) {
      shape.member_pairs += open.back();
      shape.max_object_members = std::max(shape.max_object_members, ++open.back());
    }
  }
  return shape;
}

std::optional<ApiError> CheckJsonShape(std::string_view body, std::string_view what) {
  const std::string field(what);
  return ShapeError(body, absl::StrCat("'", field, "'"), field);
}

int JsonNestingDepth(std::string_view body, int limit) { return ScanJsonShape(body, limit).depth; }

ParsedRequest ParseChatCompletionRequest(std::string_view body) {
  Json json;
  if (std::optional<ApiError> error = ParseBody(body, &json)) return Failed(std::move(*error));
  Checker c;
  const Fields fields(json, "", &c);
  GenerationSpec spec;
  spec.chat = true;
  if (const Json* messages = fields.Require("messages"))
    ReadMessages(*messages, &c, &spec.messages);
  if (const Json* tools = fields.Get("tools")) {
    ValidateTools(*tools, &c);
    spec.tools = *tools;
  }
  if (const Json* choice = fields.Get("tool_choice")) {
    ValidateToolChoice(*choice, &c);
    spec.tool_choice = *choice;
  }
  fields.Object("chat_template_kwargs", &spec.chat_template_kwargs);
  fields.Bool("add_generation_prompt", &spec.add_generation_prompt);
  ReadCommon(fields, &c, &spec);
  bool logprobs = false;
  fields.Bool("logprobs", &logprobs);
  int top_logprobs = 0;
  fields.Int("top_logprobs", 0, kMaxTopLogprobs, &top_logprobs);
  if (top_logprobs > 0 && !logprobs) {
    c.Fail("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
  }
  if (c.failed()) return Failed(c.error());
  spec.want_logprobs = logprobs;
  spec.top_logprobs = top_logprobs;
  if (logprobs) spec.params.logprobs = top_logprobs;
  return ParsedRequest{std::move(spec), ApiError{}};
}

ParsedRequest ParseCompletionRequest(std::string_view body) {
  Json json;
  if (std::optional<ApiError> error = ParseBody(body, &json)) return Failed(std::move(*error));
  Checker c;
  const Fields fields(json, "", &c);
  GenerationSpec spec;
  if (const Json* prompt = fields.Require("prompt")) {
    if (prompt->is_string()) {
      spec.prompts.push_back(PromptInput{PromptKind::kText, prompt->get<std::string>(), {}});
    } else if (!prompt->is_array()) {
      c.TypeError(*prompt, "prompt",
                  "a string, an array of strings, an array of token ids or an array of token id "
                  "arrays");
    } else if (prompt->empty()) {
      c.Fail("prompt", "'prompt' must not be an empty array");
    } else if (!(*prompt)[0].is_number() && prompt->size() > kMaxPrompts) {
      // Each prompt becomes engine requests; a list of 2M one-character prompts fits in 8 MiB.
      c.Fail("prompt", absl::StrCat("prompt holds ", prompt->size(), " prompts; at most ",
                                    kMaxPrompts, " per request"));
    } else if ((*prompt)[0].is_array()) {
      for (size_t i = 0; i < prompt->size() && !c.failed(); ++i) {
        PromptInput input{PromptKind::kTokens, {}, {}};
        const std::string path = IndexPath("prompt", i);
        if (ReadTokenIds((*prompt)[i], path, &c, &input.tokens) && input.tokens.empty()) {
          c.Fail(path, absl::StrCat("'", path, "' must not be an empty array"));
        }
        spec.prompts.push_back(std::move(input));
      }
    } else if ((*prompt)[0].is_number()) {
      PromptInput input{PromptKind::kTokens, {}, {}};
      ReadTokenIds(*prompt, "prompt", &c, &input.tokens);
      spec.prompts.push_back(std::move(input));
    } else {
      for (size_t i = 0; i < prompt->size(); ++i) {
        PromptInput input{PromptKind::kText, {}, {}};
        if (!c.ReadString((*prompt)[i], IndexPath("prompt", i), &input.text)) break;
        spec.prompts.push_back(std::move(input));
      }
    }
  }
  fields.Bool("echo", &spec.echo);
  if (fields.Get("suffix") != nullptr) c.Fail("suffix", "suffix is not supported");
  ReadCommon(fields, &c, &spec);
  // With one prompt n alone is bounded by the engine's own check, whose message is clearer.
  const auto choices =
      static_cast<int64_t>(spec.params.n) * static_cast<int64_t>(spec.prompts.size());
  if (spec.prompts.size() > 1 && choices > kMaxChoices) {
    c.Fail("n", absl::StrCat("n (", spec.params.n, ") times the number of prompts (",
                             spec.prompts.size(), ") is ", choices, " choices; at most ",
                             kMaxChoices, " per request"));
  }
  int best_of = 0;
  if (fields.Int("best_of", &best_of) && best_of != spec.params.n) {
    c.Fail("best_of", "best_of is not supported (it may only equal n)");
  }
  int logprobs = 0;
  if (fields.Int("logprobs", 0, kMaxTopLogprobs, &logprobs)) {
    spec.want_logprobs = true;
    spec.top_logprobs = logprobs;
    spec.params.logprobs = logprobs;
  }
  if (c.failed()) return Failed(c.error());
  return ParsedRequest{std::move(spec), ApiError{}};
}

std::variant<TokenizeSpec, ApiError> ParseTokenizeRequest(std::string_view body) {
  Json json;
  if (std::optional<ApiError> error = ParseBody(body, &json)) return std::move(*error);
  Checker c;
  const Fields fields(json, "", &c);
  TokenizeSpec spec;
  fields.String("model", &spec.model);
  const Json* messages = fields.Get("messages");
  const Json* prompt = fields.Get("prompt");
  if (messages != nullptr && prompt != nullptr) {
    c.Fail("messages", "give either 'prompt' or 'messages', not both");
  } else if (messages != nullptr) {
    spec.chat = true;
    spec.add_special_tokens = false;  // the chat template already writes BOS
    ReadMessages(*messages, &c, &spec.messages);
    fields.Bool("add_generation_prompt", &spec.add_generation_prompt);
    fields.Object("chat_template_kwargs", &spec.chat_template_kwargs);
  } else if (prompt != nullptr) {
    fields.String("prompt", &spec.prompt);
  } else {
    c.Fail("prompt", "'prompt' or 'messages' is required");
  }
  fields.Bool("add_special_tokens", &spec.add_special_tokens);
  if (c.failed()) return c.error();
  return spec;
}

std::variant<DetokenizeSpec, ApiError> ParseDetokenizeRequest(std::string_view body) {
  Json json;
  if (std::optional<ApiError> error = ParseBody(body, &json)) return std::move(*error);
  Checker c;
  const Fields fields(json, "", &c);
  DetokenizeSpec spec;
  fields.String("model", &spec.model);
  if (const Json* tokens = fields.Require("tokens"))
    ReadTokenIds(*tokens, "tokens", &c, &spec.tokens);
  if (c.failed()) return c.error();
  return spec;
}

}  // namespace dserve::server
