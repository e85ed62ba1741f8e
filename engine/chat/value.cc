#include "engine/chat/value.h"
#include "core/utf8.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/chat/errors.h"
#include "engine/chat/py_format.h"
#include "engine/chat/py_unicode.h"

namespace dserve::engine::jinja {

// ---- Dict, Generator, Namespace --------------------------------------------------------------

const Value* Dict::Find(std::string_view key) const {
  for (const auto& [k, v] : entries_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::Set(std::string key, Value value) {
  for (auto& [k, v] : entries_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
}

void Dict::Append(std::string key, Value value) {
  entries_.emplace_back(std::move(key), std::move(value));
}

absl::StatusOr<std::optional<Value>> Generator::Next() {
  if (done_) return std::nullopt;
  absl::StatusOr<std::optional<Value>> item = next_();
  if (!item.ok() || !item->has_value()) done_ = true;
  return item;
}

absl::StatusOr<std::optional<Value>> Namespace::GetAttr(std::string_view name) {
  const Value* v = attrs_.Find(name);
  if (v == nullptr) return std::nullopt;
  return *v;
}

// ---- Value -------------------------------------------------------------------------------

namespace {

// Shared by every default-constructed Value so that building one allocates nothing.
const std::shared_ptr<const UndefinedInfo>& PlainUndefined() {
  static const auto* info =
      new std::shared_ptr<const UndefinedInfo>(std::make_shared<const UndefinedInfo>());
  return *info;
}

}  // namespace

Value::Value() : storage_(PlainUndefined()) {}

Value Value::Undefined(std::string message, bool security) {
  Value v;
  v.storage_ = std::make_shared<const UndefinedInfo>(UndefinedInfo{std::move(message), security});
  return v;
}
Value Value::None() {
  Value v;
  v.storage_ = std::monostate();
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.storage_ = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.storage_ = i;
  return v;
}
Value Value::Float(double f) {
  Value v;
  v.storage_ = f;
  return v;
}
Value Value::String(std::string s, bool markup) {
  Value v;
  v.storage_ = std::make_shared<const PyString>(PyString{std::move(s), markup});
  return v;
}
Value Value::List(std::vector<Value> items) {
  auto seq = std::make_shared<Sequence>();
  seq->items = std::move(items);
  return Seq(std::move(seq));
}
Value Value::Tuple(std::vector<Value> items) {
  auto seq = std::make_shared<Sequence>();
  seq->kind = SeqKind::kTuple;
  seq->items = std::move(items);
  return Seq(std::move(seq));
}
Value Value::Seq(std::shared_ptr<const Sequence> seq) {
  Value v;
  v.storage_ = std::move(seq);
  return v;
}
Value Value::FromDict(std::shared_ptr<const Dict> dict) {
  Value v;
  v.storage_ = std::move(dict);
  return v;
}
Value Value::Function(std::string name, std::function<absl::StatusOr<Value>(const CallArgs&)> fn) {
  Value v;
  v.storage_ = std::make_shared<const Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}
Value Value::FromGenerator(std::shared_ptr<Generator> gen) {
  Value v;
  v.storage_ = std::move(gen);
  return v;
}
Value Value::FromObject(std::shared_ptr<Object> obj) {
  Value v;
  v.storage_ = std::move(obj);
  return v;
}

bool Value::is_number() const {
  return kind() == Kind::kBool || kind() == Kind::kInt || kind() == Kind::kFloat;
}

const UndefinedInfo& Value::undefined() const { return *std::get<UndefinedPtr>(storage_); }

int64_t Value::int_value() const {
  return kind() == Kind::kBool ? (bool_value() ? 1 : 0) : std::get<int64_t>(storage_);
}

double Value::float_value() const {
  return kind() == Kind::kFloat ? std::get<double>(storage_) : static_cast<double>(int_value());
}

const void* Value::identity() const {
  switch (kind()) {
    case Kind::kString:
      return std::get<StringPtr>(storage_).get();
    case Kind::kSeq:
      return std::get<SeqPtr>(storage_).get();
    case Kind::kDict:
      return std::get<DictPtr>(storage_).get();
    case Kind::kCallable:
      return std::get<CallablePtr>(storage_).get();
    case Kind::kGenerator:
      return std::get<GeneratorPtr>(storage_).get();
    case Kind::kObject:
      return std::get<ObjectPtr>(storage_).get();
    case Kind::kUndefined:
      return std::get<UndefinedPtr>(storage_).get();
    default:
      return nullptr;
  }
}

// ---- Python protocols --------------------------------------------------------------------

std::string TypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return v.markup() ? "Markup" : "str";
    case Value::Kind::kSeq:
      switch (v.seq().kind) {
        case SeqKind::kList:
          return "list";
        case SeqKind::kTuple:
          return "tuple";
        case SeqKind::kRange:
          return "range";
        case SeqKind::kDictKeys:
          return "dict_keys";
        case SeqKind::kDictValues:
          return "dict_values";
        case SeqKind::kDictItems:
          return "dict_items";
      }
      return "list";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kCallable:
      return "builtin_function_or_method";
    case Value::Kind::kGenerator:
      return v.generator().type_name();
    case Value::Kind::kObject:
      return std::string(v.object().TypeName());
  }
  return "object";
}

std::string ObjectTypeRepr(const Value& v) {
  if (v.is_none()) return "None";
  if (v.kind() == Value::Kind::kObject) {
    return absl::StrCat(Sv(v.object().ModuleName()), ".", Sv(v.object().TypeName()), " object");
  }
  if (v.kind() == Value::Kind::kString && v.markup()) return "markupsafe.Markup object";
  if (v.is_undefined()) return "jinja2.runtime.Undefined object";
  return absl::StrCat(TypeName(v), " object");
}

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.bool_value();
    case Value::Kind::kInt:
      return v.int_value() != 0;
    case Value::Kind::kFloat:
      return v.float_value() != 0.0;
    case Value::Kind::kString:
      return !v.str().empty();
    case Value::Kind::kSeq:
      return !v.seq().items.empty();
    case Value::Kind::kDict:
      return v.dict().size() != 0;
    default:
      return true;
  }
}

namespace {

bool ItemsEqual(const std::vector<Value>& a, const std::vector<Value>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!Equals(a[i], b[i])) return false;
  }
  return true;
}

// dict_keys and dict_items compare as sets.
bool SetEqual(const std::vector<Value>& a, const std::vector<Value>& b) {
  if (a.size() != b.size()) return false;
  for (const Value& x : a) {
    bool found = false;
    for (const Value& y : b) {
      if (Equals(x, y)) {
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

}  // namespace

bool Equals(const Value& a, const Value& b) {
  using K = Value::Kind;
  // Python's == on container items starts with an identity check (so a namespace holding
  // itself compares without recursing).
  if (a.kind() == b.kind() && a.identity() != nullptr && a.identity() == b.identity()) {
    return true;
  }
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_number() && b.is_number()) {
    if (a.kind() == K::kFloat || b.kind() == K::kFloat) return a.float_value() == b.float_value();
    return a.int_value() == b.int_value();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kNone:
      return true;
    case K::kString:
      return a.str() == b.str();
    case K::kSeq: {
      const Sequence& x = a.seq();
      const Sequence& y = b.seq();
      if (x.kind != y.kind) return false;
      if (x.kind == SeqKind::kDictValues) return &x == &y;
      if (x.kind == SeqKind::kDictKeys || x.kind == SeqKind::kDictItems) {
        return SetEqual(x.items, y.items);
      }
      return ItemsEqual(x.items, y.items);
    }
    case K::kDict: {
      const Dict& x = a.dict();
      const Dict& y = b.dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x.entries()) {
        const Value* other = y.Find(k);
        if (other == nullptr || !Equals(v, *other)) return false;
      }
      return true;
    }
    default:
      return a.identity() == b.identity();
  }
}

absl::Status CheckHashable(const Value& v) {
  if (v.kind() == Value::Kind::kDict) return TypeError("unhashable type: 'dict'");
  if (v.kind() != Value::Kind::kSeq) return absl::OkStatus();
  switch (v.seq().kind) {
    case SeqKind::kList:
    case SeqKind::kDictKeys:
    case SeqKind::kDictItems:
      return TypeError(absl::StrCat("unhashable type: '", TypeName(v), "'"));
    case SeqKind::kTuple:
      for (const Value& item : v.seq().items) {
        absl::Status s = CheckHashable(item);
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

absl::Status UndefinedError(const Value& undefined) {
  const UndefinedInfo& info = undefined.undefined();
  if (info.security) return PyError("SecurityError", info.message);
  return PyError("UndefinedError", info.message.empty() ? "undefined value" : info.message);
}

absl::StatusOr<std::string> ToStr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::string();
    case Value::Kind::kString:
      return v.str();
    default:
      return Repr(v);
  }
}

namespace {

// repr() of everything but containers and namespaces.
absl::StatusOr<std::string> ScalarRepr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::string("Undefined");
    case Value::Kind::kNone:
      return std::string("None");
    case Value::Kind::kBool:
      return std::string(v.bool_value() ? "True" : "False");
    case Value::Kind::kInt:
      return absl::StrCat(v.int_value());
    case Value::Kind::kFloat:
      return FormatFloat(v.float_value());
    case Value::Kind::kString:
      return v.markup() ? absl::StrCat("Markup(", ReprString(v.str()), ")") : ReprString(v.str());
    case Value::Kind::kCallable:
      return Unsupported(absl::StrCat("printing the function '", v.callable().name,
                                      "' (Python prints its memory address)"));
    case Value::Kind::kGenerator:
      return Unsupported(absl::StrCat("printing a ", v.generator().type_name(),
                                      " (Python prints its memory address; add |list)"));
    default:
      return std::string();
  }
}

// repr()'s state: the nesting depth, and the namespaces whose repr is in progress (Python
// prints a dict it is already printing as {...}; only namespaces can contain themselves).
struct ReprContext {
  int depth = 0;
  std::vector<const Namespace*> active;
};

absl::StatusOr<std::string> ReprAt(const Value& v, ReprContext& ctx);

absl::StatusOr<std::string> JoinRepr(const std::vector<Value>& items, ReprContext& ctx) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.append(", ");
    absl::StatusOr<std::string> r = ReprAt(items[i], ctx);
    if (!r.ok()) return r.status();
    out.append(*r);
  }
  return out;
}

absl::StatusOr<std::string> SeqRepr(const Sequence& s, ReprContext& ctx) {
  if (s.kind == SeqKind::kRange) {
    return s.step == 1 ? absl::StrCat("range(", s.start, ", ", s.stop, ")")
                       : absl::StrCat("range(", s.start, ", ", s.stop, ", ", s.step, ")");
  }
  absl::StatusOr<std::string> inner = JoinRepr(s.items, ctx);
  if (!inner.ok()) return inner.status();
  switch (s.kind) {
    case SeqKind::kTuple:
      return s.items.size() == 1 ? absl::StrCat("(", *inner, ",)") : absl::StrCat("(", *inner, ")");
    case SeqKind::kDictKeys:
      return absl::StrCat("dict_keys([", *inner, "])");
    case SeqKind::kDictValues:
      return absl::StrCat("dict_values([", *inner, "])");
    case SeqKind::kDictItems:
      return absl::StrCat("dict_items([", *inner, "])");
    default:
      return absl::StrCat("[", *inner, "]");
  }
}

absl::StatusOr<std::string> DictRepr(const Dict& dict, ReprContext& ctx) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, item] : dict.entries()) {
    if (!first) out.append(", ");
    first = false;
    absl::StatusOr<std::string> r = ReprAt(item, ctx);
    if (!r.ok()) return r.status();
    absl::StrAppend(&out, ReprString(k), ": ", *r);
  }
  out.push_back('}');
  return out;
}

absl::StatusOr<std::string> ReprAt(const Value& v, ReprContext& ctx) {
  if (ctx.depth > kMaxReprDepth) {
    return PyError("RecursionError",
                   "maximum recursion depth exceeded while getting the repr of an object");
  }
  ++ctx.depth;
  absl::StatusOr<std::string> out;
  switch (v.kind()) {
    case Value::Kind::kSeq:
      out = SeqRepr(v.seq(), ctx);
      break;
    case Value::Kind::kDict:
      out = DictRepr(v.dict(), ctx);
      break;
    case Value::Kind::kObject:
      if (const auto* ns = dynamic_cast<const Namespace*>(&v.object())) {
        if (std::find(ctx.active.begin(), ctx.active.end(), ns) != ctx.active.end()) {
          out = std::string("<Namespace {...}>");
          break;
        }
        ctx.active.push_back(ns);
        absl::StatusOr<std::string> attrs = DictRepr(ns->attrs(), ctx);
        ctx.active.pop_back();
        out = attrs.ok() ? absl::StatusOr<std::string>(absl::StrCat("<Namespace ", *attrs, ">"))
                         : attrs;
      } else {
        out = v.object().Repr();
      }
      break;
    default:
      out = ScalarRepr(v);
  }
  --ctx.depth;
  return out;
}

}  // namespace

absl::StatusOr<std::string> Repr(const Value& v) {
  ReprContext ctx;
  return ReprAt(v, ctx);
}

absl::StatusOr<std::string> Namespace::Repr() const {
  ReprContext ctx;
  ctx.active.push_back(this);
  absl::StatusOr<std::string> attrs = DictRepr(attrs_, ctx);
  if (!attrs.ok()) return attrs.status();
  return absl::StrCat("<Namespace ", *attrs, ">");
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::vector<Value>();
    case Value::Kind::kString: {
      std::vector<Value> out;
      for (char32_t c : DecodeUtf8(v.str())) {
        std::string s;
        AppendUtf8(c, &s);
        out.push_back(Value::String(std::move(s)));
      }
      return out;
    }
    case Value::Kind::kSeq:
      return v.seq().items;
    case Value::Kind::kDict: {
      std::vector<Value> out;
      out.reserve(v.dict().size());
      for (const auto& [k, item] : v.dict().entries()) out.push_back(Value::String(k));
      return out;
    }
    case Value::Kind::kGenerator: {
      std::vector<Value> out;
      while (true) {
        absl::StatusOr<std::optional<Value>> item = v.generator().Next();
        if (!item.ok()) return item.status();
        if (!item->has_value()) return out;
        out.push_back(std::move(**item));
      }
    }
    case Value::Kind::kObject:
      if (dynamic_cast<Namespace*>(&v.object()) == nullptr) {
        return Unsupported(absl::StrCat("iterating a ", Sv(v.object().TypeName())));
      }
      break;
    default:
      break;
  }
  return TypeError(absl::StrCat("'", TypeName(v), "' object is not iterable"));
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(CodePointCount(v.str()));
    case Value::Kind::kSeq:
      return static_cast<int64_t>(v.seq().items.size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.dict().size());
    default:
      return TypeError(absl::StrCat("object of type '", TypeName(v), "' has no len()"));
  }
}

}  // namespace dserve::engine::jinja
