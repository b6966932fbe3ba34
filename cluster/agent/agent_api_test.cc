// The agent API's own edges: a caller of another API version, a crafted matrix, an agent
// that is not there. (The whole contract over the API: cpu_fallback/collection_service_test.cc
// built into agent_test.)
#include <gtest/gtest.h>

#include <future>

#include "cluster/agent/agent_codec.h"
#include "cluster/agent/agent_server.h"
#include "cluster/agent/remote_service.h"
#include "core/engine.h"
#include "core/service/local_service.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/test_data.h"

#include <grpcpp/grpcpp.h>

#include "vecgpu/agent/v1/agent.grpc.pb.h"

namespace vecgpu::cluster {
namespace {

using std::chrono::milliseconds;

class AgentApiTest : public ::testing::Test {
 protected:
  AgentApiTest() {
    EXPECT_TRUE(limits_.Validate().ok());
    SchedulerOptions o;
    EXPECT_TRUE(o.Validate().ok());
    scheduler_ = std::make_unique<Scheduler>(o);
    engine_ = std::make_unique<Engine>(limits_, factory_, nullptr, scheduler_.get());
    local_ = std::make_unique<LocalCollectionService>(*engine_, LocalServiceOptions{});
    server_ = std::make_unique<AgentServer>(*local_, "127.0.0.1", 0);
    EXPECT_TRUE(server_->Start().ok());
    address_ = "127.0.0.1:" + std::to_string(server_->port());
    stub_ = apb::Agent::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  ~AgentApiTest() override {
    server_->Stop(milliseconds(100));
    scheduler_->Shutdown();
  }
  apb::Context Context(int version = kAgentApiVersion) {
    apb::Context c;
    c.set_tenant("t");
    c.set_api_version(version);
    return c;
  }

  Limits limits_;
  cpu::CpuBackendFactory factory_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<LocalCollectionService> local_;
  std::unique_ptr<AgentServer> server_;
  std::string address_;
  std::unique_ptr<apb::Agent::Stub> stub_;
};

TEST_F(AgentApiTest, AnotherApiVersionIsRefusedNamingBoth) {
  grpc::ClientContext c;
  apb::ContextRequest req;
  *req.mutable_context() = Context(99);
  apb::CollectionList out;
  grpc::Status s = stub_->List(&c, req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("99"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find(std::to_string(kAgentApiVersion)), std::string::npos);
}

TEST_F(AgentApiTest, AMatrixThatDoesNotMatchItsShapeIsRefusedAndChangesNothing) {
  ASSERT_TRUE(engine_->Create("t", {"c", "L2", 4, ""}).ok());
  grpc::ClientContext c;
  apb::WriteRequest req;
  *req.mutable_context() = Context();
  req.set_collection("c");
  req.mutable_vectors()->set_rows(1'000'000'000);  // declared far past what it carries
  req.mutable_vectors()->set_cols(4);
  req.mutable_vectors()->add_data(1.f);
  apb::WriteReply out;
  grpc::Status s = stub_->Write(&c, req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("vectors"), std::string::npos) << s.error_message();
  EXPECT_EQ(engine_->Describe("t", "c")->backend.ntotal, 0);

  grpc::ClientContext c2;
  req.mutable_vectors()->set_rows(1);
  req.set_op(42);  // no such operation
  s = stub_->Write(&c2, req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("op"), std::string::npos);
}

TEST_F(AgentApiTest, AnAgentThatIsNotThereIsUnavailableNamingItWithinTheDeadline) {
  server_->Stop(milliseconds(0));
  RemoteCollectionService remote(address_);
  CallContext call;
  call.tenant = "t";
  call.deadline = Clock::now() + milliseconds(300);
  std::promise<Status> p;
  const auto t0 = Clock::now();
  remote.List(call, [&](StatusOr<std::vector<CollectionInfo>> r) { p.set_value(r.status()); });
  const Status st = p.get_future().get();
  EXPECT_TRUE(st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded)
      << st.ToString();
  EXPECT_NE(st.message().find(address_), std::string::npos) << st.message();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
}

// Records a backup's calls and answers them as told.
class FakeSink final : public ReplicaSink {
 public:
  StatusOr<ReplicaPosition> Apply(const std::string&, const std::string&, const std::string&,
                                  int64_t, const std::vector<std::string>&) override {
    return Unimplemented("not here");
  }
  StatusOr<ReplicaPosition> Install(const std::string&, const std::string&, const std::string&,
                                    int64_t, uint64_t, uint64_t, std::string_view) override {
    return Unimplemented("not here");
  }
  StatusOr<ExportedCopy> Export(const std::string& tenant, const std::string& collection) override {
    if (collection == "missing") return NotFound("index 'missing' does not exist");
    return ExportedCopy{tenant + "/" + collection, 17};
  }
  StatusOr<ReplicaPosition> Restore(const std::string& tenant, const std::string& collection,
                                    const std::string& primary, int64_t epoch,
                                    std::string_view snapshot) override {
    restored = tenant + "/" + collection + "/" + primary + "/" + std::to_string(epoch) + "/" +
               std::string(snapshot);
    if (collection == "full") return FailedPrecondition("index 'full' already holds data");
    return ReplicaPosition{17, 0};
  }
  std::string restored;
};

TEST_F(AgentApiTest, ExportAndRestoreReachTheReplicatorAndAreCheckedFirst) {
  // Without a replicator (a node that is not a cluster agent): refused.
  {
    grpc::ClientContext c;
    apb::ExportRequest req;
    req.set_api_version(kAgentApiVersion);
    req.set_tenant("t");
    req.set_collection("c#0");
    apb::ExportReply out;
    grpc::Status s = stub_->Export(&c, req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(s.error_message().find("does not replicate"), std::string::npos);
  }
  FakeSink sink;
  AgentServer agent(*local_, "127.0.0.1", 0, &sink);
  ASSERT_TRUE(agent.Start().ok());
  auto stub = apb::Agent::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(agent.port()),
                                                      grpc::InsecureChannelCredentials()));
  auto exported = [&](const std::string& collection, int version, apb::ExportReply* out) {
    grpc::ClientContext c;
    apb::ExportRequest req;
    req.set_api_version(version);
    req.set_tenant("t");
    req.set_collection(collection);
    return stub->Export(&c, req, out);
  };
  apb::ExportReply out;
  ASSERT_TRUE(exported("c#0", kAgentApiVersion, &out).ok());
  EXPECT_EQ(out.snapshot(), "t/c#0");
  EXPECT_EQ(out.position(), 17u);
  EXPECT_EQ(exported("missing", kAgentApiVersion, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::Status s = exported("c#0", 99, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("99"), std::string::npos);

  auto restore = [&](const std::string& collection, int version) {
    grpc::ClientContext c;
    apb::RestoreRequest req;
    req.set_api_version(version);
    req.set_tenant("t");
    req.set_collection(collection);
    req.set_primary("a1");
    req.set_epoch(3);
    req.set_snapshot("bytes");
    apb::ReplicateReply reply;
    grpc::Status st = stub->Restore(&c, req, &reply);
    EXPECT_TRUE(!st.ok() || reply.position() == 17u);
    return st;
  };
  ASSERT_TRUE(restore("c#1", kAgentApiVersion).ok());
  EXPECT_EQ(sink.restored, "t/c#1/a1/3/bytes");
  s = restore("full", kAgentApiVersion);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("already holds data"), std::string::npos);
  sink.restored.clear();
  EXPECT_EQ(restore("c#1", 2).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(sink.restored.empty());  // another version never reaches the replicator
  agent.Stop(milliseconds(100));
}

}  // namespace
}  // namespace vecgpu::cluster
