// dserve generate: greedy continuation of token ids, one forward per new token over the
// latent KV cache; prints the ids, and throughput on stderr.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/model_session.h"
#include "models/greedy_decode.h"

namespace dserve::cli {
namespace {

absl::Status Run(const Flags& flags) {
  DSERVE_ASSIGN_OR_RETURN(ModelSession s, OpenModel(flags));
  DSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                          ParseTokenList(flags.Get("tokens"), s.model->config().vocab_size));
  DSERVE_ASSIGN_OR_RETURN(int64_t max_tokens, flags.GetInt("max-tokens", 1, 1 << 20));
  models::GreedyOptions o;
  o.max_new_tokens = static_cast<int>(max_tokens);
  o.stop_at_eos = !flags.GetBool("ignore-eos");
  o.mtp_drafts = flags.GetBool("mtp-drafts");
  o.mla_mode = s.mla_mode;
  DSERVE_ASSIGN_OR_RETURN(models::GreedyResult r, models::GreedyDecode(*s.model, prompt, o));
  std::printf("%s\n", absl::StrJoin(r.tokens, ",").c_str());
  if (o.mtp_drafts) std::printf("mtp drafts: %s\n", absl::StrJoin(r.drafts, ",").c_str());
  std::fprintf(stderr, "prompt: %zu tokens in %.2f ms (%.0f tokens/s)\n", prompt.size(),
               r.prefill_seconds * 1e3, prompt.size() / r.prefill_seconds);
  if (r.decode_steps > 0) {
    std::fprintf(stderr, "decode: %lld tokens in %.2f ms (%.1f tokens/s)\n",
                 static_cast<long long>(r.decode_steps), r.decode_seconds * 1e3,
                 r.decode_steps / r.decode_seconds);
  }
  return absl::OkStatus();
}

}  // namespace

int RunGenerate(const Args& args) {
  std::vector<FlagSpec> specs = ModelFlags();
  specs.push_back({"tokens", "comma-separated prompt token ids", "", false, true});
  specs.push_back({"max-tokens", "new tokens to generate", "32"});
  specs.push_back({"ignore-eos", "keep going after the end-of-sequence token", "", true});
  specs.push_back({"mtp-drafts", "also print the MTP head's draft after each token", "", true});
  Flags flags;
  int code;
  if (!ParseOrExit("generate", "Greedy generation from token ids (prints the new ids).", specs,
                   args, &flags, &code)) {
    return code;
  }
  if (absl::Status s = Run(flags); !s.ok()) return ReportError("generate", s);
  return 0;
}

}  // namespace dserve::cli
