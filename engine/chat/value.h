// Values of the template language: the Python objects a jinja2 template sees (None, bool, int,
// float, str, list, tuple, dict, range, dict views, generators, callables, namespace(), the loop
// object and jinja2's Undefined), with Python's truthiness, equality, str() and repr().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dserve::engine::jinja {

class Value;

// A str; markup marks the markupsafe.Markup that `safe` and `escape` return (it changes how
// `+` and `*` combine it with other values, as in Python).
struct PyString {
  std::string text;
  bool markup = false;
};

// Which Python type a sequence is: it decides printing, equality, indexing and error names.
enum class SeqKind { kList, kTuple, kRange, kDictKeys, kDictValues, kDictItems };

struct Sequence {
  SeqKind kind = SeqKind::kList;
  std::vector<Value> items;
  // range(start, stop, step) prints as such; `items` holds its values.
  int64_t start = 0;
  int64_t stop = 0;
  int64_t step = 1;
};

// Python dict with str keys (JSON objects and template dict literals), in insertion order.
class Dict {
 public:
  const Value* Find(std::string_view key) const;
  // Replaces the value of an existing key (keeping its position) or appends.
  void Set(std::string key, Value value);
  // Appends without looking for an existing key: for callers that know keys are unique.
  void Append(std::string key, Value value);
  const std::vector<std::pair<std::string, Value>>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }

 private:
  std::vector<std::pair<std::string, Value>> entries_;
};

// What using an Undefined raises: jinja2's UndefinedError, or SecurityError for the attributes
// the sandbox refuses (e.g. dict.update).
struct UndefinedInfo {
  std::string message;
  bool security = false;
};

struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
};

struct Callable {
  // For messages: "str.split", "range", "raise_exception".
  std::string name;
  std::function<absl::StatusOr<Value>(const CallArgs&)> fn;
};

// A Python iterator (what map/select/items/reverse return): lazy and single pass; printing it
// is refused because Python prints its memory address.
class Generator {
 public:
  using NextFn = std::function<absl::StatusOr<std::optional<Value>>()>;
  // type_name: Python's, for messages ("generator", "list_reverseiterator").
  explicit Generator(NextFn next, std::string type_name = "generator")
      : next_(std::move(next)), type_name_(std::move(type_name)) {}
  absl::StatusOr<std::optional<Value>> Next();
  const std::string& type_name() const { return type_name_; }

 private:
  NextFn next_;
  std::string type_name_;
  bool done_ = false;
};

// Objects with attributes: namespace() and the loop variable.
class Object {
 public:
  virtual ~Object() = default;
  // type(x).__name__ and its module, for messages and repr.
  virtual std::string_view TypeName() const = 0;
  virtual std::string_view ModuleName() const = 0;
  // The attribute, or nullopt when the object has none.
  virtual absl::StatusOr<std::optional<Value>> GetAttr(std::string_view name) = 0;
  virtual absl::StatusOr<std::string> Repr() const = 0;
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kSeq,
    kDict,
    kCallable,
    kGenerator,
    kObject
  };

  // Undefined with jinja2's generic message.
  Value();
  static Value Undefined(std::string message, bool security = false);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s, bool markup = false);
  static Value List(std::vector<Value> items);
  static Value Tuple(std::vector<Value> items);
  static Value Seq(std::shared_ptr<const Sequence> seq);
  static Value FromDict(std::shared_ptr<const Dict> dict);
  static Value Function(std::string name, std::function<absl::StatusOr<Value>(const CallArgs&)> fn);
  static Value FromGenerator(std::shared_ptr<Generator> gen);
  static Value FromObject(std::shared_ptr<Object> obj);

  Kind kind() const { return static_cast<Kind>(storage_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_string() const { return kind() == Kind::kString; }
  // bool, int or float: Python's numbers (bool is an int subclass).
  bool is_number() const;
  // int or bool, usable as an index or count.
  bool is_integral() const { return kind() == Kind::kInt || kind() == Kind::kBool; }

  const UndefinedInfo& undefined() const;
  bool bool_value() const { return std::get<bool>(storage_); }
  int64_t int_value() const;   // int or bool
  double float_value() const;  // any number
  const std::string& str() const { return std::get<StringPtr>(storage_)->text; }
  bool markup() const { return std::get<StringPtr>(storage_)->markup; }
  const Sequence& seq() const { return *std::get<SeqPtr>(storage_); }
  const Dict& dict() const { return *std::get<DictPtr>(storage_); }
  const Callable& callable() const { return *std::get<CallablePtr>(storage_); }
  Generator& generator() const { return *std::get<GeneratorPtr>(storage_); }
  Object& object() const { return *std::get<ObjectPtr>(storage_); }
  const void* identity() const;  // for `is sameas` on containers

 private:
  using StringPtr = std::shared_ptr<const PyString>;
  using SeqPtr = std::shared_ptr<const Sequence>;
  using DictPtr = std::shared_ptr<const Dict>;
  using CallablePtr = std::shared_ptr<const Callable>;
  using GeneratorPtr = std::shared_ptr<Generator>;
  using ObjectPtr = std::shared_ptr<Object>;
  using UndefinedPtr = std::shared_ptr<const UndefinedInfo>;
  // The index of each alternative is its Kind.
  std::variant<UndefinedPtr, std::monostate, bool, int64_t, double, StringPtr, SeqPtr, DictPtr,
               CallablePtr, GeneratorPtr, ObjectPtr>
      storage_;
};

// jinja2's namespace(): the one mutable object (`{% set ns.attr = ... %}`).
class Namespace : public Object {
 public:
  std::string_view TypeName() const override { return "Namespace"; }
  std::string_view ModuleName() const override { return "jinja2.utils"; }
  absl::StatusOr<std::optional<Value>> GetAttr(std::string_view name) override;
  absl::StatusOr<std::string> Repr() const override;
  void SetAttr(std::string name, Value value) { attrs_.Set(std::move(name), std::move(value)); }
  const Dict& attrs() const { return attrs_; }

 private:
  Dict attrs_;
};

// type(x).__name__: "str", "NoneType", "dict_items", "Namespace", ...
std::string TypeName(const Value& v);
// jinja2's object_type_repr, used in undefined messages: "dict object", "None",
// "jinja2.utils.Namespace object".
std::string ObjectTypeRepr(const Value& v);

bool Truthy(const Value& v);
// Python ==.
bool Equals(const Value& a, const Value& b);
// hash(v): TypeError "unhashable type: 'list'" for lists, dicts and dict views (also inside a
// tuple), OK otherwise.
absl::Status CheckHashable(const Value& v);
// The error that using an Undefined raises.
absl::Status UndefinedError(const Value& undefined);

// Nesting deeper than this is refused with Python's RecursionError by repr() and json.dumps.
inline constexpr int kMaxReprDepth = 900;

// str(v) and repr(v). Callables and generators are refused: Python prints their address.
absl::StatusOr<std::string> ToStr(const Value& v);
absl::StatusOr<std::string> Repr(const Value& v);

// list(v): the items iteration yields (consumes a generator).
absl::StatusOr<std::vector<Value>> Iterate(const Value& v);
// len(v).
absl::StatusOr<int64_t> Length(const Value& v);

}  // namespace dserve::engine::jinja
