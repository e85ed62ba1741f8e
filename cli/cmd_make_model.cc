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
  absl::StrAppend(&presets,
                  "\n      v3-layers-N: DeepSeek-V3's exact dimensions with N layers (N = 1..61, "
                  "the first dense), FP8, no MTP; N <= 4 fits one H200 (about 4.3 GB + 11.5 GB "
                  "per MoE layer)");
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
      {"threads", "shards written at once (0: one per core); the bytes do not depend on it", "0"},
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
  auto threads = flags.GetInt("threads", 0, 1024);
  if (!threads.ok()) return ReportError("make-model", threads.status());
  models::GenerateOptions o;
  o.preset = flags.Get("preset");
  o.config_path = flags.Get("config");
  o.weights_path = flags.Get("weights");
  o.seed = static_cast<uint64_t>(*seed);
  o.out_dir = flags.Get("out");
  o.tokenizer_dir = flags.Get("tokenizer-dir");
  o.max_shard_bytes = *shard_mb << 20;
  o.threads = static_cast<int>(*threads);
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
