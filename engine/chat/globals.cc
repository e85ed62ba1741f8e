#include "engine/chat/globals.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/call_args.h"
#include "engine/chat/errors.h"
#include "engine/chat/methods.h"

namespace dserve::engine::jinja {
namespace {

// jinja2's sandbox refuses larger ranges.
constexpr int64_t kMaxRange = 100000;

absl::StatusOr<Value> Range(const CallArgs& call) {
  if (!call.kwargs.empty()) return TypeError("range() takes no keyword arguments");
  if (call.args.empty() || call.args.size() > 3) {
    return TypeError(absl::StrCat("range expected at most 3 arguments, got ", call.args.size()));
  }
  int64_t v[3] = {0, 0, 1};
  for (size_t i = 0; i < call.args.size(); ++i) {
    DSERVE_ASSIGN_OR_RETURN(v[i], IntArg(call.args[i], "range()"));
  }
  int64_t start = 0, stop = v[0], step = 1;
  if (call.args.size() >= 2) {
    start = v[0];
    stop = v[1];
  }
  if (call.args.size() == 3) step = v[2];
  if (step == 0) return ValueError("range() arg 3 must not be zero");
  auto seq = std::make_shared<Sequence>();
  seq->kind = SeqKind::kRange;
  seq->start = start;
  seq->stop = stop;
  seq->step = step;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (static_cast<int64_t>(seq->items.size()) >= kMaxRange) {
      return PyError("OverflowError",
                     "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    }
    seq->items.push_back(Value::Int(i));
  }
  return Value::Seq(std::move(seq));
}

// dict(*args, **kwargs) as Python builds it: from a mapping or (key, value) pairs, then kwargs.
absl::StatusOr<Dict> BuildDict(std::string_view func, const CallArgs& call) {
  Dict out;
  if (call.args.size() > 1) {
    return TypeError(
        absl::StrCat(Sv(func), " expected at most 1 argument, got ", call.args.size()));
  }
  if (call.args.size() == 1) {
    const Value& src = call.args[0];
    if (src.kind() == Value::Kind::kDict) {
      out = src.dict();
    } else {
      DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(src));
      for (const Value& item : items) {
        DSERVE_ASSIGN_OR_RETURN(std::vector<Value> pair, Iterate(item));
        if (pair.size() != 2) {
          return ValueError("dictionary update sequence element has the wrong length");
        }
        if (!pair[0].is_string()) return Unsupported("dict keys that are not strings");
        out.Set(pair[0].str(), pair[1]);
      }
    }
  }
  for (const auto& [k, v] : call.kwargs) out.Set(k, v);
  return out;
}

// datetime.fromtimestamp(t).strftime(format) for a naive local datetime: %z and %Z are empty
// and %f is 000000, as in Python.
std::string PyStrftime(std::time_t t, std::string_view format) {
  std::string fmt;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%' || i + 1 >= format.size()) {
      fmt.push_back(format[i]);
      continue;
    }
    const char c = format[++i];
    if (c == 'f') {
      fmt += "000000";
    } else if (c != 'z' && c != 'Z') {
      fmt.push_back('%');
      fmt.push_back(c);
    }
  }
  std::tm tm{};
  localtime_r(&t, &tm);
  // strftime returns 0 both for an empty result and a short buffer: grow while a longer result
  // is plausible (no directive expands to more than 64 bytes).
  for (size_t size = 256;; size *= 4) {
    std::string buf(size, '\0');
    const size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
    if (n > 0 || size > 64 * (fmt.size() + 1)) return buf.substr(0, n);
  }
}

}  // namespace

std::optional<Value> LookupGlobal(std::string_view name, const Clock& clock) {
  if (name == "range") return Value::Function("range", Range);
  if (name == "dict") {
    return Value::Function("dict", [](const CallArgs& call) -> absl::StatusOr<Value> {
      DSERVE_ASSIGN_OR_RETURN(Dict d, BuildDict("dict", call));
      return Value::FromDict(std::make_shared<const Dict>(std::move(d)));
    });
  }
  if (name == "namespace") {
    return Value::Function("namespace", [](const CallArgs& call) -> absl::StatusOr<Value> {
      DSERVE_ASSIGN_OR_RETURN(Dict d, BuildDict("namespace", call));
      auto ns = std::make_shared<Namespace>();
      for (const auto& [k, v] : d.entries()) ns->SetAttr(k, v);
      return Value::FromObject(std::move(ns));
    });
  }
  if (name == "raise_exception") {
    return Value::Function("raise_exception", [](const CallArgs& call) -> absl::StatusOr<Value> {
      DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("raise_exception()", call, {"message"}, 1));
      DSERVE_ASSIGN_OR_RETURN(std::string message, ToStr(*a[0]));
      return TemplateRaised(message);
    });
  }
  if (name == "strftime_now") {
    return Value::Function("strftime_now", [clock](const CallArgs& call) -> absl::StatusOr<Value> {
      DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("strftime_now()", call, {"format"}, 1));
      DSERVE_ASSIGN_OR_RETURN(std::string format, StrArg(*a[0], "strftime() argument 1"));
      return Value::String(PyStrftime(clock ? clock() : std::time(nullptr), format));
    });
  }
  if (name == "lipsum" || name == "cycler" || name == "joiner") {
    return UnsupportedMethod(std::string(name));
  }
  return std::nullopt;
}

}  // namespace dserve::engine::jinja
