#include "engine/chat/operators.h"
#include "core/utf8.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/chat/call_args.h"
#include "engine/chat/errors.h"
#include "engine/chat/methods.h"
#include "engine/chat/py_format.h"
#include "engine/chat/py_unicode.h"

namespace dserve::engine::jinja {
namespace {

// Larger results are refused rather than allocated (Python would raise MemoryError later).
constexpr int64_t kMaxRepeatBytes = int64_t{1} << 28;

absl::Status Unsupported2(std::string_view op, const Value& a, const Value& b) {
  return TypeError(absl::StrCat("unsupported operand type(s) for ", Sv(op), ": '", TypeName(a),
                                "' and '", TypeName(b), "'"));
}

absl::Status Overflow() {
  return Unsupported("integer results beyond 64 bits (Python integers are unbounded)");
}

absl::StatusOr<Value> Repeat(const Value& seq, int64_t n) {
  if (n < 0) n = 0;
  if (seq.is_string()) {
    if (static_cast<double>(seq.str().size()) * static_cast<double>(n) > kMaxRepeatBytes) {
      return PyError("MemoryError", "string repetition too large");
    }
    std::string out;
    out.reserve(seq.str().size() * n);
    for (int64_t i = 0; i < n; ++i) out.append(seq.str());
    return Value::String(std::move(out), seq.markup());
  }
  const Sequence& s = seq.seq();
  if (static_cast<double>(s.items.size()) * static_cast<double>(n) > kMaxRepeatBytes / 16) {
    return PyError("MemoryError", "sequence repetition too large");
  }
  std::vector<Value> items;
  for (int64_t i = 0; i < n; ++i) items.insert(items.end(), s.items.begin(), s.items.end());
  return s.kind == SeqKind::kTuple ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
}

bool IsListOrTuple(const Value& v) {
  return v.kind() == Value::Kind::kSeq &&
         (v.seq().kind == SeqKind::kList || v.seq().kind == SeqKind::kTuple);
}

absl::StatusOr<Value> Add(const Value& a, const Value& b) {
  if (a.is_string()) {
    if (!b.is_string()) {
      // markupsafe.Markup defines __add__, so Python reports it as an operand mismatch.
      if (a.markup()) return Unsupported2("+", a, b);
      return TypeError(absl::StrCat("can only concatenate str (not \"", TypeName(b), "\") to str"));
    }
    // markupsafe.Markup escapes the plain str it is concatenated with.
    if (a.markup() && !b.markup()) return Value::String(a.str() + HtmlEscape(b.str()), true);
    if (b.markup() && !a.markup()) return Value::String(HtmlEscape(a.str()) + b.str(), true);
    return Value::String(a.str() + b.str(), a.markup());
  }
  if (IsListOrTuple(a)) {
    const bool tuple = a.seq().kind == SeqKind::kTuple;
    if (!IsListOrTuple(b) || b.seq().kind != a.seq().kind) {
      return TypeError(absl::StrCat("can only concatenate ", tuple ? "tuple" : "list", " (not \"",
                                    TypeName(b), "\") to ", tuple ? "tuple" : "list"));
    }
    std::vector<Value> items = a.seq().items;
    items.insert(items.end(), b.seq().items.begin(), b.seq().items.end());
    return tuple ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
  }
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) {
      return Value::Float(a.float_value() + b.float_value());
    }
    int64_t r;
    if (__builtin_add_overflow(a.int_value(), b.int_value(), &r)) return Overflow();
    return Value::Int(r);
  }
  return Unsupported2("+", a, b);
}

// CPython's float divmod: the floor quotient and a remainder with the divisor's sign.
void FloatDivMod(double x, double y, double* floordiv, double* mod) {
  double m = std::fmod(x, y);
  double div = (x - m) / y;
  if (m != 0) {
    if ((y < 0) != (m < 0)) {
      m += y;
      div -= 1.0;
    }
  } else {
    m = std::copysign(0.0, y);
  }
  double fd;
  if (div != 0) {
    fd = std::floor(div);
    if (div - fd > 0.5) fd += 1.0;
  } else {
    fd = std::copysign(0.0, x / y);
  }
  *floordiv = fd;
  *mod = m;
}

absl::StatusOr<Value> Arith(std::string_view op, const Value& a, const Value& b) {
  const bool is_float = a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat;
  if (op == "-") {
    if (is_float) return Value::Float(a.float_value() - b.float_value());
    int64_t r;
    if (__builtin_sub_overflow(a.int_value(), b.int_value(), &r)) return Overflow();
    return Value::Int(r);
  }
  if (op == "*") {
    if (is_float) return Value::Float(a.float_value() * b.float_value());
    int64_t r;
    if (__builtin_mul_overflow(a.int_value(), b.int_value(), &r)) return Overflow();
    return Value::Int(r);
  }
  if (op == "/") {
    if (b.float_value() == 0) {
      return PyError("ZeroDivisionError", is_float ? "float division by zero" : "division by zero");
    }
    return Value::Float(a.float_value() / b.float_value());
  }
  if (op == "//" || op == "%") {
    const bool floor_div = op == "//";
    if (is_float) {
      if (b.float_value() == 0) {
        return PyError("ZeroDivisionError",
                       floor_div ? "float floor division by zero" : "float modulo");
      }
      double q, m;
      FloatDivMod(a.float_value(), b.float_value(), &q, &m);
      return Value::Float(floor_div ? q : m);
    }
    const int64_t x = a.int_value();
    const int64_t y = b.int_value();
    if (y == 0) {
      return PyError("ZeroDivisionError",
                     floor_div ? "integer division or modulo by zero" : "integer modulo by zero");
    }
    if (x == std::numeric_limits<int64_t>::min() && y == -1) {
      if (floor_div) return Overflow();
      return Value::Int(0);
    }
    int64_t q = x / y;
    int64_t r = x % y;
    if (r != 0 && ((r < 0) != (y < 0))) {
      --q;
      r += y;
    }
    return Value::Int(floor_div ? q : r);
  }
  // "**"
  if (!is_float && b.int_value() >= 0) {
    int64_t result = 1;
    int64_t base = a.int_value();
    int64_t e = b.int_value();
    while (e > 0) {
      if (e & 1) {
        if (__builtin_mul_overflow(result, base, &result)) return Overflow();
      }
      e >>= 1;
      if (e > 0 && __builtin_mul_overflow(base, base, &base)) return Overflow();
    }
    return Value::Int(result);
  }
  const double x = a.float_value();
  const double y = b.float_value();
  if (x == 0 && y < 0) {
    return PyError("ZeroDivisionError", "0.0 cannot be raised to a negative power");
  }
  if (x < 0 && y != std::floor(y)) return Unsupported("powers with complex results");
  const double r = std::pow(x, y);
  if (std::isinf(r) && std::isfinite(x) && std::isfinite(y)) {
    return PyError("OverflowError", "(34, 'Numerical result out of range')");
  }
  return Value::Float(r);
}

// Python's <, for one of "<", "<=", ">", ">=".
absl::StatusOr<bool> Order(std::string_view op, const Value& a, const Value& b) {
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  int cmp = 0;  // <0, 0, >0
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) {
      const double x = a.float_value();
      const double y = b.float_value();
      if (std::isnan(x) || std::isnan(y)) return false;
      cmp = x < y ? -1 : x > y ? 1 : 0;
    } else {
      cmp = a.int_value() < b.int_value() ? -1 : a.int_value() > b.int_value() ? 1 : 0;
    }
  } else if (a.is_string() && b.is_string()) {
    // UTF-8 byte order is code point order.
    cmp = a.str().compare(b.str());
  } else if (IsListOrTuple(a) && IsListOrTuple(b) && a.seq().kind == b.seq().kind) {
    const auto& x = a.seq().items;
    const auto& y = b.seq().items;
    size_t i = 0;
    while (i < x.size() && i < y.size() && Equals(x[i], y[i])) ++i;
    if (i < x.size() && i < y.size()) return Order(op, x[i], y[i]);
    cmp = x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  } else {
    return TypeError(absl::StrCat("'", Sv(op), "' not supported between instances of '",
                                  TypeName(a), "' and '", TypeName(b), "'"));
  }
  if (op == "<") return cmp < 0;
  if (op == "<=") return cmp <= 0;
  if (op == ">") return cmp > 0;
  return cmp >= 0;
}

std::string NoAttribute(const Value& obj, std::string_view name) {
  return absl::StrCat(ReprString(ObjectTypeRepr(obj)), " has no attribute ", ReprString(name));
}

// The Undefined jinja2 returns for obj[key] when neither an item nor an attribute exists.
absl::StatusOr<Value> MissingItem(const Value& obj, const Value& key) {
  if (key.is_string()) return Value::Undefined(NoAttribute(obj, key.str()));
  absl::StatusOr<std::string> r = Repr(key);
  if (!r.ok()) return r.status();
  return Value::Undefined(absl::StrCat(ObjectTypeRepr(obj), " has no element ", *r));
}

// An attribute of a namespace or loop object; the sandbox refuses names starting with '_'.
absl::StatusOr<std::optional<Value>> ObjectAttr(const Value& obj, std::string_view name) {
  absl::StatusOr<std::optional<Value>> attr = obj.object().GetAttr(name);
  if (!attr.ok() || !attr->has_value() || name.empty() || name[0] != '_') return attr;
  return std::optional<Value>(
      Value::Undefined(absl::StrCat("access to attribute '", Sv(name), "' of '", TypeName(obj),
                                    "' object is unsafe."),
                       /*security=*/true));
}

bool IsDunder(std::string_view name) {
  return name.size() > 4 && name.substr(0, 2) == "__" && name.substr(name.size() - 2) == "__";
}

// Python's slice.indices(length): the normalised start, stop and step.
void SliceIndices(int64_t length, const Value& start, const Value& stop, int64_t step, int64_t* lo,
                  int64_t* hi) {
  auto adjust = [&](const Value& v, int64_t dflt) {
    if (v.is_none()) return dflt;
    int64_t i = v.int_value();
    if (i < 0) {
      i += length;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= length) {
      i = step < 0 ? length - 1 : length;
    }
    return i;
  };
  *lo = adjust(start, step < 0 ? length - 1 : 0);
  *hi = adjust(stop, step < 0 ? -1 : length);
}

std::vector<int64_t> SliceSelection(int64_t length, int64_t lo, int64_t hi, int64_t step) {
  std::vector<int64_t> out;
  if (step > 0) {
    for (int64_t i = lo; i < hi; i += step) out.push_back(i);
  } else {
    for (int64_t i = lo; i > hi; i += step) out.push_back(i);
  }
  return out;
}

}  // namespace

absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b) {
  // str % x formats (before any Undefined operand is looked at, as Python tries str first).
  if (op == "%" && a.is_string()) return Unsupported("printf-style formatting of strings (%)");
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (op == "+") return Add(a, b);
  if (op == "*") {
    // markupsafe.Markup repeats by an int and otherwise reports an operand mismatch.
    const bool a_markup = a.is_string() && a.markup();
    const bool b_markup = b.is_string() && b.markup();
    if ((a_markup && !b.is_integral() && !b.is_string() && !IsListOrTuple(b)) ||
        (b_markup && !a.is_integral() && !a.is_string() && !IsListOrTuple(a))) {
      return Unsupported2("*", a, b);
    }
    if (a_markup && !b.is_integral()) {
      // Python falls back to repeating the other operand, a sequence, by the Markup.
      return TypeError("can't multiply sequence by non-int of type 'Markup'");
    }
    if ((a.is_string() || IsListOrTuple(a)) && !b.is_number()) {
      return TypeError(
          absl::StrCat("can't multiply sequence by non-int of type '", TypeName(b), "'"));
    }
    if ((b.is_string() || IsListOrTuple(b)) && !a.is_number()) {
      return TypeError(
          absl::StrCat("can't multiply sequence by non-int of type '", TypeName(a), "'"));
    }
    if ((a.is_string() || IsListOrTuple(a)) && b.kind() == Value::Kind::kFloat) {
      return TypeError("can't multiply sequence by non-int of type 'float'");
    }
    if ((b.is_string() || IsListOrTuple(b)) && a.kind() == Value::Kind::kFloat) {
      return TypeError("can't multiply sequence by non-int of type 'float'");
    }
    if (a.is_string() || IsListOrTuple(a)) return Repeat(a, b.int_value());
    if (b.is_string() || IsListOrTuple(b)) return Repeat(b, a.int_value());
  }
  if (!a.is_number() || !b.is_number()) {
    return Unsupported2(op == "**" ? "** or pow()" : op, a, b);
  }
  return Arith(op, a, b);
}

absl::StatusOr<Value> UnaryOp(std::string_view op, const Value& v) {
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_number()) {
    return TypeError(absl::StrCat("bad operand type for unary ", Sv(op), ": '", TypeName(v), "'"));
  }
  if (v.kind() == Value::Kind::kFloat) {
    return Value::Float(op == "-" ? -v.float_value() : v.float_value());
  }
  if (op == "+") return Value::Int(v.int_value());
  if (v.int_value() == std::numeric_limits<int64_t>::min()) return Overflow();
  return Value::Int(-v.int_value());
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        return TypeError(
            absl::StrCat("'in <string>' requires string as left operand, not ", TypeName(item)));
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kSeq:
      for (const Value& v : container.seq().items) {
        if (Equals(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict: {
      absl::Status hashable = CheckHashable(item);
      if (!hashable.ok()) return hashable;
      return item.is_string() && container.dict().Find(item.str()) != nullptr;
    }
    case Value::Kind::kGenerator:
      while (true) {
        absl::StatusOr<std::optional<Value>> next = container.generator().Next();
        if (!next.ok()) return next.status();
        if (!next->has_value()) return false;
        if (Equals(**next, item)) return true;
      }
    default:
      return TypeError(
          absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
  }
}

absl::StatusOr<bool> CompareOp(std::string_view op, const Value& a, const Value& b) {
  if (op == "==") return Equals(a, b);
  if (op == "!=") return !Equals(a, b);
  if (op == "in") return Contains(b, a);
  if (op == "notin") {
    absl::StatusOr<bool> in = Contains(b, a);
    if (!in.ok()) return in.status();
    return !*in;
  }
  return Order(op, a, b);
}

absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (IsDunder(name)) {
    return Value::Undefined(absl::StrCat("access to attribute '", Sv(name), "' of '", TypeName(obj),
                                         "' object is unsafe."),
                            /*security=*/true);
  }
  if (std::optional<Value> method = PythonAttribute(obj, name)) return *method;
  if (obj.kind() == Value::Kind::kDict) {
    if (const Value* v = obj.dict().Find(name)) return *v;
  } else if (obj.kind() == Value::Kind::kObject) {
    absl::StatusOr<std::optional<Value>> attr = ObjectAttr(obj, name);
    if (!attr.ok()) return attr.status();
    if (attr->has_value()) return **attr;
  }
  return Value::Undefined(NoAttribute(obj, name));
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  switch (obj.kind()) {
    case Value::Kind::kDict:
      if (key.is_string()) {
        if (const Value* v = obj.dict().Find(key.str())) return *v;
      }
      break;
    case Value::Kind::kSeq: {
      const Sequence& s = obj.seq();
      const bool indexable =
          s.kind == SeqKind::kList || s.kind == SeqKind::kTuple || s.kind == SeqKind::kRange;
      if (indexable && key.is_integral()) {
        int64_t i = key.int_value();
        const auto n = static_cast<int64_t>(s.items.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return s.items[i];
      }
      break;
    }
    case Value::Kind::kString:
      if (key.is_integral()) {
        const std::u32string cps = DecodeUtf8(obj.str());
        int64_t i = key.int_value();
        const auto n = static_cast<int64_t>(cps.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) {
          std::string out;
          AppendUtf8(cps[i], &out);
          return Value::String(std::move(out), obj.markup());
        }
      }
      break;
    default:
      break;
  }
  if (key.is_string()) {
    // jinja2 falls back to the attribute of that name (dict methods, namespace attributes).
    if (IsDunder(key.str())) return GetAttr(obj, key.str());
    if (std::optional<Value> method = PythonAttribute(obj, key.str())) return *method;
    if (obj.kind() == Value::Kind::kObject) {
      absl::StatusOr<std::optional<Value>> attr = ObjectAttr(obj, key.str());
      if (!attr.ok()) return attr.status();
      if (attr->has_value()) return **attr;
    }
  }
  return MissingItem(obj, key);
}

absl::StatusOr<Value> GetSlice(const Value& obj, const Value& start, const Value& stop,
                               const Value& step) {
  // jinja2 slices with Python's own obj[a:b:c] (not environment.getitem): errors propagate.
  if (obj.is_undefined()) return UndefinedError(obj);
  if (obj.kind() == Value::Kind::kDict) return TypeError("unhashable type: 'slice'");
  const bool sliceable =
      obj.is_string() || (obj.kind() == Value::Kind::kSeq &&
                          (obj.seq().kind == SeqKind::kList || obj.seq().kind == SeqKind::kTuple ||
                           obj.seq().kind == SeqKind::kRange));
  if (!sliceable) {
    return TypeError(absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
  }
  for (const Value* bound : {&start, &stop, &step}) {
    if (!bound->is_none() && !bound->is_integral()) {
      return TypeError("slice indices must be integers or None or have an __index__ method");
    }
  }
  const int64_t st = step.is_none() ? 1 : step.int_value();
  if (st == 0) return ValueError("slice step cannot be zero");
  if (obj.is_string()) {
    const std::u32string cps = DecodeUtf8(obj.str());
    int64_t lo, hi;
    SliceIndices(static_cast<int64_t>(cps.size()), start, stop, st, &lo, &hi);
    std::u32string out;
    for (int64_t i : SliceSelection(cps.size(), lo, hi, st)) out.push_back(cps[i]);
    return Value::String(EncodeUtf8(out), obj.markup());
  }
  const Sequence& s = obj.seq();
  int64_t lo, hi;
  SliceIndices(static_cast<int64_t>(s.items.size()), start, stop, st, &lo, &hi);
  auto result = std::make_shared<Sequence>();
  result->kind = s.kind;
  for (int64_t i : SliceSelection(s.items.size(), lo, hi, st)) result->items.push_back(s.items[i]);
  if (s.kind == SeqKind::kRange) {
    // range(10)[::2] is range(0, 10, 2): Python slices ranges arithmetically.
    result->start = s.start + lo * s.step;
    result->stop = s.start + hi * s.step;
    result->step = s.step * st;
  }
  return Value::Seq(std::move(result));
}

}  // namespace dserve::engine::jinja
