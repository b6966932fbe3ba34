#include "server/faissx/msgpack_scan.h"

#include <gtest/gtest.h>

#include <msgpack.hpp>

namespace vecgpu::server {
namespace {

std::string PackMap(const std::map<std::string, std::string>& m) {
  msgpack::sbuffer b;
  msgpack::pack(b, m);
  return std::string(b.data(), b.size());
}

TEST(MsgpackScanTest, AcceptsWellFormedRequests) {
  std::string req = PackMap({{"action", "search"}, {"k", "5"}});
  EXPECT_TRUE(ScanMsgpack(req, {}).ok());
  EXPECT_EQ(PeekAction(req), "search");
}

TEST(MsgpackScanTest, RejectsHugeDeclaredLengths) {
  // array32 declaring 4 billion elements in a 14-byte message
  std::string bad(
      "\x81\xa6"
      "action"
      "\xdd\xff\xff\xff\xff",
      13);
  Status s = ScanMsgpack(bad, {});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Malformed request"), std::string::npos);
  EXPECT_FALSE(ScanMsgpack(std::string("\xdf\xff\xff\xff\xff", 5), {}).ok());  // map32
  EXPECT_FALSE(ScanMsgpack(std::string("\xdb\x7f\xff\xff\xff"
                                       "ab",
                                       7),
                           {})
                   .ok());                                                     // str32
  EXPECT_FALSE(ScanMsgpack(std::string("\xc6\x7f\xff\xff\xff", 5), {}).ok());  // bin32
}

TEST(MsgpackScanTest, LimitsDepthAndElements) {
  std::string deep(10, '\x91');
  deep += '\x01';
  EXPECT_TRUE(ScanMsgpack(deep, {16, 100}).ok());
  EXPECT_FALSE(ScanMsgpack(deep, {8, 100}).ok());
  std::string wide = std::string("\xdc\x00\x05", 3) + std::string(5, '\x01');
  EXPECT_TRUE(ScanMsgpack(wide, {8, 5}).ok());
  EXPECT_FALSE(ScanMsgpack(wide, {8, 4}).ok());
}

TEST(MsgpackScanTest, RejectsTruncationTrailingBytesAndBadType) {
  std::string req = PackMap({{"action", "ping"}});
  EXPECT_FALSE(ScanMsgpack(req.substr(0, req.size() - 1), {}).ok());
  EXPECT_FALSE(ScanMsgpack(req + "x", {}).ok());
  EXPECT_FALSE(ScanMsgpack(std::string("\xc1", 1), {}).ok());
  EXPECT_FALSE(ScanMsgpack("", {}).ok());
}

TEST(MsgpackScanTest, PeekActionIsTolerant) {
  EXPECT_EQ(PeekAction(std::string("\x92\x01\x02", 3)), "");
  EXPECT_EQ(PeekAction(std::string("\x81\xa6"
                                   "action",
                                   8)),
            "");
  EXPECT_EQ(PeekAction(PackMap({{"index_id", "x"}, {"action", "train_index"}})), "train_index");
}

// Vectors as FAISSx sends them (arrays of float64), mixed with other values and cut short:
// the fast skip over runs of floats checks exactly what one-by-one scanning did.
TEST(MsgpackScanTest, RunsOfFloatsAreCheckedLikeAnyValue) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> p(b);
  p.pack_map(3);
  p.pack("action"), p.pack("add_vectors");
  p.pack("vectors");
  p.pack_array(3);
  for (int r = 0; r < 3; ++r) {
    p.pack_array(4);
    p.pack_double(0.5), p.pack_float(1.5f), p.pack(7), p.pack_double(-2);
  }
  p.pack("api_key"), p.pack("k1");
  const std::string ok(b.data(), b.size());
  EXPECT_TRUE(ScanMsgpack(ok, {}).ok());
  for (size_t cut = 1; cut < ok.size(); ++cut) {
    EXPECT_FALSE(ScanMsgpack(ok.substr(0, cut), {}).ok()) << cut;
  }
  // A float type byte where a row ends: one element too many for its array.
  std::string bad = ok;
  bad[bad.find('\x94')] = '\x93';
  EXPECT_FALSE(ScanMsgpack(bad, {}).ok());
  const Envelope e = PeekEnvelope(ok, 256, 128);
  EXPECT_TRUE(e.map);
  EXPECT_EQ(e.action, "add_vectors");
  EXPECT_EQ(e.api_key.value_or(""), "k1");
  EXPECT_FALSE(PeekEnvelope(ok.substr(0, ok.size() - 1), 256, 128).map);
}

}  // namespace
}  // namespace vecgpu::server
