#include "bench/load.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace vecgpu::bench {
namespace {

// A target whose every call takes `service` and counts calls: the load generator's own
// behaviour, without a server.
class SleepTarget : public Target {
 public:
  explicit SleepTarget(std::chrono::microseconds service) : service_(service) {}
  std::string name() const override { return "sleep"; }
  Status Prepare(const IndexConfig&, const Dataset&, int64_t) override { return Status::Ok(); }
  StatusOr<std::unique_ptr<Connection>> Connect() override {
    return std::unique_ptr<Connection>(new Conn(*this));
  }
  Status SetParameter(const std::string&, int) override { return Status::Ok(); }
  Status Cleanup() override { return Status::Ok(); }
  std::atomic<int64_t> searches{0}, adds{0};

 private:
  struct Conn : Connection {
    explicit Conn(SleepTarget& t) : t(t) {}
    Status Search(const float*, int64_t, int, std::vector<int64_t>*) override {
      t.searches++;
      std::this_thread::sleep_for(t.service_);
      return Status::Ok();
    }
    Status Add(const float*, int64_t) override {
      t.adds++;
      std::this_thread::sleep_for(t.service_);
      return t.adds % 4 == 0 ? Status(StatusCode::kResourceExhausted, "BUSY: full") : Status::Ok();
    }
    SleepTarget& t;
  };
  std::chrono::microseconds service_;
};

const float kVector[4] = {0, 0, 0, 0};
const VectorSource kSource = [](int64_t) { return kVector; };

TEST(LoadTest, OpenLoopKeepsItsRate) {
  SleepTarget t(std::chrono::microseconds(500));
  LoadSpec spec;
  spec.mode = LoadMode::kOpen;
  spec.clients = 8;
  spec.rate_rps = 400;
  spec.warmup_s = 0.2;
  spec.duration_s = 1.0;
  LoadResult r = RunLoad(t, spec, kSource, kSource);
  // The schedule fixes the count: 400 requests in the measured second (the service time is
  // far below the inter-arrival time, so nothing is dropped or late).
  EXPECT_NEAR(r.requests, 400, 4);
  EXPECT_EQ(r.errors, 0);
  EXPECT_NEAR(r.throughput_rps(), 400, 20);
}

TEST(LoadTest, OpenLoopCountsQueueingAgainstTheServer) {
  // One connection, 10 ms per request, offered 200/s: requests queue behind each other and
  // their latency, measured from the scheduled start, grows far beyond the service time.
  SleepTarget t(std::chrono::milliseconds(10));
  LoadSpec spec;
  spec.mode = LoadMode::kOpen;
  spec.clients = 1;
  spec.rate_rps = 200;
  spec.warmup_s = 0;
  spec.duration_s = 0.5;
  LoadResult r = RunLoad(t, spec, kSource, kSource);
  EXPECT_GT(r.latency.Percentile(99), 100'000'000);  // > 100 ms, against a 10 ms service time
  EXPECT_GT(r.late_starts, 0);
}

TEST(LoadTest, ClosedLoopBoundsAndErrorKinds) {
  SleepTarget t(std::chrono::microseconds(100));
  LoadSpec spec;
  spec.op = Operation::kAdd;
  spec.clients = 2;
  spec.warmup_s = 0;
  spec.duration_s = 10;
  spec.max_requests = 100;
  LoadResult r = RunLoad(t, spec, kSource, kSource);
  EXPECT_EQ(r.requests, 100);
  EXPECT_EQ(r.errors, r.errors_by_kind["BUSY"]);
  EXPECT_GT(r.errors, 0);
  EXPECT_EQ(r.latency.count(), r.requests - r.errors);
  EXPECT_EQ(t.searches.load(), 0);
}

TEST(LoadTest, MixedSendsBothKinds) {
  SleepTarget t(std::chrono::microseconds(50));
  LoadSpec spec;
  spec.op = Operation::kMixed;
  spec.write_fraction = 0.5;
  spec.clients = 2;
  spec.warmup_s = 0;
  spec.duration_s = 5;
  spec.max_requests = 400;
  RunLoad(t, spec, kSource, kSource);
  EXPECT_GT(t.searches.load(), 100);
  EXPECT_GT(t.adds.load(), 100);
}

}  // namespace
}  // namespace vecgpu::bench
