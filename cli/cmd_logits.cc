// dserve logits: one forward pass over given token ids; every position's logits (and the MTP
// head's) written as float32 .npy for checking against a reference.
#include <cstdio>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/model_session.h"
#include "core/npy_writer.h"

namespace dserve::cli {
namespace {

absl::Status Run(const Flags& flags) {
  DSERVE_ASSIGN_OR_RETURN(ModelSession s, OpenModel(flags));
  if (!s.model) return FollowOnly("logits", s);
  models::DeepseekModel& model = *s.model;
  const int64_t vocab = model.config().vocab_size;
  DSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                          ParseTokenList(flags.Get("tokens"), vocab));
  const int64_t T = static_cast<int64_t>(tokens.size());
  const bool want_mtp = flags.Has("mtp-out");
  if (want_mtp && !model.has_mtp()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mtp-out: ", flags.Get("model"), " has no MTP layer"));
  }
  if (want_mtp && T < 2) return absl::InvalidArgumentError("--mtp-out needs at least 2 tokens");

  const int64_t page = 64, pages = (T + page - 1) / page;
  kernels::LatentCacheShape shape = model.CacheShape(pages, page);
  DSERVE_ASSIGN_OR_RETURN(shape.dtype, ParseKvCacheDType(flags.Get("kv-cache-dtype")));
  DSERVE_ASSIGN_OR_RETURN(kernels::LatentCache cache, model.NewLatentCache(shape));
  std::vector<int32_t> table(pages), positions(T), rows(T);
  std::iota(table.begin(), table.end(), 0);
  std::iota(positions.begin(), positions.end(), 0);
  std::iota(rows.begin(), rows.end(), 0);

  models::ForwardInput in;
  in.tokens = tokens;
  in.batch.positions = positions;
  in.batch.sequences = {{0, T, 0, table}};
  in.logit_rows = rows;
  in.mla_mode = s.mla_mode;
  models::ForwardOutput out;
  DSERVE_RETURN_IF_ERROR(model.Forward(in, cache, &out));
  DSERVE_RETURN_IF_ERROR(WriteNpyFloat32(flags.Get("out"), out.logits, {T, vocab}));
  std::printf("logits [%lld, %lld] -> %s\n", static_cast<long long>(T),
              static_cast<long long>(vocab), flags.Get("out").c_str());

  if (want_mtp) {
    std::vector<float> mtp_logits;
    DSERVE_RETURN_IF_ERROR(
        model.ForwardMtpOverPrompt(tokens, out.hidden, table, s.mla_mode, cache, &mtp_logits));
    DSERVE_RETURN_IF_ERROR(WriteNpyFloat32(flags.Get("mtp-out"), mtp_logits, {T - 1, vocab}));
    std::printf("mtp logits [%lld, %lld] -> %s\n", static_cast<long long>(T - 1),
                static_cast<long long>(vocab), flags.Get("mtp-out").c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int RunLogits(const Args& args) {
  std::vector<FlagSpec> specs = ModelFlags();
  specs.push_back({"tokens", "comma-separated token ids, e.g. 0,15,27", "", false, true});
  specs.push_back({"out", "output .npy, float32 [T, vocab]", "", false, true});
  specs.push_back({"mtp-out", "also write the MTP head's logits, float32 [T-1, vocab]", ""});
  specs.push_back({"kv-cache-dtype",
                   "f32|bf16|fp8: the latent cache the pass writes and attends over", "f32"});
  Flags flags;
  int code;
  if (!ParseOrExit("logits", "Write every position's logits of one forward pass as .npy.", specs,
                   args, &flags, &code)) {
    return code;
  }
  if (absl::Status s = Run(flags); !s.ok()) return ReportError("logits", s);
  return 0;
}

}  // namespace dserve::cli
