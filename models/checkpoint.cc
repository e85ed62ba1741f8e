#include "models/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/progress.h"
#include "nlohmann/json.hpp"

namespace dserve::models {
namespace {

namespace fs = std::filesystem;

// Shard names of model.safetensors.index.json's weight_map, in first-seen order, plus the
// tensor-to-shard map itself.
struct ShardIndex {
  std::vector<std::string> shards;
  std::map<std::string, std::string> weight_map;
};

absl::StatusOr<ShardIndex> ReadIndex(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  auto root = nlohmann::json::parse(text.str(), nullptr, false);
  if (root.is_discarded() || !root.is_object() || !root.contains("weight_map") ||
      !root["weight_map"].is_object()) {
    return absl::DataLossError(
        absl::StrCat(path, ": not a JSON object with a \"weight_map\" object"));
  }
  ShardIndex index;
  for (auto it = root["weight_map"].begin(); it != root["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return absl::DataLossError(
          absl::StrCat(path, ": weight_map entry ", it.key(), " is not a file name"));
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.find('/') != std::string::npos || shard == ".." || shard.empty()) {
      return absl::DataLossError(
          absl::StrCat(path, ": weight_map entry ", it.key(), " names '", shard,
                       "', which is not a file in the checkpoint folder"));
    }
    if (std::find(index.shards.begin(), index.shards.end(), shard) == index.shards.end()) {
      index.shards.push_back(shard);
    }
    index.weight_map[it.key()] = shard;
  }
  return index;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir,
                                                            bool show_progress) {
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->dir_ = dir;
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";

  ShardIndex index;
  const bool sharded = fs::exists(index_path);
  if (sharded) {
    DSERVE_ASSIGN_OR_RETURN(index, ReadIndex(index_path));
  } else if (fs::exists(single_path)) {
    index.shards.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(
        dir, " holds neither model.safetensors nor model.safetensors.index.json"));
  }

  int64_t total_bytes = 0;
  for (const std::string& shard : index.shards) {
    std::error_code ec;
    const auto size = fs::file_size(dir + "/" + shard, ec);
    if (ec) {
      return absl::NotFoundError(absl::StrCat(
          dir, "/", shard, " is missing", sharded ? " (named by model.safetensors.index.json)" : ""));
    }
    total_bytes += static_cast<int64_t>(size);
  }
  Progress progress(absl::StrCat("mapping ", index.shards.size(), " shard(s) of ", dir),
                    total_bytes, "B", show_progress);
  for (const std::string& shard : index.shards) {
    DSERVE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir + "/" + shard));
    progress.Advance(static_cast<int64_t>(file->size()));
    for (const auto& [name, entry] : file->tensors()) {
      if (sharded) {
        auto it = index.weight_map.find(name);
        // A tensor the index does not list, or lists in another shard, is ignored as the
        // Hugging Face loader would: the index decides where each weight lives.
        if (it == index.weight_map.end() || it->second != shard) continue;
      }
      ckpt->index_.emplace(name, &entry);
    }
    ckpt->files_.push_back(std::move(file));
  }
  progress.Finish();
  for (const auto& [name, shard] : index.weight_map) {
    if (!ckpt->index_.contains(name)) {
      return absl::DataLossError(absl::StrCat("model.safetensors.index.json in ", dir,
                                              " places tensor ", name, " in ", shard,
                                              ", which does not contain it"));
    }
  }
  return ckpt;
}

const TensorEntry* Checkpoint::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

absl::StatusOr<const TensorEntry*> Checkpoint::Get(const std::string& name) const {
  if (const TensorEntry* e = Find(name)) return e;
  return absl::NotFoundError(absl::StrCat("checkpoint ", dir_, " has no tensor ", name));
}

}  // namespace dserve::models
