// Engine: the thread-safe API the front ends use. Submit() validates a request and queues
// it; one engine thread loops EngineCore::Step() and hands each request's outputs to its
// callback (on the engine thread: callbacks must not block); Cancel() takes effect before the
// next step, releasing the request's KV pages.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine_core.h"
#include "engine/request.h"

namespace dserve::engine {

// The engine's state after its latest step, for metrics and admission control.
struct EngineGauges {
  int64_t running = 0;  // sequences holding KV pages
  int64_t waiting = 0;  // queued, not yet admitted (submitted but not yet seen included)
  int64_t kv_used_pages = 0;    // held by sequences
  int64_t kv_cached_pages = 0;  // prefix-cached, held by none (reusable, count as free)
  int64_t kv_total_pages = 0;
  int64_t page_size = 0;
  int64_t preemptions = 0;
};

class Engine {
 public:
  using Callback = std::function<void(const RequestOutput&)>;

  explicit Engine(std::unique_ptr<EngineCore> core);
  // Shutdown().
  ~Engine();
  // Cancels whatever still runs (callbacks see kCancelled, delivered before this returns),
  // refuses further Submits and joins the engine thread. Idempotent; call it before tearing
  // down what the callbacks reach.
  void Shutdown();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates (a bad request is an InvalidArgument naming the problem, nothing is queued) and
  // queues the request; `callback` receives every output, the last with request_finished.
  // FailedPrecondition once the destructor has begun.
  absl::StatusOr<RequestId> Submit(Request request, Callback callback);
  // Submit's checks alone (thread-safe): lets a caller vet several requests before queueing any.
  absl::Status Validate(const Request& request) const { return core_->Validate(request); }
  void Cancel(RequestId id);

  // Requests submitted and not yet finished.
  int64_t num_active() const;
  // The core's counters, read on the engine thread between steps.
  EngineStats stats() const;
  int64_t total_preemptions() const;
  EngineGauges gauges() const;
  // Status of the last failed step (OK if none).
  absl::Status last_error() const;

 private:
  void Loop();
  void UpdateGauges();  // under mu_

  std::unique_ptr<EngineCore> core_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::pair<RequestId, Request>> incoming_;
  std::vector<RequestId> cancels_;
  std::unordered_map<RequestId, Callback> callbacks_;
  EngineStats stats_;
  int64_t preemptions_ = 0;
  EngineGauges gauges_;  // as of the latest step
  absl::Status last_error_;
  bool stop_ = false;
  std::atomic<RequestId> next_id_{1};
  std::thread thread_;
};

// A blocking per-request stream on top of Engine callbacks (tests, CLI, benchmarks).
class OutputQueue {
 public:
  void Push(const RequestOutput& out);
  // Waits for the next output; nullopt once the request has finished and all were read.
  std::optional<RequestOutput> Next();

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<RequestOutput> queue_;
  bool finished_ = false;
};

}  // namespace dserve::engine
