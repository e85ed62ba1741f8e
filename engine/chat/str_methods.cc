// Python's str methods over UTF-8 text, with code-point indices as CPython counts them.
#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/call_args.h"
#include "core/utf8.h"
#include "engine/chat/errors.h"
#include "engine/chat/methods.h"
#include "engine/chat/py_unicode.h"

namespace dserve::engine::jinja {
namespace {

using Method = std::function<absl::StatusOr<Value>(const Value& self, const CallArgs& call)>;

// Attributes of Python's str that dserve does not implement.
constexpr std::string_view kUnimplemented[] = {
    "casefold",  "center",    "encode",      "expandtabs", "format",     "format_map",
    "isalnum",   "isalpha",   "isascii",     "isdecimal",  "isdigit",    "isidentifier",
    "islower",   "isnumeric", "isprintable", "isspace",    "istitle",    "isupper",
    "ljust",     "maketrans", "partition",   "rjust",      "rpartition", "swapcase",
    "translate", "zfill"};

absl::StatusOr<std::optional<std::string>> OptionalStr(const std::optional<Value>& v,
                                                       std::string_view func) {
  if (!v.has_value() || v->is_none()) return std::nullopt;
  if (!v->is_string()) {
    return TypeError(absl::StrCat(Sv(func), " arg must be None or str, not ", TypeName(*v)));
  }
  return v->str();
}

// Python's ADJUST_INDICES for find/count/startswith: [start, end) clamped to [0, len].
void AdjustIndices(const std::optional<Value>& start_arg, const std::optional<Value>& end_arg,
                   int64_t len, int64_t* start, int64_t* end) {
  *start = start_arg && !start_arg->is_none() ? start_arg->int_value() : 0;
  *end = end_arg && !end_arg->is_none() ? end_arg->int_value() : len;
  if (*end > len) {
    *end = len;
  } else if (*end < 0) {
    *end = std::max<int64_t>(*end + len, 0);
  }
  if (*start < 0) *start = std::max<int64_t>(*start + len, 0);
}

absl::Status CheckIndexArgs(const std::optional<Value>& a, const std::optional<Value>& b) {
  for (const auto* v : {&a, &b}) {
    if (v->has_value() && !(*v)->is_none() && !(*v)->is_integral()) {
      return TypeError("slice indices must be integers or None or have an __index__ method");
    }
  }
  return absl::OkStatus();
}

// Code-point position of sub in self[start:end] searching forward or backward; -1 if absent.
int64_t Find(const std::u32string& s, const std::u32string& sub, int64_t start, int64_t end,
             bool reverse) {
  const auto n = static_cast<int64_t>(sub.size());
  if (start > static_cast<int64_t>(s.size()) || end - start < n) return -1;
  if (!reverse) {
    for (int64_t i = start; i + n <= end; ++i) {
      if (s.compare(i, n, sub) == 0) return i;
    }
  } else {
    for (int64_t i = end - n; i >= start; --i) {
      if (s.compare(i, n, sub) == 0) return i;
    }
  }
  return -1;
}

absl::StatusOr<Value> Split(const Value& self, const CallArgs& call, bool right) {
  const char* func = right ? "str.rsplit()" : "str.split()";
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs(func, call, {"sep", "maxsplit"}, 0));
  DSERVE_ASSIGN_OR_RETURN(std::optional<std::string> sep, OptionalStr(a[0], func));
  int64_t maxsplit = -1;
  if (a[1]) {
    DSERVE_ASSIGN_OR_RETURN(maxsplit, IntArg(*a[1], "maxsplit"));
  }
  int64_t count = maxsplit < 0 ? INT64_MAX : maxsplit;
  const bool markup = self.markup();
  std::vector<Value> parts;
  auto add = [&](std::string piece) { parts.push_back(Value::String(std::move(piece), markup)); };
  if (!sep) {
    const std::u32string s = DecodeUtf8(self.str());
    const auto n = static_cast<int64_t>(s.size());
    auto piece = [&](int64_t from, int64_t to) {
      add(EncodeUtf8(std::u32string_view(s).substr(from, to - from)));
    };
    if (!right) {
      int64_t i = 0;
      while (count-- > 0) {
        while (i < n && IsPySpace(s[i])) ++i;
        if (i == n) break;
        const int64_t j = i;
        while (i < n && !IsPySpace(s[i])) ++i;
        piece(j, i);
      }
      while (i < n && IsPySpace(s[i])) ++i;
      if (i < n) piece(i, n);
    } else {
      int64_t i = n - 1;
      while (count-- > 0) {
        while (i >= 0 && IsPySpace(s[i])) --i;
        if (i < 0) break;
        const int64_t j = i;
        while (i >= 0 && !IsPySpace(s[i])) --i;
        piece(i + 1, j + 1);
      }
      while (i >= 0 && IsPySpace(s[i])) --i;
      if (i >= 0) piece(0, i + 1);
      std::reverse(parts.begin(), parts.end());
    }
    return Value::List(std::move(parts));
  }
  if (sep->empty()) return ValueError("empty separator");
  // Byte search is safe: both strings are valid UTF-8.
  const std::string& s = self.str();
  if (!right) {
    size_t i = 0;
    while (count-- > 0) {
      const size_t j = s.find(*sep, i);
      if (j == std::string::npos) break;
      add(s.substr(i, j - i));
      i = j + sep->size();
    }
    add(s.substr(i));
  } else {
    size_t end = s.size();
    while (count-- > 0 && end >= sep->size()) {
      const size_t j = s.rfind(*sep, end - sep->size());
      if (j == std::string::npos) break;
      add(s.substr(j + sep->size(), end - j - sep->size()));
      end = j;
    }
    add(s.substr(0, end));
    std::reverse(parts.begin(), parts.end());
  }
  return Value::List(std::move(parts));
}

absl::StatusOr<Value> Strip(const Value& self, const CallArgs& call, bool left, bool right) {
  const char* func = left && right ? "str.strip()" : left ? "str.lstrip()" : "str.rstrip()";
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs(func, call, {"chars"}, 0));
  DSERVE_ASSIGN_OR_RETURN(std::optional<std::string> chars, OptionalStr(a[0], "strip"));
  return Value::String(PyStrip(self.str(), chars, left, right), self.markup());
}

absl::StatusOr<Value> StartsOrEnds(const Value& self, const CallArgs& call, bool ends) {
  const char* func = ends ? "endswith" : "startswith";
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs(func, call, {"prefix", "start", "end"}, 1));
  DSERVE_RETURN_IF_ERROR(CheckIndexArgs(a[1], a[2]));
  std::vector<std::string> candidates;
  if (a[0]->is_string()) {
    candidates.push_back(a[0]->str());
  } else if (a[0]->kind() == Value::Kind::kSeq && a[0]->seq().kind == SeqKind::kTuple) {
    for (const Value& v : a[0]->seq().items) {
      if (!v.is_string()) {
        return TypeError(
            absl::StrCat("tuple for ", func, " must only contain str, not ", TypeName(v)));
      }
      candidates.push_back(v.str());
    }
  } else {
    return TypeError(
        absl::StrCat(func, " first arg must be str or a tuple of str, not ", TypeName(*a[0])));
  }
  const std::u32string s = DecodeUtf8(self.str());
  int64_t start, end;
  AdjustIndices(a[1], a[2], static_cast<int64_t>(s.size()), &start, &end);
  for (const std::string& c : candidates) {
    const std::u32string sub = DecodeUtf8(c);
    const auto n = static_cast<int64_t>(sub.size());
    if (start > static_cast<int64_t>(s.size()) || end - start < n) continue;
    const int64_t at = ends ? end - n : start;
    if (s.compare(at, n, sub) == 0) return Value::Bool(true);
  }
  return Value::Bool(false);
}

absl::StatusOr<Value> Replace(const Value& self, const CallArgs& call) {
  if (self.markup()) return Unsupported("str.replace() on a Markup string");
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("str.replace()", call, {"old", "new", "count"}, 2));
  DSERVE_ASSIGN_OR_RETURN(std::string old_s, StrArg(*a[0], "replace() argument 1"));
  DSERVE_ASSIGN_OR_RETURN(std::string new_s, StrArg(*a[1], "replace() argument 2"));
  int64_t count = -1;
  if (a[2]) {
    DSERVE_ASSIGN_OR_RETURN(count, IntArg(*a[2], "count"));
  }
  const std::string& s = self.str();
  std::string out;
  if (old_s.empty()) {
    // Python inserts `new` before every code point and at the end.
    const std::u32string cps = DecodeUtf8(s);
    int64_t done = 0;
    for (char32_t c : cps) {
      if (count < 0 || done < count) {
        out += new_s;
        ++done;
      }
      AppendUtf8(c, &out);
    }
    if (count < 0 || done < count) out += new_s;
    return Value::String(std::move(out));
  }
  size_t i = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t j = s.find(old_s, i);
    if (j == std::string::npos) break;
    out.append(s, i, j - i);
    out += new_s;
    i = j + old_s.size();
    ++done;
  }
  out.append(s, i, std::string::npos);
  return Value::String(std::move(out));
}

// find, rfind, index, rindex, count.
absl::StatusOr<Value> Search(const Value& self, const CallArgs& call, std::string_view name) {
  const std::string func = absl::StrCat("str.", Sv(name), "()");
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs(func, call, {"sub", "start", "end"}, 1));
  DSERVE_ASSIGN_OR_RETURN(std::string sub_s, StrArg(*a[0], ""));
  DSERVE_RETURN_IF_ERROR(CheckIndexArgs(a[1], a[2]));
  const std::u32string s = DecodeUtf8(self.str());
  const std::u32string sub = DecodeUtf8(sub_s);
  int64_t start, end;
  AdjustIndices(a[1], a[2], static_cast<int64_t>(s.size()), &start, &end);
  if (name == "count") {
    if (start > static_cast<int64_t>(s.size()) || end < start) return Value::Int(0);
    if (sub.empty()) return Value::Int(end - start + 1);
    int64_t n = 0;
    for (int64_t i = start; i + static_cast<int64_t>(sub.size()) <= end;) {
      if (s.compare(i, sub.size(), sub) == 0) {
        ++n;
        i += static_cast<int64_t>(sub.size());
      } else {
        ++i;
      }
    }
    return Value::Int(n);
  }
  const bool reverse = name[0] == 'r';
  const int64_t at = Find(s, sub, start, end, reverse);
  if (at < 0 && (name == "index" || name == "rindex")) return ValueError("substring not found");
  return Value::Int(at);
}

absl::StatusOr<Value> Join(const Value& self, const CallArgs& call) {
  if (self.markup()) return Unsupported("str.join() on a Markup string");
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("str.join()", call, {"iterable"}, 1));
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(*a[0]));
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].is_string()) {
      return TypeError(absl::StrCat("sequence item ", i, ": expected str instance, ",
                                    TypeName(items[i]), " found"));
    }
    if (i > 0) out += self.str();
    out += items[i].str();
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> CaseMethod(const Value& self, const CallArgs& call, std::string_view name) {
  DSERVE_RETURN_IF_ERROR(BindArgs(absl::StrCat("str.", Sv(name), "()"), call, {}, 0).status());
  std::string out = name == "lower"   ? PyLower(self.str())
                    : name == "upper" ? PyUpper(self.str())
                    : name == "title" ? PyTitle(self.str())
                                      : PyCapitalize(self.str());
  return Value::String(std::move(out), self.markup());
}

absl::StatusOr<Value> AffixMethod(const Value& self, const CallArgs& call, bool prefix) {
  const char* func = prefix ? "str.removeprefix()" : "str.removesuffix()";
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs(func, call, {"affix"}, 1));
  DSERVE_ASSIGN_OR_RETURN(std::string affix, StrArg(*a[0], func));
  const std::string& s = self.str();
  if (prefix && s.compare(0, affix.size(), affix) == 0) {
    return Value::String(s.substr(affix.size()), self.markup());
  }
  if (!prefix && s.size() >= affix.size() &&
      s.compare(s.size() - affix.size(), affix.size(), affix) == 0) {
    return Value::String(s.substr(0, s.size() - affix.size()), self.markup());
  }
  return self;
}

absl::StatusOr<Value> SplitLines(const Value& self, const CallArgs& call) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("str.splitlines()", call, {"keepends"}, 0));
  std::vector<Value> lines;
  for (std::string& line : PySplitLines(self.str(), a[0] && Truthy(*a[0]))) {
    lines.push_back(Value::String(std::move(line), self.markup()));
  }
  return Value::List(std::move(lines));
}

std::optional<Method> Lookup(std::string_view name) {
  using std::placeholders::_1;
  using std::placeholders::_2;
  if (name == "split") return std::bind(Split, _1, _2, false);
  if (name == "rsplit") return std::bind(Split, _1, _2, true);
  if (name == "strip") return std::bind(Strip, _1, _2, true, true);
  if (name == "lstrip") return std::bind(Strip, _1, _2, true, false);
  if (name == "rstrip") return std::bind(Strip, _1, _2, false, true);
  if (name == "startswith") return std::bind(StartsOrEnds, _1, _2, false);
  if (name == "endswith") return std::bind(StartsOrEnds, _1, _2, true);
  if (name == "replace") return Replace;
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    return std::bind(Search, _1, _2, std::string(name));
  }
  if (name == "join") return Join;
  if (name == "lower" || name == "upper" || name == "title" || name == "capitalize") {
    return std::bind(CaseMethod, _1, _2, std::string(name));
  }
  if (name == "removeprefix") return std::bind(AffixMethod, _1, _2, true);
  if (name == "removesuffix") return std::bind(AffixMethod, _1, _2, false);
  if (name == "splitlines") return SplitLines;
  return std::nullopt;
}

}  // namespace

std::optional<Value> StrMethod(const Value& s, std::string_view name) {
  if (std::optional<Method> method = Lookup(name)) {
    return Value::Function(
        absl::StrCat("str.", Sv(name)),
        [s, m = *std::move(method)](const CallArgs& call) { return m(s, call); });
  }
  for (std::string_view unimplemented : kUnimplemented) {
    if (name == unimplemented) return UnsupportedMethod(absl::StrCat("str.", Sv(name)));
  }
  return std::nullopt;
}

}  // namespace dserve::engine::jinja
