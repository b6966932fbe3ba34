// FaissxService end to end over the real CPU backend, without a socket.
#include "server/faissx/service.h"

#include <gtest/gtest.h>

#include <msgpack.hpp>

#include "core/service/local_service.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "server/faissx/handlers.h"

namespace vecgpu::server {
namespace {

class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest()
      : limits_(MakeLimits()),
        auth_(*Authenticator::Create(true, {{"ka", "a"}, {"kb", "b"}})),
        engine_(limits_, factory_),
        collections_(engine_, {}),
        service_(collections_, auth_, limits_) {}
  static Limits MakeLimits() {
    Limits l;
    l.max_request_bytes = 4096;
    EXPECT_TRUE(l.Validate().ok());
    return l;
  }
  // Sends a request map and returns the decoded reply.
  std::map<std::string, msgpack::object> Call(const std::map<std::string, msgpack::object>& req) {
    msgpack::sbuffer b;
    msgpack::pack(b, req);
    return Reply(service_.Handle(std::string(b.data(), b.size())));
  }
  std::map<std::string, msgpack::object> Reply(const std::string& bytes) {
    handles_.push_back(msgpack::unpack(bytes.data(), bytes.size()));
    return handles_.back().get().as<std::map<std::string, msgpack::object>>();
  }
  msgpack::object Obj(const auto& v) { return msgpack::object(v, zone_); }

  msgpack::zone zone_;
  std::vector<msgpack::object_handle> handles_;
  Limits limits_;
  Authenticator auth_;
  cpu::CpuBackendFactory factory_;
  Engine engine_;
  LocalCollectionService collections_;
  FaissxService service_;
};

TEST_F(ServiceTest, CreateAddSearch) {
  auto r = Call({{"action", Obj("create_index")},
                 {"api_key", Obj("ka")},
                 {"index_id", Obj("v")},
                 {"dimension", Obj(2)},
                 {"request_id", Obj(7)}});
  ASSERT_TRUE(r["success"].as<bool>());
  EXPECT_EQ(r["request_id"].as<int>(), 7);
  r = Call({{"action", Obj("add_vectors")},
            {"api_key", Obj("ka")},
            {"index_id", Obj("v")},
            {"vectors", Obj(std::vector<std::vector<double>>{{0, 0}, {1, 1}, {5, 5}})}});
  ASSERT_TRUE(r["success"].as<bool>());
  EXPECT_EQ(r["ntotal"].as<int>(), 3);
  r = Call({{"action", Obj("search")},
            {"api_key", Obj("ka")},
            {"index_id", Obj("v")},
            {"query_vectors", Obj(std::vector<std::vector<double>>{{0.9, 0.9}})},
            {"k", Obj(4)}});
  ASSERT_TRUE(r["success"].as<bool>());
  auto results = r["results"].as<std::vector<std::map<std::string, msgpack::object>>>();
  auto labels = results[0]["indices"].as<std::vector<int64_t>>();
  EXPECT_EQ(labels, (std::vector<int64_t>{1, 0, 2, -1}));
  auto dists = results[0]["distances"].as<std::vector<double>>();
  EXPECT_DOUBLE_EQ(dists[3], 3.4028234663852886e38);
  auto top = r["indices"].as<std::vector<std::vector<int64_t>>>();
  EXPECT_EQ(top[0], labels);
}

TEST_F(ServiceTest, ErrorsMapToTheWire) {
  auto r = Call({{"action", Obj("list_indexes")}});
  EXPECT_FALSE(r["success"].as<bool>());
  EXPECT_EQ(r["error"].as<std::string>(), "API key required");
  EXPECT_EQ(r["error_code"].as<std::string>(), "AUTH_ERROR");
  r = Call({{"action", Obj("ping")}});
  EXPECT_TRUE(r["success"].as<bool>());  // ping needs no key
  r = Call({{"action", Obj("frobnicate")}, {"api_key", Obj("ka")}});
  EXPECT_EQ(r["error"].as<std::string>(), "Unknown action");
  r = Call({{"action", Obj("search")},
            {"api_key", Obj("kb")},
            {"index_id", Obj("v")},
            {"query_vectors", Obj(std::vector<double>{1, 2})}});
  EXPECT_EQ(r["error_code"].as<std::string>(), "NOT_FOUND");
  r = Call({{"action", Obj("create_index")},
            {"api_key", Obj("ka")},
            {"index_id", Obj("i")},
            {"dimension", Obj(4)},
            {"index_type", Obj("IVF2")}});
  ASSERT_TRUE(r["success"].as<bool>());
  r = Call({{"action", Obj("search")},
            {"api_key", Obj("ka")},
            {"index_id", Obj("i")},
            {"query_vectors", Obj(std::vector<double>{1, 2, 3, 4})}});
  EXPECT_EQ(r["error_code"].as<std::string>(), "NOT_TRAINED");
}

TEST_F(ServiceTest, MalformedAndOversizedPayloads) {
  auto r = Reply(service_.Handle("\x93\x01\x02"));
  EXPECT_FALSE(r["success"].as<bool>());
  EXPECT_NE(r["error"].as<std::string>().find("Malformed request"), std::string::npos);
  r = Reply(service_.Handle(std::string(5000, '\x01')));
  EXPECT_NE(r["error"].as<std::string>().find("above the limit of 4096"), std::string::npos);
  r = Reply(FaissxService::ErrorReply(Unavailable("server busy")));
  EXPECT_EQ(r["error_code"].as<std::string>(), "BUSY");
  // A limit a retry cannot lift is not "busy".
  r = Reply(FaissxService::ErrorReply(ResourceExhausted("tenant already owns 10 indexes")));
  EXPECT_EQ(r["error_code"].as<std::string>(), "RESOURCE_EXHAUSTED");
}

// The action table: every FAISSx action has a handler (where it runs is the service's business:
// cpu_fallback/collection_service_test.cc).
TEST(ActionTableTest, EveryActionHasAHandler) {
  for (const char* a :
       {"ping", "list_indexes", "list_indices", "usage", "create_index", "snapshot",
        "compute_clustering", "train_index", "merge_indices", "recluster_index", "search",
        "hybrid_search", "add_vectors", "add_with_ids", "batch_add_with_ids",
        "search_and_reconstruct", "range_search", "reconstruct", "reconstruct_n", "get_vectors",
        "remove_ids", "replace_vector", "get_index_stats", "get_index_status", "get_index_info",
        "delete_index", "reset", "clear", "set_parameter", "get_parameter", "optimize_index",
        "apply_transform", "get_transform_info"}) {
    ASSERT_NE(FindAction(a), nullptr) << a;
    EXPECT_NE(FindAction(a)->handler, nullptr) << a;
  }
  EXPECT_EQ(FindAction("no_such_action"), nullptr);
}

}  // namespace
}  // namespace vecgpu::server
