// Checkpoint: the tensors of a Hugging Face checkpoint folder, single-file
// (model.safetensors) or sharded (model.safetensors.index.json + shards), all memory-mapped.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "models/safetensors.h"

namespace dserve::models {

class Checkpoint {
 public:
  // Opens every shard and checks each header; `show_progress` reports per-shard progress.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir,
                                                          bool show_progress = true);

  const std::string& dir() const { return dir_; }
  // nullptr when absent.
  const TensorEntry* Find(const std::string& name) const;
  // The tensor or an error naming it and the folder.
  absl::StatusOr<const TensorEntry*> Get(const std::string& name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // Every tensor, by name.
  const std::unordered_map<std::string, const TensorEntry*>& tensors() const { return index_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, const TensorEntry*> index_;
};

}  // namespace dserve::models
