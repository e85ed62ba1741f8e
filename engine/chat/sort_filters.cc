#include "engine/chat/sort_filters.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/attr_getter.h"
#include "engine/chat/call_args.h"
#include "engine/chat/errors.h"
#include "engine/chat/operators.h"
#include "engine/chat/py_unicode.h"

namespace dserve::engine::jinja {
namespace {

// CPython's timsort is a binary insertion sort below this many items.
constexpr size_t kMinMerge = 64;

// jinja2's ignore_case postprocessing: str keys compare lowercased.
Value IgnoreCase(const Value& v) { return v.is_string() ? Value::String(PyLower(v.str())) : v; }

bool ContainsNaN(const Value& v) {
  if (v.kind() == Value::Kind::kFloat) return std::isnan(v.float_value());
  if (v.kind() == Value::Kind::kSeq) {
    return std::any_of(v.seq().items.begin(), v.seq().items.end(), ContainsNaN);
  }
  return false;
}

// sorted(items, key=keys[i], reverse=reverse), as CPython 3.11 computes it.
class PySorter {
 public:
  PySorter(std::vector<Value> items, std::vector<Value> keys)
      : items_(std::move(items)), keys_(std::move(keys)), order_(items_.size()) {
    std::iota(order_.begin(), order_.end(), 0);
  }

  absl::StatusOr<std::vector<Value>> Sorted(bool reverse) {
    // CPython reverses before and after sorting so that reverse=True stays stable.
    if (reverse) std::reverse(order_.begin(), order_.end());
    if (order_.size() < kMinMerge) {
      DSERVE_RETURN_IF_ERROR(SmallSort());
    } else {
      DSERVE_RETURN_IF_ERROR(LargeSort());
    }
    if (reverse) std::reverse(order_.begin(), order_.end());
    std::vector<Value> out;
    out.reserve(order_.size());
    for (size_t i : order_) out.push_back(items_[i]);
    return out;
  }

 private:
  absl::StatusOr<bool> Less(size_t a, size_t b) { return CompareOp("<", keys_[a], keys_[b]); }

  // count_run, then binarysort (CPython's listobject.c).
  absl::Status SmallSort() {
    const size_t n = order_.size();
    if (n < 2) return absl::OkStatus();
    size_t run = 2;
    DSERVE_ASSIGN_OR_RETURN(bool descending, Less(order_[1], order_[0]));
    for (; run < n; ++run) {
      DSERVE_ASSIGN_OR_RETURN(bool lt, Less(order_[run], order_[run - 1]));
      if (lt != descending) break;
    }
    if (descending) std::reverse(order_.begin(), order_.begin() + run);
    for (size_t start = run; start < n; ++start) {
      const size_t pivot = order_[start];
      size_t l = 0;
      size_t r = start;
      do {
        const size_t p = l + ((r - l) >> 1);
        DSERVE_ASSIGN_OR_RETURN(bool lt, Less(pivot, order_[p]));
        if (lt) {
          r = p;
        } else {
          l = p + 1;
        }
      } while (l < r);
      std::move_backward(order_.begin() + l, order_.begin() + start, order_.begin() + start + 1);
      order_[l] = pivot;
    }
    return absl::OkStatus();
  }

  // For a strict weak order every stable sort gives timsort's result; NaNs and values Python
  // cannot compare make the result depend on timsort's exact steps, which are not reproduced.
  absl::Status LargeSort() {
    const absl::Status refused =
        Unsupported("sorting 64 or more values that include NaN or values Python cannot order");
    if (std::any_of(keys_.begin(), keys_.end(), ContainsNaN)) return refused;
    absl::Status error;
    std::stable_sort(order_.begin(), order_.end(), [&](size_t a, size_t b) {
      if (!error.ok()) return false;
      absl::StatusOr<bool> lt = Less(a, b);
      if (!lt.ok()) {
        error = lt.status();
        return false;
      }
      return *lt;
    });
    return error.ok() ? absl::OkStatus() : refused;
  }

  std::vector<Value> items_;
  std::vector<Value> keys_;
  std::vector<size_t> order_;
};

// min() and max(): the first item whose key is strictly smaller (larger) than all before.
absl::StatusOr<Value> MinOrMax(const Value& value, const CallArgs& args, bool max) {
  DSERVE_ASSIGN_OR_RETURN(
      auto a, BindArgs(max ? "max()" : "min()", args, {"case_sensitive", "attribute"}, 0));
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  const bool case_sensitive = a[0] && Truthy(*a[0]);
  const AttrGetter getter = MakeAttrGetter(a[1]);
  size_t best = 0;
  Value best_key;
  for (size_t i = 0; i < items.size(); ++i) {
    DSERVE_ASSIGN_OR_RETURN(Value key, getter(items[i]));
    if (!case_sensitive) key = IgnoreCase(key);
    if (i == 0) {
      best_key = std::move(key);
      continue;
    }
    DSERVE_ASSIGN_OR_RETURN(bool better, CompareOp(max ? ">" : "<", key, best_key));
    if (better) {
      best = i;
      best_key = std::move(key);
    }
  }
  return items[best];
}

}  // namespace

absl::StatusOr<Value> FilterSort(const Value& value, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a,
                          BindArgs("sort()", args, {"reverse", "case_sensitive", "attribute"}, 0));
  const bool reverse = a[0] && Truthy(*a[0]);
  const bool case_sensitive = a[1] && Truthy(*a[1]);
  // jinja2's make_multi_attrgetter: "a,b" sorts by several attributes; the key is a list.
  std::vector<AttrGetter> getters;
  if (a[2] && a[2]->is_string()) {
    const std::string& spec = a[2]->str();
    size_t start = 0;
    while (true) {
      const size_t comma = spec.find(',', start);
      getters.push_back(MakeAttrGetter(Value::String(
          spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start))));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else {
    getters.push_back(MakeAttrGetter(a[2]));
  }
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  std::vector<Value> keys;
  for (const Value& item : items) {
    std::vector<Value> key;
    for (const AttrGetter& getter : getters) {
      DSERVE_ASSIGN_OR_RETURN(Value part, getter(item));
      key.push_back(case_sensitive ? part : IgnoreCase(part));
    }
    keys.push_back(Value::List(std::move(key)));
  }
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> sorted,
                          PySorter(std::move(items), std::move(keys)).Sorted(reverse));
  return Value::List(std::move(sorted));
}

absl::StatusOr<Value> FilterDictSort(const Value& value, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a,
                          BindArgs("dictsort()", args, {"case_sensitive", "by", "reverse"}, 0));
  const bool case_sensitive = a[0] && Truthy(*a[0]);
  size_t pos = 0;
  if (a[1]) {
    if (a[1]->is_string() && a[1]->str() == "value") {
      pos = 1;
    } else if (!a[1]->is_string() || a[1]->str() != "key") {
      return PyError("FilterArgumentError", "You can only sort by either \"key\" or \"value\"");
    }
  }
  if (value.is_undefined()) return UndefinedError(value);
  if (value.kind() != Value::Kind::kDict) {
    return PyError("AttributeError",
                   absl::StrCat("'", TypeName(value), "' object has no attribute 'items'"));
  }
  std::vector<Value> items;
  std::vector<Value> keys;
  for (const auto& [k, v] : value.dict().entries()) {
    items.push_back(Value::Tuple({Value::String(k), v}));
    const Value& key = pos == 0 ? items.back().seq().items[0] : v;
    keys.push_back(case_sensitive ? key : IgnoreCase(key));
  }
  DSERVE_ASSIGN_OR_RETURN(
      std::vector<Value> sorted,
      PySorter(std::move(items), std::move(keys)).Sorted(a[2] && Truthy(*a[2])));
  return Value::List(std::move(sorted));
}

absl::StatusOr<Value> FilterMin(const Value& value, const CallArgs& args) {
  return MinOrMax(value, args, false);
}

absl::StatusOr<Value> FilterMax(const Value& value, const CallArgs& args) {
  return MinOrMax(value, args, true);
}

absl::StatusOr<Value> FilterSum(const Value& value, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("sum()", args, {"attribute", "start"}, 0));
  Value total = a[1].value_or(Value::Int(0));
  if (total.is_string()) return TypeError("sum() can't sum strings [use ''.join(seq) instead]");
  const AttrGetter getter = MakeAttrGetter(a[0]);
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  for (const Value& item : items) {
    DSERVE_ASSIGN_OR_RETURN(Value v, getter(item));
    DSERVE_ASSIGN_OR_RETURN(total, BinaryOp("+", total, v));
  }
  return total;
}

}  // namespace dserve::engine::jinja
