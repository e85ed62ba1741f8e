// The `loop` variable of a for loop: jinja2's LoopContext (index, index0, revindex, revindex0,
// first, last, length, depth, previtem, nextitem, cycle(), changed()).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "engine/chat/value.h"

namespace dserve::engine::jinja {

class LoopContext : public Object, public std::enable_shared_from_this<LoopContext> {
 public:
  explicit LoopContext(std::vector<Value> items) : items_(std::move(items)) {}

  // Moves to the iteration of items()[index0].
  void SetIndex(size_t index0) { index0_ = index0; }
  const std::vector<Value>& items() const { return items_; }

  std::string_view TypeName() const override { return "LoopContext"; }
  std::string_view ModuleName() const override { return "jinja2.runtime"; }
  absl::StatusOr<std::optional<Value>> GetAttr(std::string_view name) override;
  absl::StatusOr<std::string> Repr() const override;

 private:
  std::vector<Value> items_;
  size_t index0_ = 0;
  // The arguments of the last changed() call; nullopt before the first.
  std::optional<std::vector<Value>> last_changed_;
};

}  // namespace dserve::engine::jinja
