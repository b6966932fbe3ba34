// The gRPC front end in process: a real GrpcServer on a free port over an Engine, called
// through the generated stubs. The Python suite (tests/python/test_vald.py) covers the rest
// with the Vald client against the binary.
#include "server/grpc/grpc_server.h"

#include <gtest/gtest.h>

#include "core/service/local_service.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "server/grpc/vald_services.h"

namespace vecgpu::server {
namespace {

Limits ValidLimits() {
  Limits l;
  EXPECT_TRUE(l.Validate().ok());
  return l;
}

class GrpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GrpcEnv env;
    env.service = &collections_;
    env.auth = &auth_;
    env.limits = limits_;
    server_ = std::make_unique<GrpcServer>(std::move(env), GrpcServerOptions{"127.0.0.1", 0});
    ASSERT_TRUE(server_->Start().ok());
    channel_ = grpc::CreateChannel(server_->endpoint(), grpc::InsecureChannelCredentials());
  }
  void TearDown() override { server_->Stop(std::chrono::milliseconds(100)); }

  static pb::Insert::Request Insert(const std::string& id, std::vector<float> v) {
    pb::Insert::Request r;
    r.mutable_vector()->set_id(id);
    r.mutable_vector()->mutable_vector()->Assign(v.begin(), v.end());
    return r;
  }

  Limits limits_ = ValidLimits();
  cpu::CpuBackendFactory factory_;
  Engine engine_{limits_, factory_};
  LocalCollectionService collections_{engine_, {}};
  Authenticator auth_ = *Authenticator::Create(false, {});
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(GrpcServerTest, InsertThenSearchWithStringIds) {
  auto insert = ::vald::v1::Insert::NewStub(channel_);
  auto search = ::vald::v1::Search::NewStub(channel_);
  const std::vector<std::pair<std::string, std::vector<float>>> objects = {
      {"near", {1, 0, 0}}, {"mid", {2, 0, 0}}, {"far", {5, 0, 0}}};
  for (const auto& [id, v] : objects) {
    grpc::ClientContext c;
    pb::Object::Location loc;
    ASSERT_TRUE(insert->Insert(&c, Insert(id, v), &loc).ok());
    EXPECT_EQ(loc.uuid(), id);
  }
  // The collection was created on the first insert: IDMap2 over Flat, dimension 3.
  auto info = engine_.Describe("default", "default");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->spec.dim, 3);
  EXPECT_EQ(info->spec.id_map, IdMapKind::kIdMap2);
  {
    grpc::ClientContext c;
    pb::Object::Location loc;
    EXPECT_EQ(insert->Insert(&c, Insert("near", {9, 9, 9}), &loc).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);
  }
  pb::Search::Request req;
  for (float x : {0.f, 0.f, 0.f}) req.add_vector(x);
  req.mutable_config()->set_num(2);
  req.mutable_config()->set_radius(-1);
  grpc::ClientContext c;
  pb::Search::Response resp;
  ASSERT_TRUE(search->Search(&c, req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 2);
  EXPECT_EQ(resp.results(0).id(), "near");
  EXPECT_FLOAT_EQ(resp.results(0).distance(), 1);
  EXPECT_EQ(resp.results(1).id(), "mid");
  EXPECT_FLOAT_EQ(resp.results(1).distance(), 4);
}

TEST_F(GrpcServerTest, StreamInsertAnswersEveryItem) {
  auto insert = ::vald::v1::Insert::NewStub(channel_);
  grpc::ClientContext c;
  auto stream = insert->StreamInsert(&c);
  ASSERT_TRUE(stream->Write(Insert("a", {1, 2})));
  ASSERT_TRUE(stream->Write(Insert("b", {1, 2, 3})));  // wrong dimension
  ASSERT_TRUE(stream->Write(Insert("c", {3, 4})));
  stream->WritesDone();
  std::vector<pb::Object::StreamLocation> out;
  for (pb::Object::StreamLocation r; stream->Read(&r);) out.push_back(r);
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].location().uuid(), "a");
  EXPECT_EQ(out[1].status().code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(out[2].location().uuid(), "c");
}

TEST(GrpcStatusTest, CoreCodesMapOneToOne) {
  for (int code = 1; code <= 16; ++code) {
    Status st(static_cast<StatusCode>(code), "m");
    EXPECT_EQ(static_cast<int>(ToGrpc(st).error_code()), code);
    EXPECT_EQ(ToGrpc(st).error_message(), "m");
    EXPECT_EQ(ToRpcStatus(st).code(), code);
  }
  EXPECT_TRUE(ToGrpc(Status::Ok()).ok());
}

}  // namespace
}  // namespace vecgpu::server
