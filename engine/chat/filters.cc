#include "engine/chat/filters.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/call_args.h"
#include "engine/chat/errors.h"
#include "engine/chat/methods.h"
#include "engine/chat/operators.h"
#include "engine/chat/py_format.h"
#include "engine/chat/py_unicode.h"
#include "engine/chat/seq_filters.h"
#include "engine/chat/sort_filters.h"
#include "engine/chat/value_json.h"

namespace dserve::engine::jinja {
namespace {

using FilterFn = absl::StatusOr<Value> (*)(const Value&, const CallArgs&);

// soft_str: str() of the value, keeping a Markup a Markup.
absl::StatusOr<Value> SoftStr(const Value& v) {
  if (v.is_string()) return v;
  DSERVE_ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return Value::String(std::move(s));
}

// Removes Python's digit-group underscores ("1_000"); false when they are misplaced.
bool StripUnderscores(std::string_view digits, std::string* out) {
  for (size_t i = 0; i < digits.size(); ++i) {
    if (digits[i] == '_') {
      if (i == 0 || i + 1 == digits.size() || digits[i - 1] == '_' ||
          !std::isxdigit(static_cast<unsigned char>(digits[i + 1]))) {
        return false;
      }
      continue;
    }
    out->push_back(digits[i]);
  }
  return true;
}

// Python's float(str): surrounding whitespace, underscores, inf/infinity/nan; no hex.
std::optional<double> ParsePyFloat(std::string_view text) {
  std::string s = PyStrip(text, std::nullopt, true, true);
  std::string body = s;
  std::string sign;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    sign = body.substr(0, 1);
    body = body.substr(1);
  }
  const std::string lower = PyLower(body);
  if (lower == "inf" || lower == "infinity") {
    return sign == "-" ? -std::numeric_limits<double>::infinity()
                       : std::numeric_limits<double>::infinity();
  }
  if (lower == "nan") return std::numeric_limits<double>::quiet_NaN();
  // digits [. digits] [e [sign] digits], with at least one mantissa digit.
  size_t i = 0;
  auto digits = [&] {
    const size_t start = i;
    while (i < body.size() &&
           (std::isdigit(static_cast<unsigned char>(body[i])) || body[i] == '_')) {
      ++i;
    }
    return body.substr(start, i - start);
  };
  std::string clean;
  const std::string int_part = digits();
  std::string frac_part;
  if (i < body.size() && body[i] == '.') {
    ++i;
    frac_part = digits();
  }
  if (int_part.empty() && frac_part.empty()) return std::nullopt;
  if (!StripUnderscores(int_part, &clean)) return std::nullopt;
  clean.push_back('.');
  if (!StripUnderscores(frac_part, &clean)) return std::nullopt;
  if (i < body.size() && (body[i] == 'e' || body[i] == 'E')) {
    ++i;
    clean.push_back('e');
    if (i < body.size() && (body[i] == '+' || body[i] == '-')) clean.push_back(body[i++]);
    const std::string exp = digits();
    if (exp.empty() || !StripUnderscores(exp, &clean)) return std::nullopt;
  }
  if (i != body.size()) return std::nullopt;
  return std::strtod((sign + clean).c_str(), nullptr);
}

// Python's int(str, base). nullopt: ValueError. Unsupported when the value exceeds 64 bits.
absl::StatusOr<std::optional<int64_t>> ParsePyInt(std::string_view text, int64_t base) {
  if (base != 0 && (base < 2 || base > 36))
    return ValueError("int() base must be >= 2 and <= 36, or 0");
  std::string s = PyStrip(text, std::nullopt, true, true);
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s = s.substr(1);
  }
  auto has_prefix = [&](char p) { return s.size() >= 2 && s[0] == '0' && (s[1] | 0x20) == p; };
  int b = static_cast<int>(base);
  if ((b == 0 || b == 16) && has_prefix('x')) {
    b = 16;
    s = s.substr(2);
  } else if ((b == 0 || b == 8) && has_prefix('o')) {
    b = 8;
    s = s.substr(2);
  } else if ((b == 0 || b == 2) && has_prefix('b')) {
    b = 2;
    s = s.substr(2);
  } else if (b == 0) {
    b = 10;
    // Base 0 refuses leading zeros such as "010".
    if (s.size() > 1 && s[0] == '0' && s.find_first_not_of("0_") != std::string::npos) {
      return std::optional<int64_t>();
    }
  } else if (!s.empty() && s[0] == '_') {
    return std::optional<int64_t>();
  }
  // A prefix may be followed by one underscore ("0x_1f").
  if (b != static_cast<int>(base) && !s.empty() && s[0] == '_') s = s.substr(1);
  std::string clean;
  if (s.empty() || !StripUnderscores(s, &clean)) return std::optional<int64_t>();
  for (char c : clean) {
    const int d = std::isdigit(static_cast<unsigned char>(c))   ? c - '0'
                  : std::isalpha(static_cast<unsigned char>(c)) ? (c | 0x20) - 'a' + 10
                                                                : 99;
    if (d >= b) return std::optional<int64_t>();
  }
  errno = 0;
  const long long v = std::strtoll((negative ? "-" + clean : clean).c_str(), nullptr, b);
  if (errno == ERANGE) return Unsupported("int() results beyond 64 bits");
  return std::optional<int64_t>(v);
}

absl::StatusOr<Value> FilterAbs(const Value& v, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("abs()", args, {}, 0).status());
  if (!v.is_number()) {
    return TypeError(absl::StrCat("bad operand type for abs(): '", TypeName(v), "'"));
  }
  if (v.kind() == Value::Kind::kFloat) return Value::Float(std::fabs(v.float_value()));
  if (v.int_value() == std::numeric_limits<int64_t>::min()) {
    return Unsupported("integer results beyond 64 bits");
  }
  return Value::Int(v.int_value() < 0 ? -v.int_value() : v.int_value());
}

// Unlike `.name`, attr() never falls back to an item: a dict's keys are not attributes.
absl::StatusOr<Value> FilterAttr(const Value& v, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("attr()", args, {"name"}, 1));
  DSERVE_ASSIGN_OR_RETURN(std::string name, ToStr(*a[0]));
  if (v.kind() == Value::Kind::kDict) {
    // GetAttr would find the key; look up only the dict's own attributes.
    const Value* key = v.dict().Find(name);
    if (key == nullptr) return GetAttr(v, name);
    if (std::optional<Value> method = PythonAttribute(v, name)) return *method;
    return Value::Undefined(absl::StrCat("'dict object' has no attribute ", ReprString(name)));
  }
  return GetAttr(v, name);
}

absl::StatusOr<Value> CaseFilter(const Value& v, const CallArgs& args, std::string_view which) {
  DSERVE_RETURN_IF_ERROR(BindArgs(absl::StrCat(Sv(which), "()"), args, {}, 0).status());
  DSERVE_ASSIGN_OR_RETURN(Value s, SoftStr(v));
  if (which == "lower") return Value::String(PyLower(s.str()), s.markup());
  if (which == "upper") return Value::String(PyUpper(s.str()), s.markup());
  if (which == "capitalize") return Value::String(PyCapitalize(s.str()), s.markup());
  // jinja2's title: words start after - ( { [ < or whitespace; each is item[0].upper() +
  // item[1:].lower().
  const std::u32string cps = DecodeUtf8(s.str());
  auto is_sep = [](char32_t c) {
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || IsPySpace(c);
  };
  std::string out;
  size_t i = 0;
  while (i < cps.size()) {
    size_t j = i;
    const bool sep = is_sep(cps[i]);
    while (j < cps.size() && is_sep(cps[j]) == sep) ++j;
    const std::u32string_view item(cps.data() + i, j - i);
    out += PyUpper(EncodeUtf8(item.substr(0, 1)));
    out += PyLower(EncodeUtf8(item.substr(1)));
    i = j;
  }
  return Value::String(std::move(out));
}
absl::StatusOr<Value> FilterLower(const Value& v, const CallArgs& a) {
  return CaseFilter(v, a, "lower");
}
absl::StatusOr<Value> FilterUpper(const Value& v, const CallArgs& a) {
  return CaseFilter(v, a, "upper");
}
absl::StatusOr<Value> FilterCapitalize(const Value& v, const CallArgs& a) {
  return CaseFilter(v, a, "capitalize");
}
absl::StatusOr<Value> FilterTitle(const Value& v, const CallArgs& a) {
  return CaseFilter(v, a, "title");
}

absl::StatusOr<Value> FilterLength(const Value& v, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("length()", args, {}, 0).status());
  DSERVE_ASSIGN_OR_RETURN(int64_t n, Length(v));
  return Value::Int(n);
}

absl::StatusOr<Value> FilterDefault(const Value& v, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("default()", args, {"default_value", "boolean"}, 0));
  const bool boolean = a[1] && Truthy(*a[1]);
  if (v.is_undefined() || (boolean && !Truthy(v))) {
    return a[0].value_or(Value::String(""));
  }
  return v;
}

absl::StatusOr<Value> FilterEscape(const Value& v, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("escape()", args, {}, 0).status());
  if (v.is_string() && v.markup()) return v;
  DSERVE_ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return Value::String(HtmlEscape(s), true);
}

absl::StatusOr<Value> FilterForceEscape(const Value& v, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("forceescape()", args, {}, 0).status());
  DSERVE_ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return Value::String(HtmlEscape(s), true);
}

absl::StatusOr<Value> FilterSafe(const Value& v, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("safe()", args, {}, 0).status());
  DSERVE_ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return Value::String(std::move(s), true);
}

absl::StatusOr<Value> FilterString(const Value& v, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("string()", args, {}, 0).status());
  return SoftStr(v);
}

absl::StatusOr<Value> FilterTrim(const Value& v, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("trim()", args, {"chars"}, 0));
  std::optional<std::string> chars;
  if (a[0] && !a[0]->is_none()) {
    if (!a[0]->is_string()) {
      return TypeError(absl::StrCat("strip arg must be None or str, not ", TypeName(*a[0])));
    }
    chars = a[0]->str();
  }
  DSERVE_ASSIGN_OR_RETURN(Value s, SoftStr(v));
  return Value::String(PyStrip(s.str(), chars, true, true), s.markup());
}

absl::StatusOr<Value> FilterReplace(const Value& v, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("replace()", args, {"old", "new", "count"}, 2));
  DSERVE_ASSIGN_OR_RETURN(std::string s, ToStr(v));
  DSERVE_ASSIGN_OR_RETURN(std::string old_s, ToStr(*a[0]));
  DSERVE_ASSIGN_OR_RETURN(std::string new_s, ToStr(*a[1]));
  CallArgs call;
  call.args = {Value::String(old_s), Value::String(new_s)};
  if (a[2] && !a[2]->is_none()) call.args.push_back(*a[2]);
  DSERVE_ASSIGN_OR_RETURN(Value method, GetAttr(Value::String(std::move(s)), "replace"));
  return method.callable().fn(call);
}

absl::StatusOr<Value> FilterInt(const Value& v, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("int()", args, {"default", "base"}, 0));
  const Value dflt = a[0].value_or(Value::Int(0));
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_string()) {
    if (!a[1] || a[1]->is_integral()) {
      DSERVE_ASSIGN_OR_RETURN(std::optional<int64_t> i,
                              ParsePyInt(v.str(), a[1] ? a[1]->int_value() : 10));
      if (i) return Value::Int(*i);
    }
    // jinja2's quirk: "42.23"|int is 42, through float().
    std::optional<double> f = ParsePyFloat(v.str());
    if (!f || std::isnan(*f)) return dflt;
    if (std::isinf(*f)) return PyError("OverflowError", "cannot convert float infinity to integer");
    if (std::fabs(*f) >= 9.2e18) return Unsupported("int() results beyond 64 bits");
    return Value::Int(static_cast<int64_t>(*f));
  }
  if (v.is_integral()) return Value::Int(v.int_value());
  if (v.kind() == Value::Kind::kFloat) {
    const double f = v.float_value();
    if (std::isnan(f)) return dflt;
    if (std::isinf(f)) return PyError("OverflowError", "cannot convert float infinity to integer");
    if (std::fabs(f) >= 9.2e18) return Unsupported("int() results beyond 64 bits");
    return Value::Int(static_cast<int64_t>(f));
  }
  return dflt;
}

absl::StatusOr<Value> FilterFloat(const Value& v, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("float()", args, {"default"}, 0));
  const Value dflt = a[0].value_or(Value::Float(0.0));
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_number()) return Value::Float(v.float_value());
  if (v.is_string()) {
    if (std::optional<double> f = ParsePyFloat(v.str())) return Value::Float(*f);
  }
  return dflt;
}

absl::StatusOr<Value> FilterIndent(const Value& v, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("indent()", args, {"width", "first", "blank"}, 0));
  std::string indention = "    ";
  if (a[0]) {
    if (a[0]->is_string()) {
      indention = a[0]->str();
    } else if (a[0]->is_integral()) {
      indention.assign(static_cast<size_t>(std::max<int64_t>(a[0]->int_value(), 0)), ' ');
    } else {
      return TypeError(
          absl::StrCat("can't multiply sequence by non-int of type '", TypeName(*a[0]), "'"));
    }
  }
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_string()) {
    // jinja2 starts with `s += "\n"`: a list accepts that (extending itself) and then has no
    // splitlines(); a tuple refuses the str; anything else has no +=.
    if (v.kind() == Value::Kind::kSeq && v.seq().kind == SeqKind::kList) {
      return PyError("AttributeError", "'list' object has no attribute 'splitlines'");
    }
    if (v.kind() == Value::Kind::kSeq && v.seq().kind == SeqKind::kTuple) {
      return TypeError("can only concatenate tuple (not \"str\") to tuple");
    }
    return TypeError(
        absl::StrCat("unsupported operand type(s) for +=: '", TypeName(v), "' and 'str'"));
  }
  // jinja2 appends a newline first so that splitlines keeps a trailing empty line.
  const std::vector<std::string> lines = PySplitLines(v.str() + "\n", false);
  std::string out;
  if (a[2] && Truthy(*a[2])) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += "\n" + indention;
      out += lines[i];
    }
  } else {
    out = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      out += "\n";
      if (!lines[i].empty()) out += indention;
      out += lines[i];
    }
  }
  if (a[1] && Truthy(*a[1])) out = indention + out;
  return Value::String(std::move(out), v.markup());
}

// Hugging Face's tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False).
absl::StatusOr<Value> FilterToJson(const Value& v, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(
      auto a, BindArgs("tojson()", args, {"ensure_ascii", "indent", "separators", "sort_keys"}, 0));
  JsonDumpOptions options;
  options.ensure_ascii = a[0] && Truthy(*a[0]);
  if (a[1] && !a[1]->is_none()) {
    if (a[1]->is_string()) {
      options.indent = a[1]->str();
    } else if (a[1]->is_integral()) {
      options.indent =
          std::string(static_cast<size_t>(std::max<int64_t>(a[1]->int_value(), 0)), ' ');
    } else {
      return TypeError(
          absl::StrCat("can't multiply sequence by non-int of type '", TypeName(*a[1]), "'"));
    }
  }
  if (a[2] && !a[2]->is_none()) {
    const Value& sep = *a[2];
    const bool pair = sep.kind() == Value::Kind::kSeq && sep.seq().items.size() == 2 &&
                      sep.seq().items[0].is_string() && sep.seq().items[1].is_string();
    if (!pair) return TypeError("separators must be a pair of strings");
    options.separators = std::make_pair(sep.seq().items[0].str(), sep.seq().items[1].str());
  }
  options.sort_keys = a[3] && Truthy(*a[3]);
  DSERVE_ASSIGN_OR_RETURN(std::string text, DumpJson(v, options));
  return Value::String(std::move(text));
}

struct FilterEntry {
  std::string_view name;
  FilterFn fn;  // null: a jinja2 builtin dserve does not implement
};

constexpr FilterEntry kFilters[] = {
    {"abs", FilterAbs},
    {"attr", FilterAttr},
    {"batch", nullptr},
    {"capitalize", FilterCapitalize},
    {"center", nullptr},
    {"count", FilterLength},
    {"d", FilterDefault},
    {"default", FilterDefault},
    {"dictsort", FilterDictSort},
    {"e", FilterEscape},
    {"escape", FilterEscape},
    {"filesizeformat", nullptr},
    {"first", FilterFirst},
    {"float", FilterFloat},
    {"forceescape", FilterForceEscape},
    {"format", nullptr},
    {"groupby", nullptr},
    {"indent", FilterIndent},
    {"int", FilterInt},
    {"items", FilterItems},
    {"join", FilterJoin},
    {"last", FilterLast},
    {"length", FilterLength},
    {"list", FilterList},
    {"lower", FilterLower},
    {"map", FilterMap},
    {"max", FilterMax},
    {"min", FilterMin},
    {"pprint", nullptr},
    {"random", nullptr},
    {"reject", FilterReject},
    {"rejectattr", FilterRejectAttr},
    {"replace", FilterReplace},
    {"reverse", FilterReverse},
    {"round", nullptr},
    {"safe", FilterSafe},
    {"select", FilterSelect},
    {"selectattr", FilterSelectAttr},
    {"slice", nullptr},
    {"sort", FilterSort},
    {"string", FilterString},
    {"striptags", nullptr},
    {"sum", FilterSum},
    {"title", FilterTitle},
    {"tojson", FilterToJson},
    {"trim", FilterTrim},
    {"truncate", nullptr},
    {"unique", FilterUnique},
    {"upper", FilterUpper},
    {"urlencode", nullptr},
    {"urlize", nullptr},
    {"wordcount", nullptr},
    {"wordwrap", nullptr},
    {"xmlattr", nullptr},
};

const FilterEntry* FindFilter(std::string_view name) {
  for (const FilterEntry& e : kFilters) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

}  // namespace

NameStatus FilterNameStatus(std::string_view name) {
  const FilterEntry* e = FindFilter(name);
  if (e == nullptr) return NameStatus::kUnknown;
  return e->fn != nullptr ? NameStatus::kSupported : NameStatus::kUnsupported;
}

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& value, const CallArgs& args) {
  const FilterEntry* e = FindFilter(name);
  if (e == nullptr) {
    return PyError("TemplateRuntimeError", absl::StrCat("No filter named '", Sv(name), "' found."));
  }
  if (e->fn == nullptr) return Unsupported(absl::StrCat("the filter '", Sv(name), "'"));
  return e->fn(value, args);
}

}  // namespace dserve::engine::jinja
