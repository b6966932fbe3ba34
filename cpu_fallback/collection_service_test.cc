// The service contract (core/service/collection_service.h) as served in process by
// LocalCollectionService over a real Engine, scheduler and CPU backend: every call completes
// exactly once with a value, on a worker; tenants cannot see each other's collections;
// deadlines and cancellation take calls back, queued or running.
//
// Built twice: in cpu_backend_test against the local service, and, with
// VECGPU_CONTRACT_OVER_AGENT_API, in agent_test against RemoteCollectionService calling the
// same local service through the agent API (cluster/agent): the contract a gateway sees must
// be the one a front end sees in process.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "core/service/local_service.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#if VECGPU_CONTRACT_OVER_AGENT_API
#include "cluster/agent/agent_server.h"
#include "cluster/agent/remote_service.h"
#endif
#include "cpu_fallback/test_data.h"

#ifndef VECGPU_CONTRACT_OVER_AGENT_API
#define VECGPU_CONTRACT_OVER_AGENT_API 0
#endif

namespace vecgpu {
namespace {

using std::chrono::milliseconds;
using vecgpu::testing::Clustered;

constexpr int kDim = 8;

CallContext As(const std::string& tenant) {
  CallContext c;
  c.tenant = tenant;
  c.cancelled = std::make_shared<std::atomic<bool>>(false);
  return c;
}

// Waits for a completion and checks that it came exactly once, and from which thread.
template <typename T>
struct Waiter {
  std::shared_ptr<std::promise<StatusOr<T>>> promise =
      std::make_shared<std::promise<StatusOr<T>>>();
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::thread::id> thread = std::make_shared<std::thread::id>();
  std::future<StatusOr<T>> future = promise->get_future();

  Completion<T> done() {
    return [p = promise, calls = calls, thread = thread](StatusOr<T> r) {
      if (calls->fetch_add(1) == 0) {
        *thread = std::this_thread::get_id();
        p->set_value(std::move(r));
      }
    };
  }
  StatusOr<T> get() {
    EXPECT_EQ(future.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    StatusOr<T> r = future.get();
    std::this_thread::sleep_for(milliseconds(5));
    EXPECT_EQ(calls->load(), 1) << "a completion must be called exactly once";
    return r;
  }
};

class CollectionServiceTest : public ::testing::Test {
 protected:
  CollectionServiceTest() {
    cpu::ConfigureCpuThreads();  // as the server does: FAISS asks core/util/interrupt.h
    SchedulerOptions o;
    o.query_threads = 2;
    o.write_threads = 1;
    EXPECT_TRUE(o.Validate().ok());
    scheduler_ = std::make_unique<Scheduler>(o);
    EXPECT_TRUE(limits_.Validate().ok());
    engine_ = std::make_unique<Engine>(limits_, factory_, nullptr, scheduler_.get());
    local_ = std::make_unique<LocalCollectionService>(*engine_, LocalServiceOptions{});
    service_ = local_.get();
#if VECGPU_CONTRACT_OVER_AGENT_API
    agent_ = std::make_unique<cluster::AgentServer>(*local_, "127.0.0.1", 0);
    EXPECT_TRUE(agent_->Start().ok());
    remote_ = std::make_unique<cluster::RemoteCollectionService>("127.0.0.1:" +
                                                                  std::to_string(agent_->port()));
    service_ = remote_.get();
#endif
  }
  ~CollectionServiceTest() override {
#if VECGPU_CONTRACT_OVER_AGENT_API
    remote_.reset();
    agent_->Stop(milliseconds(100));
#endif
    scheduler_->Shutdown();
  }


  template <typename T, typename Start>
  StatusOr<T> Call(Start start) {
    Waiter<T> w;
    start(w.done());
    return w.get();
  }
  Status Create(const std::string& tenant, const std::string& name, const std::string& type) {
    CreateCollectionRequest r{name, type, kDim, "", ""};
    return Call<CollectionInfo>([&](auto done) { service_->Create(As(tenant), r, done); }).status();
  }
  StatusOr<WriteReply> Add(const CallContext& call, const std::string& name, FloatMatrix x) {
    WriteRequest w;
    w.op = WriteRequest::Op::kAdd;
    w.collection = name;
    w.vectors = std::move(x);
    return Call<WriteReply>([&](auto done) { service_->Write(call, w, done); });
  }
  StatusOr<SearchReply> Search(const CallContext& call, const std::string& name, FloatMatrix q,
                               int k) {
    SearchRequest s;
    s.collection = name;
    s.queries = std::move(q);
    s.k = k;
    return Call<SearchReply>([&](auto done) { service_->Search(call, s, done); });
  }
  // Occupies the collection's queue until the returned function is called.
  std::function<void()> Block(const std::string& tenant, const std::string& name) {
    auto gate = std::make_shared<std::promise<void>>();
    auto started = std::make_shared<std::promise<void>>();
    auto opened = gate->get_future().share();
    EXPECT_TRUE(engine_
                    ->Submit(
                        tenant, name, WorkClass::kShort, Clock::time_point::max(),
                        [opened, started] {
                          started->set_value();
                          opened.wait();
                        },
                        [](const Status&) {})
                    .ok());
    started->get_future().wait();
    return [gate] { gate->set_value(); };
  }

  Limits limits_;
  cpu::CpuBackendFactory factory_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<LocalCollectionService> local_;
#if VECGPU_CONTRACT_OVER_AGENT_API
  std::unique_ptr<cluster::AgentServer> agent_;
  std::unique_ptr<cluster::RemoteCollectionService> remote_;
#endif
  CollectionService* service_ = nullptr;
};

TEST_F(CollectionServiceTest, EveryCallCompletesOnceWithValues) {
  ASSERT_TRUE(Create("a", "c", "L2").ok());
  const FloatMatrix x = Clustered(100, kDim);
  auto added = Add(As("a"), "c", x);
  ASSERT_TRUE(added.ok()) << added.status().ToString();
  EXPECT_EQ(added->count, 100);
  EXPECT_EQ(added->ntotal, 100);

  auto found = Search(As("a"), "c", vecgpu::testing::Rows(x, 7, 1), 1);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->knn.labels.at(0), 7);

  ReadRequest read;
  read.op = ReadRequest::Op::kReconstruct;
  read.collection = "c";
  read.ids = {3};
  auto got = Call<ReadReply>([&](auto done) { service_->Read(As("a"), read, done); });
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->vectors.data, vecgpu::testing::Rows(x, 3, 1).data);

  auto info = Call<CollectionInfo>([&](auto done) { service_->Describe(As("a"), "c", done); });
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->backend.ntotal, 100);
  auto list = Call<std::vector<CollectionInfo>>([&](auto done) { service_->List(As("a"), done); });
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->at(0).name, "c");

  auto usage = Call<UsageReply>([&](auto done) { service_->Usage(As("a"), done); });
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->caller.use.vectors, 100);
  EXPECT_TRUE(usage->tenants.empty()) << "only an admin sees every tenant";

  ASSERT_TRUE(Call<Empty>([&](auto done) { service_->Drop(As("a"), "c", done); }).ok());
  EXPECT_EQ(Search(As("a"), "c", vecgpu::testing::Rows(x, 7, 1), 1).status().code(),
            StatusCode::kNotFound);
}

// Work that touches an index runs on the scheduler's workers: while the collection's queue is
// busy, a write waits there instead of running on the caller's thread.
TEST_F(CollectionServiceTest, WritesCreatesAndDropsRunOnTheScheduler) {
  ASSERT_TRUE(Create("a", "c", "L2").ok());
  auto release = Block("a", "c");
  Waiter<WriteReply> add;
  WriteRequest w;
  w.op = WriteRequest::Op::kAdd;
  w.collection = "c";
  w.vectors = Clustered(10, kDim);
  service_->Write(As("a"), w, add.done());
  Waiter<Empty> drop;
  service_->Drop(As("a"), "c", drop.done());
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(add.calls->load(), 0) << "the write ran although its collection's queue was busy";
  EXPECT_EQ(drop.calls->load(), 0);
  // Another collection's create does not wait for this one's work.
  ASSERT_TRUE(Create("a", "other", "L2").ok());
  release();
  ASSERT_TRUE(add.get().ok());
  EXPECT_NE(*add.thread, std::this_thread::get_id());
  ASSERT_TRUE(drop.get().ok());  // in order: after the write
}

TEST_F(CollectionServiceTest, AnotherTenantsCollectionIsNotFoundAndUntouched) {
  ASSERT_TRUE(Create("a", "c", "L2").ok());
  ASSERT_TRUE(Add(As("a"), "c", Clustered(10, kDim)).ok());
  EXPECT_EQ(Search(As("b"), "c", Clustered(1, kDim), 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Add(As("b"), "c", Clustered(5, kDim)).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Call<Empty>([&](auto done) { service_->Drop(As("b"), "c", done); }).status().code(),
            StatusCode::kNotFound);
  auto info = Call<CollectionInfo>([&](auto done) { service_->Describe(As("a"), "c", done); });
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->backend.ntotal, 10);
  auto list = Call<std::vector<CollectionInfo>>([&](auto done) { service_->List(As("b"), done); });
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(CollectionServiceTest, ADeadlineThatPassesWhileQueuedAnswersDeadlineExceeded) {
  ASSERT_TRUE(Create("a", "c", "L2").ok());
  auto release = Block("a", "c");
  CallContext call = As("a");
  call.deadline = Clock::now() + milliseconds(20);
  Waiter<WriteReply> add;
  WriteRequest w;
  w.op = WriteRequest::Op::kAdd;
  w.collection = "c";
  w.vectors = Clustered(10, kDim);
  service_->Write(call, w, add.done());
  std::this_thread::sleep_for(milliseconds(60));
  release();
  EXPECT_EQ(add.get().status().code(), StatusCode::kDeadlineExceeded);
  auto info = Call<CollectionInfo>([&](auto done) { service_->Describe(As("a"), "c", done); });
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->backend.ntotal, 0) << "an expired write changed the collection";
}

TEST_F(CollectionServiceTest, ACancelledCallIsAnsweredCancelledAndChangesNothing) {
  ASSERT_TRUE(Create("a", "c", "L2").ok());
  // Cancelled before it is made.
  CallContext gone = As("a");
  gone.cancelled->store(true);
  EXPECT_EQ(Add(gone, "c", Clustered(10, kDim)).status().code(), StatusCode::kCancelled);
  // Cancelled while queued.
  auto release = Block("a", "c");
  CallContext call = As("a");
  Waiter<ReadReply> read;
  ReadRequest r;
  r.op = ReadRequest::Op::kRange;
  r.collection = "c";
  r.count = -1;
  service_->Read(call, r, read.done());
  Waiter<WriteReply> add;
  WriteRequest w;
  w.op = WriteRequest::Op::kReplace;
  w.collection = "c";
  w.ids = {0};
  w.vectors = Clustered(1, kDim);
  service_->Write(call, w, add.done());
  call.cancelled->store(true);
  std::this_thread::sleep_for(milliseconds(100));  // the agent API's watcher polls every 20 ms
  release();
  EXPECT_EQ(read.get().status().code(), StatusCode::kCancelled);
  EXPECT_EQ(add.get().status().code(), StatusCode::kCancelled);
  auto info = Call<CollectionInfo>([&](auto done) { service_->Describe(As("a"), "c", done); });
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->backend.ntotal, 0);
}

// Running long work stops at its next cancellation point (inside k-means) when the caller
// takes the call back: a clustering of many minutes answers CANCELLED.
TEST_F(CollectionServiceTest, CancellingRunningClusteringStopsIt) {
  ClusterRequest req;
  req.vectors = Clustered(20000, 32);
  req.n_clusters = 2000;
  req.niter = 500;  // 6.4e11 of max_work_cost 1e12: a minute or more here
  CallContext call = As("a");
  Waiter<ClusteringResult> w;
  service_->Cluster(call, req, w.done());
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(w.calls->load(), 0) << "the clustering finished too soon to be cancelled";
  call.cancelled->store(true);
  EXPECT_EQ(w.get().status().code(), StatusCode::kCancelled);
}

// The Vald API's collections: keyed creates wrap an index type without an id map in an IDMap2.
TEST_F(CollectionServiceTest, KeyedCreateWrapsTheIndexInAnIdMap) {
  CreateCollectionRequest r{"v", "HNSW16", kDim, "L2", ""};
  r.keyed = true;
  auto info = Call<CollectionInfo>([&](auto done) { service_->Create(As("a"), r, done); });
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_NE(info->spec.id_map, IdMapKind::kNone);
  WriteRequest put;
  put.op = WriteRequest::Op::kPutKeyed;
  put.collection = "v";
  put.objects.push_back({"x", std::vector<float>(kDim, 1.f), 1, false});
  ASSERT_TRUE(Call<WriteReply>([&](auto done) { service_->Write(As("a"), put, done); }).ok());
  SearchRequest s;
  s.collection = "v";
  s.queries.rows = 1;
  s.queries.cols = kDim;
  s.queries.data.assign(kDim, 1.f);
  s.k = 1;
  s.with_keys = true;
  auto found = Call<SearchReply>([&](auto done) { service_->Search(As("a"), s, done); });
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_EQ(found->keys.size(), 1u);
  EXPECT_EQ(found->keys[0], "x");
}

TEST_F(CollectionServiceTest, SnapshotWithoutADataDirectoryIsUnimplemented) {
  auto r = Call<SnapshotReport>([&](auto done) { service_->Snapshot(As("a"), done); });
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace vecgpu
