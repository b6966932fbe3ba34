#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "server/grpc/call_scope.h"

namespace vecgpu::server {

// What the streaming calls share: the threads that process their messages and the count of
// open streams. Owned by GrpcServer.
struct StreamResources {
  // Runs a message's processing (which may wait for the service); false when it cannot be
  // queued (the message is then answered RESOURCE_EXHAUSTED).
  std::function<bool(std::function<void()>)> run;
  std::atomic<int64_t> open{0};
  int64_t max_open = 10'000;
};

// A place among the open streams, held while the stream lives.
class StreamSlot {
 public:
  explicit StreamSlot(StreamResources& r) : r_(r) {
    ok_ = r_.open.fetch_add(1, std::memory_order_relaxed) < r_.max_open;
  }
  ~StreamSlot() { r_.open.fetch_sub(1, std::memory_order_relaxed); }
  StreamSlot(const StreamSlot&) = delete;
  StreamSlot& operator=(const StreamSlot&) = delete;
  Status status() const {
    if (ok_) return Status::Ok();
    return ResourceExhausted("grpc: " + std::to_string(r_.max_open) +
                             " streams open, the limit of --grpc-max-streams; retry later");
  }

 private:
  StreamResources& r_;
  bool ok_;
};

// A bidirectional stream on gRPC's callback API: it holds no thread while it waits for its
// client. Each request read is handed to `process` (on the stream threads); its answer is
// written in request order. Up to `max_in_flight` requests are processed at once (so a
// stream's searches batch); reading pauses beyond that. Finishes OK when the client has sent
// everything and every answer is written (or the client is gone).
template <typename Request, typename Response>
class StreamReactor final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  using Answer = std::function<void(Response)>;
  // Processes one request and calls `answer` exactly once, from any thread. `cancelled` is
  // the stream's: set when the client goes away.
  using Process = std::function<void(Request, const std::shared_ptr<std::atomic<bool>>& cancelled,
                                     Answer answer)>;

  // `admitted`: the stream's authentication and quotas (an error fails the whole stream).
  StreamReactor(StreamResources& resources, const Status& admitted, size_t max_in_flight,
                Process process, std::function<Response(const Status&)> error)
      : resources_(resources),
        slot_(resources),
        max_in_flight_(max_in_flight),
        process_(std::move(process)),
        error_(std::move(error)) {
    Status st = admitted.ok() ? slot_.status() : admitted;
    if (!st.ok()) {
      this->Finish(ToGrpc(st));
      return;
    }
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Act([&] { reading_done_ = true; });
      return;
    }
    Request r = std::move(request_);
    uint64_t id;
    bool more;
    {
      std::lock_guard lock(mu_);
      id = next_id_++;
      answers_.emplace_back();
      more = answers_.size() < max_in_flight_;
      if (!more) read_paused_ = true;
    }
    // Holds the stream open (OnDone waits for Finish, which waits for every answer).
    auto answer = [this, id](Response resp) { Deliver(id, std::move(resp)); };
    auto job = [this, r = std::move(r), answer]() mutable { process_(std::move(r), cancelled_, answer); };
    if (!resources_.run(std::move(job))) {
      answer(error_(ResourceExhausted("grpc: the stream threads' queue is full; retry later")));
    }
    if (more) this->StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    Act([&] {
      writing_ = false;
      if (!ok) client_gone_ = true;
    });
  }

  void OnCancel() override {
    cancelled_->store(true);
    Act([&] { client_gone_ = true; });
  }

  void OnDone() override { delete this; }

 private:
  void Deliver(uint64_t id, Response resp) {
    Act([&] { answers_[id - first_id_] = std::move(resp); });
  }

  // Changes the state under the lock with `change`, then starts what the new state allows
  // (a write, a read, the finish) outside it: gRPC may run reactions inline.
  template <typename Change>
  void Act(Change change) {
    bool write = false, read = false, finish = false;
    {
      std::lock_guard lock(mu_);
      change();
      // Answers of a client that is gone are dropped in order.
      while (client_gone_ && !answers_.empty() && answers_.front() && !writing_) {
        answers_.pop_front();
        ++first_id_;
      }
      if (!writing_ && !answers_.empty() && answers_.front()) {
        current_ = std::move(*answers_.front());
        answers_.pop_front();
        ++first_id_;
        writing_ = write = true;
      }
      if (read_paused_ && !client_gone_ && answers_.size() < max_in_flight_) {
        read_paused_ = false;
        read = true;
      }
      // No read outstanding: the client sent everything, or it is gone while reading paused
      // (an outstanding read fails once it is gone, and sets reading_done_).
      const bool no_read = reading_done_ || (client_gone_ && read_paused_);
      if (no_read && answers_.empty() && !writing_ && !finished_) {
        finished_ = finish = true;
      }
    }
    if (write) this->StartWrite(&current_);
    if (read) this->StartRead(&request_);
    if (finish) this->Finish(grpc::Status::OK);
  }

  StreamResources& resources_;
  StreamSlot slot_;
  const size_t max_in_flight_;
  const Process process_;
  const std::function<Response(const Status&)> error_;
  const std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);

  Request request_;    // being read (one read at a time)
  Response current_;   // being written (one write at a time)
  std::mutex mu_;
  std::deque<std::optional<Response>> answers_;  // in request order, from first_id_
  uint64_t first_id_ = 0;
  uint64_t next_id_ = 0;
  bool writing_ = false;
  bool read_paused_ = false;
  bool reading_done_ = false;
  bool client_gone_ = false;
  bool finished_ = false;
};

}  // namespace vecgpu::server
