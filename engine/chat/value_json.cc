#include "engine/chat/value_json.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/chat/errors.h"
#include "engine/chat/py_format.h"
#include "engine/chat/py_unicode.h"

namespace dserve::engine::jinja {

namespace {

// Request JSON nested deeper than this is refused rather than recursed into.
constexpr int kMaxInputDepth = 256;

absl::StatusOr<Value> FromJsonAt(const nlohmann::ordered_json& j, int depth) {
  using T = nlohmann::ordered_json::value_t;
  if (depth > kMaxInputDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("template input is nested more than ", kMaxInputDepth, " levels deep"));
  }
  switch (j.type()) {
    case T::null:
      return Value::None();
    case T::boolean:
      return Value::Bool(j.get<bool>());
    case T::number_integer:
      return Value::Int(j.get<int64_t>());
    case T::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Unsupported(absl::StrCat("the integer ", u, " (above 2^63-1) in template input"));
      }
      return Value::Int(static_cast<int64_t>(u));
    }
    case T::number_float:
      return Value::Float(j.get<double>());
    case T::string: {
      const std::string& s = j.get_ref<const std::string&>();
      if (!IsValidUtf8(s)) {
        return absl::InvalidArgumentError("template input holds a string that is not UTF-8");
      }
      return Value::String(s);
    }
    case T::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& item : j) {
        absl::StatusOr<Value> v = FromJsonAt(item, depth + 1);
        if (!v.ok()) return v.status();
        items.push_back(*std::move(v));
      }
      return Value::List(std::move(items));
    }
    case T::object: {
      auto dict = std::make_shared<Dict>();
      for (const auto& [key, item] : j.items()) {
        if (!IsValidUtf8(key)) {
          return absl::InvalidArgumentError("template input holds a key that is not UTF-8");
        }
        absl::StatusOr<Value> v = FromJsonAt(item, depth + 1);
        if (!v.ok()) return v.status();
        dict->Append(key, *std::move(v));
      }
      return Value::FromDict(std::move(dict));
    }
    default:
      return absl::InvalidArgumentError("template input holds a binary or invalid JSON value");
  }
}

}  // namespace

absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& j) { return FromJsonAt(j, 0); }

namespace {

class JsonWriter {
 public:
  explicit JsonWriter(const JsonDumpOptions& o) : o_(o) {
    if (o.separators) {
      item_sep_ = o.separators->first;
      key_sep_ = o.separators->second;
    } else {
      item_sep_ = o.indent ? "," : ", ";
      key_sep_ = ": ";
    }
  }

  absl::Status Write(const Value& v, int level, std::string* out) {
    if (level > kMaxReprDepth) {
      return PyError("RecursionError",
                     "maximum recursion depth exceeded while encoding a JSON object");
    }
    switch (v.kind()) {
      case Value::Kind::kNone:
        out->append("null");
        return absl::OkStatus();
      case Value::Kind::kBool:
        out->append(v.bool_value() ? "true" : "false");
        return absl::OkStatus();
      case Value::Kind::kInt:
        absl::StrAppend(out, v.int_value());
        return absl::OkStatus();
      case Value::Kind::kFloat: {
        const double f = v.float_value();
        if (std::isnan(f)) {
          out->append("NaN");
        } else if (std::isinf(f)) {
          out->append(f > 0 ? "Infinity" : "-Infinity");
        } else {
          out->append(FormatFloat(f));
        }
        return absl::OkStatus();
      }
      case Value::Kind::kString:
        AppendJsonString(v.str(), o_.ensure_ascii, out);
        return absl::OkStatus();
      case Value::Kind::kSeq:
        if (v.seq().kind == SeqKind::kList || v.seq().kind == SeqKind::kTuple) {
          return WriteList(v.seq().items, level, out);
        }
        break;
      case Value::Kind::kDict:
        return WriteDict(v.dict(), level, out);
      default:
        break;
    }
    return TypeError(absl::StrCat("Object of type ", TypeName(v), " is not JSON serializable"));
  }

 private:
  // Opens a container's item `index`: the separator, then a newline and indent when indenting.
  void Open(size_t index, int level, std::string* out) {
    if (index > 0) out->append(item_sep_);
    if (o_.indent) {
      out->push_back('\n');
      for (int i = 0; i < level; ++i) out->append(*o_.indent);
    }
  }
  void Close(int level, std::string* out) {
    if (!o_.indent) return;
    out->push_back('\n');
    for (int i = 0; i < level; ++i) out->append(*o_.indent);
  }

  absl::Status WriteList(const std::vector<Value>& items, int level, std::string* out) {
    if (items.empty()) {
      out->append("[]");
      return absl::OkStatus();
    }
    out->push_back('[');
    for (size_t i = 0; i < items.size(); ++i) {
      Open(i, level + 1, out);
      absl::Status s = Write(items[i], level + 1, out);
      if (!s.ok()) return s;
    }
    Close(level, out);
    out->push_back(']');
    return absl::OkStatus();
  }

  absl::Status WriteDict(const Dict& dict, int level, std::string* out) {
    if (dict.size() == 0) {
      out->append("{}");
      return absl::OkStatus();
    }
    std::vector<const std::pair<std::string, Value>*> entries;
    for (const auto& e : dict.entries()) entries.push_back(&e);
    if (o_.sort_keys) {
      // Python compares str by code point; UTF-8 byte order is the same order.
      std::stable_sort(entries.begin(), entries.end(),
                       [](const auto* a, const auto* b) { return a->first < b->first; });
    }
    out->push_back('{');
    for (size_t i = 0; i < entries.size(); ++i) {
      Open(i, level + 1, out);
      AppendJsonString(entries[i]->first, o_.ensure_ascii, out);
      out->append(key_sep_);
      absl::Status s = Write(entries[i]->second, level + 1, out);
      if (!s.ok()) return s;
    }
    Close(level, out);
    out->push_back('}');
    return absl::OkStatus();
  }

  const JsonDumpOptions& o_;
  std::string item_sep_;
  std::string key_sep_;
};

}  // namespace

absl::StatusOr<std::string> DumpJson(const Value& v, const JsonDumpOptions& options) {
  std::string out;
  JsonWriter writer(options);
  absl::Status s = writer.Write(v, 0, &out);
  if (!s.ok()) return s;
  return out;
}

}  // namespace dserve::engine::jinja
