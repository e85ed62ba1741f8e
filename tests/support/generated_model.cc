#include "tests/support/generated_model.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <utility>

#include "models/model_generator.h"
#include "tests/support/test_env.h"

namespace dserve::testing {

const std::string& GeneratedModelDir(const std::string& preset, uint64_t seed) {
  static std::mutex mu;
  static std::map<std::pair<std::string, uint64_t>, std::string> dirs;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(preset, seed);
  if (auto it = dirs.find(key); it != dirs.end()) return it->second;
  models::GenerateOptions o;
  o.preset = preset;
  o.seed = seed;
  o.out_dir = ScratchDir("model-" + preset) + "/model";
  o.show_progress = false;
  const absl::Status s = models::GenerateModel(o);
  EXPECT_TRUE(s.ok()) << s << " (DSERVE_TOKENIZER_DIR must hold the tokenizer files)";
  return dirs[key] = o.out_dir;
}

}  // namespace dserve::testing
