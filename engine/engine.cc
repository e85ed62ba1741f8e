#include "engine/engine.h"

#include <pthread.h>

#include <utility>

namespace dserve::engine {

Engine::Engine(std::unique_ptr<EngineCore> core) : core_(std::move(core)) {
  UpdateGauges();
  thread_ = std::thread([this] { Loop(); });
  pthread_setname_np(thread_.native_handle(), "dserve-engine");
}

Engine::~Engine() { Shutdown(); }

void Engine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<RequestId> Engine::Submit(Request request, Callback callback) {
  DSERVE_RETURN_IF_ERROR(core_->Validate(request));
  const RequestId id = next_id_++;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // After shutdown began nothing more is queued: the loop's last pass would never see it.
    if (stop_) return absl::FailedPreconditionError("the engine is shutting down");
    incoming_.emplace_back(id, std::move(request));
    callbacks_[id] = std::move(callback);
  }
  wake_.notify_all();
  return id;
}

void Engine::Cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  wake_.notify_all();
}

int64_t Engine::num_active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(callbacks_.size());
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

int64_t Engine::total_preemptions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return preemptions_;
}

EngineGauges Engine::gauges() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineGauges g = gauges_;
  g.waiting += static_cast<int64_t>(incoming_.size());
  return g;
}

absl::Status Engine::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_error_;
}

void Engine::UpdateGauges() {
  gauges_.running = core_->num_running();
  gauges_.waiting = core_->num_waiting();
  gauges_.kv_used_pages = core_->kv().num_used_pages();
  gauges_.kv_cached_pages = core_->kv().num_cached_pages();
  gauges_.kv_total_pages = core_->num_pages();
  gauges_.page_size = core_->page_size();
  gauges_.preemptions = core_->total_preemptions();
}

void Engine::Loop() {
  std::vector<RequestOutput> outputs;
  for (;;) {
    std::deque<std::pair<RequestId, Request>> incoming;
    std::vector<RequestId> cancels;
    bool stop;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] {
        return stop_ || !incoming_.empty() || !cancels_.empty() || core_->HasWork();
      });
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      stop = stop_;
    }
    for (auto& [id, request] : incoming) {
      const absl::Status added = core_->Add(id, std::move(request));
      if (!added.ok()) {  // validated on submit; only a duplicate id could land here
        RequestOutput out;
        out.request = id;
        out.finish = FinishReason::kError;
        out.request_finished = true;
        out.error = std::string(added.message());
        outputs.push_back(std::move(out));
      }
    }
    for (RequestId id : cancels) core_->Cancel(id);
    if (stop) {
      std::vector<RequestId> live;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& [id, cb] : callbacks_) live.push_back(id);
      }
      for (RequestId id : live) core_->Cancel(id);
    }
    const absl::Status status = core_->Step(&outputs);
    // Deliver outside the lock: a callback may Submit or Cancel.
    for (const RequestOutput& out : outputs) {
      Callback cb;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = callbacks_.find(out.request);
        if (it == callbacks_.end()) continue;
        cb = out.request_finished ? std::move(it->second) : it->second;
        if (out.request_finished) callbacks_.erase(it);
      }
      if (cb) cb(out);
    }
    outputs.clear();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_ = core_->stats();
      preemptions_ = core_->total_preemptions();
      UpdateGauges();
      if (!status.ok()) last_error_ = status;
    }
    if (stop && !core_->HasWork()) return;
  }
}

void OutputQueue::Push(const RequestOutput& out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(out);
  }
  ready_.notify_all();
}

std::optional<RequestOutput> OutputQueue::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  ready_.wait(lock, [&] { return !queue_.empty() || finished_; });
  if (queue_.empty()) return std::nullopt;
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  if (out.request_finished) finished_ = true;
  return out;
}

}  // namespace dserve::engine
