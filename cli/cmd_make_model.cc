// dserve make-model: writes a random-weight checkpoint of a preset in the published layout.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/model_session.h"
#include "models/model_generator.h"
#include "models/presets.h"

namespace dserve::cli {

int RunMakeModel(const Args& args) {
  std::string presets;
  for (const models::Preset& p : models::AllPresets()) {
    absl::StrAppend(&presets, "\n      ", p.name, ": ", p.description);
  }
  const std::vector<FlagSpec> specs = {
      {"preset", absl::StrCat("which model:", presets), ""},
      {"config", "a config.json to write instead of a preset's (with --weights: a trained model)",
       ""},
      {"weights", "F32 .safetensors with every weight by name (models/training/ writes one); "
                  "written through the same FP8/BF16 conversion instead of random values",
       ""},
      {"seed", "random seed (same seed, same bytes)", "0"},
      {"out", "output folder", "", false, true},
      {"tokenizer-dir", "folder with tokenizer.json and tokenizer_config.json",
       models::DefaultTokenizerDir()},
      {"shard-mb", "largest shard in MB (the checkpoint is split into shards)", "100"},
  };
  Flags flags;
  int code;
  if (!ParseOrExit("make-model", "Write a DeepSeek-architecture checkpoint with random (or given) weights.",
                   specs, args, &flags, &code)) {
    return code;
  }
  auto seed = flags.GetInt("seed", 0, INT64_MAX);
  if (!seed.ok()) return ReportError("make-model", seed.status());
  auto shard_mb = flags.GetInt("shard-mb", 1, 1 << 20);
  if (!shard_mb.ok()) return ReportError("make-model", shard_mb.status());
  models::GenerateOptions o;
  o.preset = flags.Get("preset");
  o.config_path = flags.Get("config");
  o.weights_path = flags.Get("weights");
  o.seed = static_cast<uint64_t>(*seed);
  o.out_dir = flags.Get("out");
  o.tokenizer_dir = flags.Get("tokenizer-dir");
  o.max_shard_bytes = *shard_mb << 20;
  if (absl::Status s = models::GenerateModel(o); !s.ok()) return ReportError("make-model", s);
  if (!o.weights_path.empty()) {
    std::printf("wrote %s with the weights of %s to %s\n",
                (o.preset.empty() ? o.config_path : o.preset).c_str(), o.weights_path.c_str(),
                o.out_dir.c_str());
  } else {
    std::printf("wrote %s (seed %llu) to %s\n",
                (o.preset.empty() ? o.config_path : o.preset).c_str(),
                static_cast<unsigned long long>(o.seed), o.out_dir.c_str());
  }
  return 0;
}

}  // namespace dserve::cli
