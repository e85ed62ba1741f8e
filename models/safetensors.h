// SafetensorsFile: one memory-mapped .safetensors file with its header parsed and every
// tensor's extent checked against the file, so later reads can never leave the mapping.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/mapped_file.h"

namespace dserve::models {

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping
  size_t bytes = 0;
  const std::string* file = nullptr;  // path of the file holding it

  int64_t numel() const;
  std::string ShapeString() const;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  size_t size() const { return file_.size(); }
  const std::map<std::string, TensorEntry>& tensors() const { return tensors_; }
  const TensorEntry* Find(const std::string& name) const;
  void Prefetch() const { file_.Prefetch(0, file_.size()); }

 private:
  absl::Status ParseHeader();

  MappedFile file_;
  std::map<std::string, TensorEntry> tensors_;
};

}  // namespace dserve::models
