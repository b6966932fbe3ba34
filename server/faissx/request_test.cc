#include "server/faissx/request.h"

#include <gtest/gtest.h>

#include <cmath>

namespace vecgpu::server {
namespace {

// Packs a request map built by `fill` (which writes `n` key/value pairs).
template <typename F>
std::string Req(uint32_t n, F fill) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> p(b);
  p.pack_map(n);
  fill(p);
  return std::string(b.data(), b.size());
}

Limits TestLimits() {
  Limits l;
  l.max_dimension = 64;
  EXPECT_TRUE(l.Validate().ok());
  return l;
}

TEST(RequestTest, DecodesTypedFields) {
  auto r = Request::Decode(Req(4,
                               [](auto& p) {
                                 p.pack("action"), p.pack("search");
                                 p.pack("index_id"), p.pack("docs");
                                 p.pack("k"), p.pack(7);
                                 p.pack("query_vectors");
                                 p.pack(std::vector<std::vector<double>>{{1, 2}, {3, 4}});
                               }),
                           TestLimits());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->action(), "search");
  EXPECT_EQ(*r->String("index_id", 10), "docs");
  EXPECT_EQ(*r->Int("k", 1, 10), 7);
  EXPECT_EQ(r->Int("k", 1, 5).status().code(), StatusCode::kInvalidArgument);
  auto m = r->Vectors("query_vectors", {2, false}, 10);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->data, (std::vector<float>{1, 2, 3, 4}));
  auto wrong = r->Vectors("query_vectors", {3, false}, 10);
  EXPECT_NE(wrong.status().message().find("dimension 2 does not match"), std::string::npos);
  EXPECT_FALSE(r->Vectors("query_vectors", {2, false}, 1).ok());  // too many rows
  EXPECT_EQ(r->OptionalInt("absent", 10, 1, 100).value(), 10);
}

TEST(RequestTest, OneDimensionalVectorAndIntegers) {
  auto r = Request::Decode(Req(2,
                               [](auto& p) {
                                 p.pack("action"), p.pack("add_vectors");
                                 p.pack("vectors"), p.pack(std::vector<int>{1, 0, 3});
                               }),
                           TestLimits());
  ASSERT_TRUE(r.ok());
  auto m = r->Vectors("vectors", {3, false}, 10);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->rows, 1);
  EXPECT_EQ(m->data, (std::vector<float>{1, 0, 3}));
}

TEST(RequestTest, BinFloat32Vectors) {
  std::vector<float> v = {1.5f, -2.f, 3.f, 4.f, 5.f, 6.f};
  auto r = Request::Decode(Req(2,
                               [&](auto& p) {
                                 p.pack("action"), p.pack("search");
                                 p.pack("query_vectors");
                                 p.pack_bin(24);
                                 p.pack_bin_body(reinterpret_cast<const char*>(v.data()), 24);
                               }),
                           TestLimits());
  ASSERT_TRUE(r.ok());
  auto m = r->Vectors("query_vectors", {3, false}, 10);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->data, v);
  EXPECT_NE(r->Vectors("query_vectors", {4, false}, 10).status().message().find("whole number"),
            std::string::npos);
  auto bits = r->Vectors("query_vectors", {8, true}, 100);  // packed bits, 1 byte per vector
  ASSERT_TRUE(bits.ok());
  EXPECT_EQ(bits->rows, 24);
}

TEST(RequestTest, RejectsBadShapesAndTypes) {
  auto r = Request::Decode(Req(5,
                               [](auto& p) {
                                 p.pack("action"), p.pack("add_vectors");
                                 p.pack("ragged");
                                 p.pack(std::vector<std::vector<double>>{{1, 2}, {3}});
                                 p.pack("text");
                                 p.pack(std::vector<std::string>{"a"});
                                 p.pack("ids"), p.pack(std::vector<double>{1.5});
                                 p.pack("k"), p.pack_double(2.5);  // integral doubles pack as ints
                               }),
                           TestLimits());
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->Vectors("ragged", {}, 10).status().message().find("vector 1 has 1 components"),
            std::string::npos);
  EXPECT_NE(r->Vectors("text", {}, 10).status().message().find("not an array of numbers"),
            std::string::npos);
  EXPECT_NE(r->Ids("ids", 10).status().message().find("not an integer"), std::string::npos);
  EXPECT_NE(r->Int("k", 1, 10).status().message().find("must be an integer"), std::string::npos);
  EXPECT_NE(r->String("missing", 10).status().message().find("missing: required"),
            std::string::npos);
}

TEST(RequestTest, MalformedRequests) {
  Limits l = TestLimits();
  auto not_map = Request::Decode(std::string("\x93\x01\x02\x03", 4), l);
  EXPECT_NE(not_map.status().message().find("must be a msgpack map"), std::string::npos);
  auto no_action = Request::Decode(Req(1, [](auto& p) { p.pack("k"), p.pack(1); }), l);
  EXPECT_NE(no_action.status().message().find("no 'action'"), std::string::npos);
  auto int_key = Request::Decode(Req(1, [](auto& p) { p.pack(1), p.pack(1); }), l);
  EXPECT_NE(int_key.status().message().find("keys must be strings"), std::string::npos);
  auto garbage = Request::Decode("\xc1\xc1", l);
  EXPECT_NE(garbage.status().message().find("Malformed request"), std::string::npos);
}

TEST(RequestTest, ParamsAndWideVectorsAreBounded) {
  Limits l = TestLimits();
  auto r = Request::Decode(Req(3,
                               [](auto& p) {
                                 p.pack("action"), p.pack("search");
                                 p.pack("params");
                                 p.pack(std::map<std::string, int>{{"nprobe", 8}, {"ef", 40}});
                                 p.pack("wide"), p.pack(std::vector<double>(65, 1.0));
                               }),
                           l);
  ASSERT_TRUE(r.ok());
  auto params = r->Params();
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(*params->nprobe, 8);
  EXPECT_EQ(*params->ef_search, 40);
  EXPECT_FALSE(r->Vectors("wide", {}, 10).ok());  // 65 components > max_dimension 64
}

}  // namespace
}  // namespace vecgpu::server
