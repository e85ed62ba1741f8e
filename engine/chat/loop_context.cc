#include "engine/chat/loop_context.h"

#include "absl/strings/str_cat.h"
#include "engine/chat/errors.h"

namespace dserve::engine::jinja {

absl::StatusOr<std::optional<Value>> LoopContext::GetAttr(std::string_view name) {
  const auto length = static_cast<int64_t>(items_.size());
  const auto index0 = static_cast<int64_t>(index0_);
  if (name == "index0") return Value::Int(index0);
  if (name == "index") return Value::Int(index0 + 1);
  if (name == "revindex") return Value::Int(length - index0);
  if (name == "revindex0") return Value::Int(length - index0 - 1);
  if (name == "first") return Value::Bool(index0 == 0);
  if (name == "last") return Value::Bool(index0 + 1 == length);
  if (name == "length") return Value::Int(length);
  if (name == "depth") return Value::Int(1);
  if (name == "depth0") return Value::Int(0);
  if (name == "previtem") {
    if (index0 == 0) return Value::Undefined("there is no previous item");
    return items_[index0_ - 1];
  }
  if (name == "nextitem") {
    if (index0 + 1 >= length) return Value::Undefined("there is no next item");
    return items_[index0_ + 1];
  }
  if (name == "cycle") {
    return Value::Function("loop.cycle", [index0](const CallArgs& call) -> absl::StatusOr<Value> {
      if (!call.kwargs.empty()) return TypeError("cycle() got an unexpected keyword argument");
      if (call.args.empty()) return TypeError("no items for cycling given");
      return call.args[index0 % static_cast<int64_t>(call.args.size())];
    });
  }
  if (name == "changed") {
    std::shared_ptr<LoopContext> self = shared_from_this();
    return Value::Function("loop.changed", [self](const CallArgs& call) -> absl::StatusOr<Value> {
      if (!call.kwargs.empty()) return TypeError("changed() got an unexpected keyword argument");
      const std::vector<Value>& now = call.args;
      bool same = self->last_changed_.has_value() && self->last_changed_->size() == now.size();
      for (size_t i = 0; same && i < now.size(); ++i)
        same = Equals((*self->last_changed_)[i], now[i]);
      if (same) return Value::Bool(false);
      self->last_changed_ = now;
      return Value::Bool(true);
    });
  }
  return std::nullopt;
}

absl::StatusOr<std::string> LoopContext::Repr() const {
  return absl::StrCat("<LoopContext ", index0_ + 1, "/", items_.size(), ">");
}

}  // namespace dserve::engine::jinja
