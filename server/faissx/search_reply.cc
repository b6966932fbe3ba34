#include "server/faissx/search_reply.h"

#include <cfloat>
#include <chrono>

namespace vecgpu::server {
namespace {

constexpr float kMissingDistance = FLT_MAX;  // 3.4028234663852886e38, as FAISSx reports it

}  // namespace

void WriteSearchResult(MapWriter& w, SearchResult& r, bool binary,
                       const std::vector<FloatMatrix>* vectors) {
  for (size_t i = 0; i < r.labels.size(); ++i) {
    if (r.labels[i] < 0) r.distances[i] = kMissingDistance;
  }
  const size_t k = r.k;
  if (binary) {
    w.Key("distances");
    w.Bin(r.distances.data(), r.distances.size() * sizeof(float));
    w.Key("indices");
    w.Bin(r.labels.data(), r.labels.size() * sizeof(int64_t));
  } else {
    auto& p = w.Key("results");
    p.pack_array(static_cast<uint32_t>(r.nq));
    for (int64_t q = 0; q < r.nq; ++q) {
      p.pack_map(vectors ? 3 : 2);
      p.pack("distances");
      w.FloatArray(r.distances.data() + q * k, k);
      p.pack("indices");
      w.IntArray(r.labels.data() + q * k, k);
      if (vectors) {
        const FloatMatrix& v = (*vectors)[q];
        p.pack("vectors");
        p.pack_array(static_cast<uint32_t>(v.rows));
        for (int64_t j = 0; j < v.rows; ++j) w.FloatArray(v.row(j), v.cols);
      }
    }
    w.Key("distances").pack_array(static_cast<uint32_t>(r.nq));
    for (int64_t q = 0; q < r.nq; ++q) w.FloatArray(r.distances.data() + q * k, k);
    w.Key("indices").pack_array(static_cast<uint32_t>(r.nq));
    for (int64_t q = 0; q < r.nq; ++q) w.IntArray(r.labels.data() + q * k, k);
  }
  w.Int("num_queries", r.nq);
  w.Int("k", r.k);
}

void WriteReplyTrailer(MapWriter& w) {
  using namespace std::chrono;
  w.Double("timestamp", duration<double>(system_clock::now().time_since_epoch()).count());
  w.Str("version", kServerVersion);
}

std::string EncodeSearchReply(SearchResult r, bool binary) {
  MapWriter w;
  w.Bool("success", true);
  WriteSearchResult(w, r, binary, nullptr);
  WriteReplyTrailer(w);
  return w.Finish();
}

}  // namespace vecgpu::server
