// dserve generate: greedy continuation of token ids, one forward per new token over the
// latent KV cache; prints the ids, and throughput on stderr. With --speculative mtp the
// engine runs it, the MTP module drafting and the main model verifying (same ids), and the
// acceptance figures go to stderr too.
#include <chrono>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "engine/engine_core.h"
#include "cli/model_session.h"
#include "models/greedy_decode.h"

namespace dserve::cli {
namespace {

// One greedy request through the engine with K MTP drafts per step.
absl::Status RunSpeculative(ModelSession& s, const std::vector<int32_t>& prompt,
                            int64_t max_tokens, int drafts, bool ignore_eos) {
  engine::EngineConfig config;
  config.kv_dtype = DType::kF32;  // the plain loop's cache dtype, so the ids are the same
  config.num_speculative_tokens = drafts;
  config.mla_mode = s.mla_mode;
  config.num_pages =
      (static_cast<int64_t>(prompt.size()) + max_tokens + drafts + config.page_size - 1) /
          config.page_size +
      1;
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::EngineCore> core,
                          engine::EngineCore::Create(*s.model, nullptr, config));
  engine::Request r;
  r.prompt = prompt;
  r.params.temperature = 0.0f;
  r.params.max_tokens = static_cast<int>(max_tokens);
  r.params.ignore_eos = ignore_eos;
  r.detokenize = false;
  DSERVE_RETURN_IF_ERROR(core->Add(0, r));
  std::vector<int32_t> tokens;
  std::vector<engine::RequestOutput> outputs;
  const auto start = std::chrono::steady_clock::now();
  while (core->HasWork()) {
    outputs.clear();
    DSERVE_RETURN_IF_ERROR(core->Step(&outputs));
    for (const engine::RequestOutput& o : outputs) {
      if (o.finish == engine::FinishReason::kError) return absl::InternalError(o.error);
      tokens.insert(tokens.end(), o.tokens.begin(), o.tokens.end());
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s\n", absl::StrJoin(tokens, ",").c_str());
  const engine::EngineStats& st = core->stats();
  std::string by_position;
  for (int j = 0; j < drafts; ++j) {
    absl::StrAppend(&by_position, j ? ", " : "",
                    absl::StrFormat("%.1f%%", st.drafts_at[j] ? 100.0 * st.accepted_at[j] /
                                                                    st.drafts_at[j]
                                                              : 0.0));
  }
  std::fprintf(stderr,
               "speculative: %lld of %lld MTP drafts accepted (by position %s); %.2f tokens per "
               "verification; %lld tokens in %lld steps, %.2f s (prompt included)\n",
               static_cast<long long>(st.accepted_draft_tokens),
               static_cast<long long>(st.draft_tokens), by_position.c_str(),
               st.verifications ? 1.0 + static_cast<double>(st.accepted_draft_tokens) /
                                            st.verifications
                                : 0.0,
               static_cast<long long>(tokens.size()), static_cast<long long>(st.steps), seconds);
  return absl::OkStatus();
}

absl::Status Run(const Flags& flags) {
  DSERVE_ASSIGN_OR_RETURN(ModelSession s, OpenModel(flags));
  if (!s.model) return FollowOnly("generate", s);
  DSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                          ParseTokenList(flags.Get("tokens"), s.model->config().vocab_size));
  DSERVE_ASSIGN_OR_RETURN(int64_t max_tokens, flags.GetInt("max-tokens", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(const std::vector<int> drafts, ParseSpeculativeTokens(flags));
  if (drafts.size() > 1) {
    return absl::InvalidArgumentError("--num-speculative-tokens takes one value here");
  }
  if (drafts[0] > 0) {
    if (flags.GetBool("mtp-drafts")) {
      return absl::InvalidArgumentError("--mtp-drafts prints the plain loop's drafts; drop it "
                                        "with --speculative");
    }
    return RunSpeculative(s, prompt, max_tokens, drafts[0], flags.GetBool("ignore-eos"));
  }
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
  for (FlagSpec& f : EngineFlags()) {
    if (f.name == "speculative" || f.name == "num-speculative-tokens") specs.push_back(f);
  }
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
