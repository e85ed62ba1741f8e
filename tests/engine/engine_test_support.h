// What the engine tests share: the micro-v3 reference checkpoint loaded once, random prompts,
// and a driver that runs requests through an EngineCore to completion while checking the KV
// page invariants after every step.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "engine/engine_core.h"
#include "kernels/cpu/cpu_ops.h"
#include "models/deepseek_model.h"

namespace dserve::engine::testing {

// micro-v3 (../shared/testdata): vocab 2048, 4 layers, MTP; loaded once per process.
models::DeepseekModel& MicroModel();

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int64_t length);

struct Result {
  std::map<int, std::vector<int32_t>> tokens;  // per sample index
  std::map<int, FinishReason> finish;
  std::string text;                            // sample 0's concatenated text deltas
  Usage usage;
  int64_t logprob_entries = 0;
  // Per sample: every logprob reported (chosen, then top), bit-exact copies of the model's
  // raw log-softmax, so comparing them compares the logits themselves.
  std::map<int, std::vector<float>> logprobs;
  bool finished = false;
};

EngineConfig SmallConfig();

// Runs every request through a fresh EngineCore built with `config`, stepping until all
// finish; asserts CheckInvariants() after every step and that no page is in use at the end.
// Requests are added at once unless `stagger` > 0: then one more every `stagger` steps.
std::vector<Result> RunAll(const EngineConfig& config, const std::vector<Request>& requests,
                           int stagger = 0, int64_t* preemptions = nullptr,
                           KvCacheStats* kv_stats = nullptr, const Tokenizer* tokenizer = nullptr,
                           EngineStats* engine_stats = nullptr);

// Each request alone, in its own fresh engine.
std::vector<Result> RunEachAlone(const EngineConfig& config, const std::vector<Request>& requests,
                                 const Tokenizer* tokenizer = nullptr);

Request Greedy(std::vector<int32_t> prompt, int max_tokens);

}  // namespace dserve::engine::testing
