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
      {"preset", absl::StrCat("which model:", presets), "", false, true},
      {"seed", "random seed (same seed, same bytes)", "0"},
      {"out", "output folder", "", false, true},
      {"tokenizer-dir", "folder with tokenizer.json and tokenizer_config.json",
       models::DefaultTokenizerDir()},
      {"shard-mb", "largest shard in MB (the checkpoint is split into shards)", "100"},
  };
  Flags flags;
  int code;
  if (!ParseOrExit("make-model", "Write a DeepSeek-architecture checkpoint with random weights.",
                   specs, args, &flags, &code)) {
    return code;
  }
  auto seed = flags.GetInt("seed", 0, INT64_MAX);
  if (!seed.ok()) return ReportError("make-model", seed.status());
  auto shard_mb = flags.GetInt("shard-mb", 1, 1 << 20);
  if (!shard_mb.ok()) return ReportError("make-model", shard_mb.status());
  models::GenerateOptions o;
  o.preset = flags.Get("preset");
  o.seed = static_cast<uint64_t>(*seed);
  o.out_dir = flags.Get("out");
  o.tokenizer_dir = flags.Get("tokenizer-dir");
  o.max_shard_bytes = *shard_mb << 20;
  if (absl::Status s = models::GenerateModel(o); !s.ok()) return ReportError("make-model", s);
  std::printf("wrote %s (seed %llu) to %s\n", o.preset.c_str(),
              static_cast<unsigned long long>(o.seed), o.out_dir.c_str());
  return 0;
}

}  // namespace dserve::cli
