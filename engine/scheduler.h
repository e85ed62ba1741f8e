// Scheduler: picks each step's work. Running sequences that only need their next token go
// first, then running chunked prefills, then waiting sequences, all under a token budget and
// a sequence cap; when KV pages run out it preempts the most recently admitted sequence
// (its pages are released and it is recomputed later, producing the same tokens).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/kv_cache_manager.h"
#include "engine/sequence.h"

namespace dserve::engine {

struct SchedulerConfig {
  int64_t max_batched_tokens = 512;  // tokens per forward step, over all sequences
  int64_t max_num_seqs = 64;         // sequences running at once
};

struct ScheduledWork {
  Sequence* seq;
  int64_t num_tokens;  // run tokens [num_computed, num_computed + num_tokens) this step
};

struct SchedulerOutput {
  std::vector<ScheduledWork> work;  // running sequences first, in admission order
  std::vector<Sequence*> preempted;
  int64_t num_tokens = 0;
  bool empty() const { return work.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, KvCacheManager& kv);

  // A new sequence waits at the back of the queue; a preempted one goes back to the front.
  void AddWaiting(Sequence* seq);
  // A sequence that enters running directly (the n - 1 forks of a sampled prompt).
  void AddRunning(Sequence* seq);
  // Forgets a finished or cancelled sequence and releases its pages.
  void Remove(Sequence* seq);

  // What runs this step, with KV pages reserved for it.
  SchedulerOutput Schedule();

  const std::vector<Sequence*>& running() const { return running_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  int64_t total_preemptions() const { return total_preemptions_; }

 private:
  // "Does it fit": reserves pages for `n` more tokens of running_[self], preempting the newest
  // running sequences not yet scheduled this step until it fits. False when it was itself
  // preempted.
  bool ReserveOrPreempt(size_t self, int64_t n, SchedulerOutput& out);
  void Preempt(Sequence* seq, SchedulerOutput& out);
  // Starts a waiting sequence in the KV cache (attaching its cached prefix). False if there
  // is no room for its first chunk; it then stays waiting, holding nothing.
  bool TryAdmit(Sequence* seq, int64_t budget, SchedulerOutput& out);

  SchedulerConfig config_;
  KvCacheManager& kv_;
  std::vector<Sequence*> running_;  // in admission order
  std::deque<Sequence*> waiting_;
  int64_t next_admission_ = 0;
  int64_t total_preemptions_ = 0;
  std::vector<char> scheduled_;  // scratch: running_[i] already has work this step
};

}  // namespace dserve::engine
