#include "core/util/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>

namespace vecgpu {
namespace {

TEST(WorkerPoolTest, RunsEveryTask) {
  std::atomic<int> n{0};
  {
    WorkerPool pool("t", 3, 1000);
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(pool.Submit([&] { n++; }).ok());
    pool.Shutdown();
  }
  EXPECT_EQ(n.load(), 500);
}

TEST(WorkerPoolTest, FullQueueIsBusyNotBlocking) {
  WorkerPool pool("t", 1, 2);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::promise<void> started;
  ASSERT_TRUE(pool.Submit([&] {
                    started.set_value();
                    gate.wait();
                  })
                  .ok());
  started.get_future().wait();  // the only worker is now busy
  ASSERT_TRUE(pool.Submit([] {}).ok());
  ASSERT_TRUE(pool.Submit([] {}).ok());
  Status s = pool.Submit([] {});
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("busy"), std::string::npos);
  release.set_value();
  pool.Shutdown();
  EXPECT_EQ(pool.Submit([] {}).code(), StatusCode::kUnavailable);
}

TEST(WorkerPoolTest, OnStartRunsOnEveryThread) {
  std::atomic<int> started{0};
  WorkerPool pool("t", 4, 10, [&] { started++; });
  pool.Shutdown();
  EXPECT_EQ(started.load(), 4);
}

}  // namespace
}  // namespace vecgpu
