#include "engine/scheduler.h"

#include <algorithm>

#include "core/check.h"

namespace dserve::engine {
namespace {

// scheduled_ states of running_[i] during Schedule().
constexpr char kUnscheduled = 0, kScheduled = 1, kPreempted = 2;

// Running slots a sequence takes: a request's first sample before it forked holds room for
// all n.
int64_t Slots(const Sequence& seq) {
  const RequestState& r = *seq.request;
  return seq.index == 0 && !r.forked ? r.request.params.n : 1;
}

}  // namespace

Scheduler::Scheduler(const SchedulerConfig& config, KvCacheManager& kv) : config_(config), kv_(kv) {
  DSERVE_CHECK(config.max_batched_tokens >= 1 && config.max_num_seqs >= 1)
      << "scheduler limits must be positive";
}

void Scheduler::AddWaiting(Sequence* seq) { waiting_.push_back(seq); }

void Scheduler::AddRunning(Sequence* seq) {
  DSERVE_CHECK(kv_.HasSequence(seq->id)) << "a running sequence holds KV pages";
  seq->admitted = next_admission_++;
  running_.push_back(seq);
}

void Scheduler::Remove(Sequence* seq) {
  auto it = std::find(running_.begin(), running_.end(), seq);
  if (it != running_.end()) running_.erase(it);
  auto wt = std::find(waiting_.begin(), waiting_.end(), seq);
  if (wt != waiting_.end()) waiting_.erase(wt);
  if (kv_.HasSequence(seq->id)) kv_.Free(seq->id);
}

void Scheduler::Preempt(Sequence* seq, SchedulerOutput& out) {
  // Recompute, not swap: the pages go back (full ones stay in the prefix cache, so the
  // recomputation often finds them again) and the sequence restarts from token 0.
  kv_.Free(seq->id);
  seq->DropDrafts(seq->num_drafts);  // recomputation starts from verified tokens only
  seq->num_computed = 0;
  seq->admitted = -1;
  ++seq->preemptions;
  ++total_preemptions_;
  out.preempted.push_back(seq);
}

bool Scheduler::ReserveOrPreempt(size_t self, int64_t n, SchedulerOutput& out) {
  Sequence* seq = running_[self];
  while (!kv_.Reserve(seq->id, seq->num_computed, seq->num_computed + n)) {
    // The newest running sequence that has no work yet this step.
    size_t victim = running_.size();
    for (size_t j = running_.size(); j-- > 0;) {
      if (j != self && scheduled_[j] == kUnscheduled) {
        victim = j;
        break;
      }
    }
    if (victim == running_.size()) {
      scheduled_[self] = kPreempted;
      Preempt(seq, out);
      return false;
    }
    scheduled_[victim] = kPreempted;
    Preempt(running_[victim], out);
  }
  return true;
}

bool Scheduler::TryAdmit(Sequence* seq, int64_t budget, SchedulerOutput& out) {
  const int64_t cached = kv_.StartSequence(seq->id, seq->tokens, seq->prompt_len);
  seq->num_computed = cached;
  const int64_t n = std::min(seq->pending(), budget);
  if (!kv_.Reserve(seq->id, seq->num_computed, seq->num_computed + n)) {
    kv_.Free(seq->id);
    seq->num_computed = 0;
    return false;
  }
  RequestState& r = *seq->request;
  if (seq->index == 0 && seq->preemptions == 0) r.cached_prompt_tokens = cached;
  seq->admitted = next_admission_++;
  running_.push_back(seq);
  scheduled_.push_back(kScheduled);
  out.work.push_back({seq, n});
  out.num_tokens += n;
  return true;
}

SchedulerOutput Scheduler::Schedule() {
  SchedulerOutput out;
  scheduled_.assign(running_.size(), kUnscheduled);
  int64_t budget = config_.max_batched_tokens;
  // Decodes first (one token each: they keep streams flowing), then chunks of prefill.
  for (const bool decode_pass : {true, false}) {
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
      Sequence* seq = running_[i];
      if (scheduled_[i] != kUnscheduled || seq->decoding() != decode_pass) continue;
      // Drafts are checked all at once or not at all: those the budget cannot take go.
      if (seq->num_drafts > 0 && seq->pending() > budget) {
        seq->DropDrafts(std::min(seq->num_drafts, seq->pending() - budget));
      }
      const int64_t n = std::min(seq->pending(), budget);
      if (!ReserveOrPreempt(i, n, out)) continue;
      scheduled_[i] = kScheduled;
      out.work.push_back({seq, n});
      out.num_tokens += n;
      budget -= n;
    }
  }
  // Preempted sequences leave running; the oldest of them goes back to the queue's front.
  if (!out.preempted.empty()) {
    std::vector<Sequence*> kept;
    for (size_t i = 0; i < running_.size(); ++i) {
      if (scheduled_[i] != kPreempted) kept.push_back(running_[i]);
    }
    running_ = std::move(kept);
    for (Sequence* seq : out.preempted) waiting_.push_front(seq);
    scheduled_.assign(running_.size(), kScheduled);
    return out;  // no admissions in a step that had to preempt
  }
  // New work, first come first served, while budget, sequence slots and pages last. A request
  // still to fork counts its n samples (EngineCore::Validate keeps n <= max_num_seqs).
  int64_t occupied = 0;
  for (const Sequence* seq : running_) occupied += Slots(*seq);
  while (!waiting_.empty() && budget > 0) {
    Sequence* seq = waiting_.front();
    if (occupied + Slots(*seq) > config_.max_num_seqs) break;
    occupied += Slots(*seq);
    if (!TryAdmit(seq, budget, out)) break;
    waiting_.pop_front();
    budget -= out.work.back().num_tokens;
  }
  return out;
}

}  // namespace dserve::engine
