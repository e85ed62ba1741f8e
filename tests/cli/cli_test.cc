// The dserve executable end to end: each subcommand on real checkpoints, its outputs checked
// against the independent references in ../shared/testdata, and every kind of bad input
// answered with a message and a non-zero exit instead of a crash.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/npz_reader.h"
#include "tests/support/test_env.h"

namespace dserve {
namespace {

namespace fs = std::filesystem;
using testing::DserveBinary;
using testing::RunCommand;
using testing::TestdataPath;

struct Result {
  int code;
  std::string output;
};

Result Dserve(const std::string& args) {
  Result r;
  r.code = RunCommand(DserveBinary() + " " + args, &r.output);
  return r;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string ReferenceTokens(const std::string& checkpoint) {
  const auto ref = testing::ReadNpz(TestdataPath(checkpoint) + "/reference.npz");
  return absl::StrJoin(ref.at("tokens").AsInts(), ",");
}

TEST(CliTest, UsageAndUnknownCommands) {
  Result r = Dserve("");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.output, "usage: dserve <command>"));
  r = Dserve("frobnicate");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.output, "unknown command 'frobnicate'"));
  r = Dserve("generate --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(Contains(r.output, "--max-tokens"));
}

TEST(CliTest, LogitsWritesNpyMatchingReference) {
  const std::string dir = testing::ScratchDir("cli");
  const Result r = Dserve(absl::StrCat("logits --model ", TestdataPath("micro-v3"), " --tokens ",
                                       ReferenceTokens("micro-v3"), " --out ", dir,
                                       "/logits.npy --mtp-out ", dir, "/mtp.npy --threads 2"));
  ASSERT_EQ(r.code, 0) << r.output;
  const auto ref = testing::ReadNpz(TestdataPath("micro-v3") + "/reference.npz");
  for (const auto& [file, key] : {std::pair<std::string, std::string>{"logits.npy", "logits"},
                                  {"mtp.npy", "mtp_logits"}}) {
    const testing::NpyArray got = testing::ReadNpy(dir + "/" + file);
    const testing::NpyArray& want = ref.at(key);
    EXPECT_EQ(got.descr, "<f4");
    ASSERT_EQ(got.shape, want.shape) << file;
    const std::vector<double> a = got.AsDoubles(), b = want.AsDoubles();
    double err = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      err = std::max(err, std::fabs(a[i] - b[i]));
      scale = std::max(scale, std::fabs(b[i]));
    }
    EXPECT_LE(err, 1e-3 * scale) << file;
  }
}

TEST(CliTest, GeneratePrintsReferenceContinuation) {
  const auto ref = testing::ReadNpz(TestdataPath("micro-v3") + "/reference.npz");
  const Result r = Dserve(absl::StrCat("generate --model ", TestdataPath("micro-v3"), " --tokens ",
                                       ReferenceTokens("micro-v3"),
                                       " --max-tokens 8 --ignore-eos --mtp-drafts"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, absl::StrJoin(ref.at("generated").AsInts(), ",") + "\n"))
      << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "mtp drafts: " + absl::StrJoin(ref.at("gen_mtp_drafts").AsInts(), ",")))
      << r.output;
  EXPECT_TRUE(Contains(r.output, "tokens/s"));
}

// The engine with MTP drafts prints the reference's greedy ids too, for each draft count.
TEST(CliTest, SpeculativeGeneratePrintsTheSameContinuation) {
  const auto ref = testing::ReadNpz(TestdataPath("micro-v3") + "/reference.npz");
  for (int k : {1, 2, 3}) {
    const Result r = Dserve(absl::StrCat("generate --model ", TestdataPath("micro-v3"),
                                         " --tokens ", ReferenceTokens("micro-v3"),
                                         " --max-tokens 8 --ignore-eos --speculative mtp "
                                         "--num-speculative-tokens ",
                                         k));
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(Contains(r.output, absl::StrJoin(ref.at("generated").AsInts(), ",") + "\n"))
        << "K = " << k << ": " << r.output;
    EXPECT_TRUE(Contains(r.output, "MTP drafts accepted (by position")) << r.output;
  }
}

// Split over ranks (threads of the process on the CPU), the greedy continuation is still the
// float64 reference's: expert parallelism over 2 and 4 ranks, tensor parallelism over 2, both,
// alone and through the engine with MTP drafts.
TEST(CliTest, ParallelGeneratePrintsTheReferenceContinuation) {
  const auto ref = testing::ReadNpz(TestdataPath("micro-v3") + "/reference.npz");
  const std::string want = absl::StrJoin(ref.at("generated").AsInts(), ",") + "\n";
  for (const char* split : {"--ep-size 2", "--ep-size 4", "--tp-size 2", "--ep-size 2 --tp-size 2",
                            "--ep-size 2 --speculative mtp", "--tp-size 2 --speculative mtp",
                            "--ep-size 2 --dp-attention --speculative mtp"}) {
    const Result r = Dserve(absl::StrCat("generate --model ", TestdataPath("micro-v3"),
                                         " --tokens ", ReferenceTokens("micro-v3"),
                                         " --max-tokens 8 --ignore-eos ", split));
    ASSERT_EQ(r.code, 0) << split << ": " << r.output;
    EXPECT_TRUE(Contains(r.output, want)) << split << ": " << r.output;
    EXPECT_TRUE(Contains(r.output, " ranks (EP ")) << r.output;
  }
}

TEST(CliTest, InspectReportsParametersAndCacheSizes) {
  // micro-v3 (its README): hidden 256, vocab 2048, 4 layers (layer 0 dense, intermediate 512),
  // 8 heads, q_lora 128, kv_lora 128, nope 32, rope 16, v 32, 16 experts of 128 + 1 shared,
  // 4 per token, MTP layer 4.
  const int64_t h = 256, v = 2048, heads = 8, qk = 48;
  const int64_t attn = h * 128 + 128 + 128 * heads * qk + h * (128 + 16) + 128 +
                       128 * heads * (32 + 32) + heads * 32 * h;
  const int64_t expert = 3 * h * 128, norms = 2 * h;
  const int64_t dense = attn + norms + 3 * h * 512;
  const int64_t moe = attn + norms + 16 * expert + expert + 16 * h + 16;
  const int64_t total = 2 * v * h + h + dense + 3 * moe;
  const int64_t active = total - 3 * 12 * expert;
  const Result r = Dserve("inspect --model " + TestdataPath("micro-v3"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, absl::StrCat("(", total, " / ", active, ")"))) << r.output;
  // Latent: 4 layers x (128 + 16) x 2 bytes = 1152 B; MHA: 4 x 8 x (48 + 32) x 2 = 5120 B.
  EXPECT_TRUE(Contains(r.output, "latent KV cache       1.15 KB per token")) << r.output;
  EXPECT_TRUE(Contains(r.output, "MHA-equivalent cache  5.12 KB per token")) << r.output;
  EXPECT_TRUE(Contains(r.output, "MHA / latent ratio    4.4x")) << r.output;
  EXPECT_TRUE(Contains(r.output, "F8_E4M3")) << r.output;
}

TEST(CliTest, BadInputGetsAClearErrorAndNonZeroExit) {
  const std::string v3 = TestdataPath("micro-v3");
  struct Case {
    std::string args;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"generate --tokens 1,2", 2, "--model is required"},
      {"generate --model " + v3 + " --tokens 1,2048", 2, "id 2048 is outside the vocabulary"},
      {"generate --model " + v3 + " --tokens 1,x", 2, "'x' is not an integer token id"},
      {"generate --model " + v3 + " --tokens 1 --max-tokens 0", 2, "--max-tokens must be"},
      {"generate --model " + v3 + " --tokens 1 --bogus 3", 2, "unknown flag --bogus"},
      {"generate --model " + v3 + " --tokens 1 --mla-mode fast", 2, "--mla-mode must be"},
      {"generate --model " + v3 + " --tokens 1 --device tpu", 2, "--device must be cpu or cuda"},
      {"generate --model " + v3 + " --tokens 1 --cuda-gemm fast", 2,
       "--cuda-gemm must be tensor-cores or exact"},
      {"bench --model " + v3 + " --num-prompts 2 --kv-cache-dtype int4", 2,
       "--kv-cache-dtype must be bf16, fp8 or f32, got 'int4'"},
      {"bench --model " + v3 + " --num-prompts 2 --cuda-graph-max-batch -1", 2,
       "--cuda-graph-max-batch must be an integer in [0"},
      {"generate --model " + v3 + " --tokens 1 --ep-size 3", 2,
       "--ep-size 3 must divide the 16 routed experts"},
      {"generate --model " + v3 + " --tokens 1 --ep-size 2 --tp-size 4", 2,
       "must each be 1 or the number of ranks"},
      {"generate --model " + v3 + " --tokens 1 --ep-size 2 --nnodes 2", 2,
       "--nnodes > 1 needs --device cuda"},
      {"generate --model " + v3 + " --tokens 1 --ep-size 2 --node-rank 3", 2,
       "--node-rank 3 is not one of the 1 nodes"},
      {"generate --model " + v3 + " --tokens 1 --tp-size 2 --dp-attention", 2,
       "--dp-attention needs --ep-size > 1"},
      {"generate --model /nonexistent/model --tokens 1", 2, "/nonexistent/model/config.json"},
      {"logits --model " + TestdataPath("micro-v2") + " --tokens 1,2 --out /tmp/x.npy --mtp-out "
       "/tmp/y.npy",
       2, "has no MTP layer"},
      {"generate --model " + v3 + " --tokens 1 --speculative eagle", 2,
       "--speculative must be mtp"},
      {"generate --model " + v3 + " --tokens 1 --speculative mtp --num-speculative-tokens 9", 2,
       "'9' must be an integer from 0 (off) to 4"},
      {"generate --model " + v3 + " --tokens 1 --num-speculative-tokens 2", 2,
       "--num-speculative-tokens needs --speculative mtp"},
      {"generate --model " + TestdataPath("micro-v2") + " --tokens 1 --speculative mtp", 2,
       "needs a checkpoint with its MTP layer"},
      {"make-model --preset tiny-v9 --out /tmp/never", 2, "unknown preset 'tiny-v9'"},
      {"make-model --out /tmp/never", 2, "give either --preset or --config"},
      {"make-model --preset tiny-v3 --weights /nonexistent/w.safetensors --out /tmp/never", 2,
       "/nonexistent/w.safetensors"},
      {"inspect", 2, "--model is required"},
  };
  for (const Case& c : cases) {
    const Result r = Dserve(c.args);
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.output;
    EXPECT_TRUE(Contains(r.output, c.message)) << c.args << "\n" << r.output;
  }
}

// Without a CUDA build or without a GPU, --device cuda says why and exits non-zero; with
// one, it runs.
TEST(CliTest, DeviceCudaRunsOrSaysWhyNot) {
  const Result r = Dserve("generate --model " + TestdataPath("micro-v3") +
                          " --tokens 1,2 --max-tokens 2 --device cuda");
  if (r.code != 0) {
    EXPECT_TRUE(Contains(r.output, "dserve generate: --device cuda")) << r.output;
  } else {
    EXPECT_TRUE(Contains(r.output, "decode:")) << r.output;
  }
}

TEST(CliTest, CorruptCheckpointIsReportedByFileName) {
  const std::string dir = testing::ScratchDir("corrupt");
  for (const char* f : {"config.json", "model.safetensors", "model.safetensors.index.json"}) {
    fs::copy_file(TestdataPath("micro-v3") + "/" + f, dir + "/" + f);
  }
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  const Result r = Dserve("generate --model " + dir + " --tokens 1,2");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, dir + "/model.safetensors")) << r.output;
  EXPECT_TRUE(Contains(r.output, "truncated")) << r.output;
}

TEST(CliTest, MakeModelWritesAShardedCheckpoint) {
  const std::string dir = testing::ScratchDir("make") + "/tiny-v2";
  const Result r = Dserve("make-model --preset tiny-v2 --seed 3 --shard-mb 40 --out " + dir);
  ASSERT_EQ(r.code, 0) << r.output;
  // ~140 MB: two 66 MB vocabulary matrices (each over the limit, so alone in its shard) and
  // the layers; every shard is within 40 MB unless it holds a single tensor.
  std::ifstream index(dir + "/model.safetensors.index.json");
  const auto json = nlohmann::json::parse(index);
  std::map<std::string, int> tensors_per_shard;
  for (const auto& [name, shard] : json["weight_map"].items()) {
    ++tensors_per_shard[shard.get<std::string>()];
  }
  EXPECT_GE(tensors_per_shard.size(), 3u);
  for (const auto& [shard, count] : tensors_per_shard) {
    const auto bytes = fs::file_size(dir + "/" + shard);
    EXPECT_TRUE(bytes <= (40u << 20) || count == 1) << shard << " " << bytes << " " << count;
  }
  const Result g = Dserve("generate --model " + dir + " --tokens 0,100,5000 --max-tokens 4");
  EXPECT_EQ(g.code, 0) << g.output;
}

}  // namespace
}  // namespace dserve
