#include "cluster/placement/rendezvous.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace vecgpu::cluster {

uint64_t StableHash(std::string_view data) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  // SplitMix64's finaliser: FNV-1a alone mixes its last bytes poorly.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

std::vector<std::string> Rendezvous(std::string_view key, const std::vector<Candidate>& candidates,
                                    int r) {
  std::vector<std::pair<double, const std::string*>> scored;
  scored.reserve(candidates.size());
  std::string buf;
  for (const Candidate& c : candidates) {
    if (!(c.weight > 0)) continue;
    buf.assign(key);
    buf.push_back('\0');
    buf.append(c.id);
    // u in (0, 1): the top 53 bits, never 0 or 1.
    const double u = (static_cast<double>(StableHash(buf) >> 11) + 0.5) / 9007199254740992.0;
    scored.push_back({-c.weight / std::log(u), &c.id});
  }
  // Highest score first; ties (practically never) by id, so the order is total.
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : *a.second < *b.second;
  });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && static_cast<int>(out.size()) < r; ++i) {
    if (std::find(out.begin(), out.end(), *scored[i].second) == out.end()) {
      out.push_back(*scored[i].second);
    }
  }
  return out;
}

int ShardOfId(int64_t id, int shards) {
  if (shards <= 1) return 0;
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((static_cast<uint64_t>(id) >> (8 * i)) & 0xff);
  return static_cast<int>(StableHash(std::string_view(bytes, 8)) % static_cast<uint64_t>(shards));
}

int ShardOfKey(std::string_view key, int shards) {
  if (shards <= 1) return 0;
  return static_cast<int>(StableHash(key) % static_cast<uint64_t>(shards));
}

}  // namespace vecgpu::cluster
