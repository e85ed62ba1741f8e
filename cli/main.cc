// dserve: one executable, one subcommand per job.
#include <cstdio>
#include <malloc.h>

#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(const dserve::cli::Args&);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"make-model", dserve::cli::RunMakeModel,
     "write a random-weight checkpoint of a preset in the published layout"},
    {"generate", dserve::cli::RunGenerate, "greedy generation from token ids"},
    {"logits", dserve::cli::RunLogits, "every position's logits of one forward pass, as .npy"},
    {"inspect", dserve::cli::RunInspect, "parameters, dtypes and KV-cache size of a checkpoint"},
    {"bench", dserve::cli::RunBench, "prompt and decode throughput, against memory bandwidth"},
    {"tokenize", dserve::cli::RunTokenize, "lines of text -> JSON arrays of token ids"},
    {"detokenize", dserve::cli::RunDetokenize, "JSON arrays of token ids -> JSON strings"},
    {"bench-tokenizer", dserve::cli::RunBenchTokenizer, "single-threaded encode throughput"},
    {"chat-template", dserve::cli::RunChatTemplate, "render a checkpoint's chat template"},
#if defined(DSERVE_SERVER)
    {"serve", dserve::cli::RunServe, "serve the OpenAI-compatible HTTP API and gRPC"},
    {"bench-serve", dserve::cli::RunBenchServe, "load generator against a running server"},
#endif
};

void PrintUsage(FILE* out) {
  std::fputs("usage: dserve <command> [flags]   (dserve <command> --help for its flags)\n\n",
             out);
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  // Forward steps allocate and free megabyte-sized activations every step: keep them in the
  // heap instead of fresh mmaps (whose page faults cost several percent of a decode step).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    PrintUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const dserve::cli::Args args(argv + 2, argv + argc);
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) == 0) return c.run(args);
  }
  std::fprintf(stderr, "dserve: unknown command '%s'\n\n", argv[1]);
  PrintUsage(stderr);
  return 2;
}
