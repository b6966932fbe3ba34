#include "core/index_spec.h"

#include <cctype>
#include <charconv>
#include <regex>
#include <sstream>
#include <vector>

namespace vecgpu {
namespace {

constexpr std::string_view kIpSuffix = "_IP";

// Limits on factory parameters: FAISS 1.7.3 aborts, crashes or loops forever on degenerate
// values (PQ0, IVF0, HNSW1, nbits 0...) and allocates codebooks of 2^nbits entries, so every
// number is checked here, before FAISS sees the string.
constexpr int kMaxNlist = 1 << 20;
constexpr int64_t kMaxCentroidFloats = int64_t{1} << 28;  // 1 GiB of coarse centroids
constexpr int kMaxHnswM = 256;
constexpr int kMaxCodeBits = 12;

int ToInt(const std::string& s) {
  int v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

StatusOr<Metric> ParseMetric(std::string_view m) {
  if (m == "L2" || m == "l2" || m == "METRIC_L2" || m == "0") return Metric::kL2;
  if (m == "IP" || m == "ip" || m == "INNER_PRODUCT" || m == "METRIC_INNER_PRODUCT" || m == "1")
    return Metric::kInnerProduct;
  return InvalidArgument("metric: unknown metric '" + std::string(m) + "' (expected L2 or IP)");
}

// Fills the type details of a FAISS factory string that FAISSx clients read back.
void FillDetails(IndexSpec& spec) {
  std::smatch m;
  const std::string& f = spec.factory;
  static const std::regex ivf(R"((?:^|,)IVF(\d+))");
  static const std::regex hnsw(R"((?:^|,)HNSW(\d+))");
  static const std::regex pq(R"((?:^|,)PQ(\d+)(?:x(\d+))?)");
  static const std::regex sq(R"((?:^|,)SQ(\d+|fp16))");
  if (std::regex_search(f, m, ivf)) spec.nlist = ToInt(m[1]);
  if (std::regex_search(f, m, hnsw)) spec.hnsw_m = ToInt(m[1]);
  if (std::regex_search(f, m, pq)) {
    spec.pq_m = ToInt(m[1]);
    spec.pq_nbits = m[2].matched ? ToInt(m[2]) : 8;
  }
  if (std::regex_search(f, m, sq)) spec.sq_bits = m[1] == "fp16" ? 16 : ToInt(m[1]);
}

// FAISSx clients number scalar quantizers two ways: IndexScalarQuantizer sends "SQ{n}" with
// faissx's own constants (QT_8bit=1, QT_4bit=2, QT_8bit_uniform=3, QT_4bit_uniform=4,
// QT_fp16=5, QT_8bit_direct=6, QT_6bit=7; its default is "SQ8"), IndexIVFScalarQuantizer sends
// "IVF{n}_SQ{q}" with FAISS's enum (QT_8bit=0, QT_4bit=1, QT_8bit_uniform=2,
// QT_4bit_uniform=3, QT_fp16=4, QT_8bit_direct=5, QT_6bit=6). Bit counts (4, 6, 8, 16) and
// FAISS factory names win where they collide.
std::string SqFactory(const std::string& q, bool faiss_enum) {
  if (q == "8" || q == "8bit") return "SQ8";
  if (q == "4" && !faiss_enum) return "SQ4";
  if (q == "6" || q == "6bit") return "SQ6";
  if (q == "16" || q == "fp16") return "SQfp16";
  if (q == "4bit") return "SQ4";
  static const char* kFaissEnum[] = {"SQ8", "SQ4", "SQ8", "SQ4", "SQfp16", "SQ8", "SQ6"};
  static const char* kFaissxEnum[] = {"SQ8", "SQ8", "SQ4", "SQ8", "SQ4", "SQfp16", "SQ8", "SQ6"};
  int n = ToInt(q);
  if (q.empty() || std::to_string(n) != q) return "";
  if (faiss_enum && n >= 0 && n <= 6) return kFaissEnum[n];
  if (!faiss_enum && n >= 0 && n <= 7) return kFaissxEnum[n];
  return "";
}

// Maps a FAISSx shorthand (already stripped of "_IP") to a FAISS factory string, or returns
// an empty string when `t` is not a shorthand.
std::string ShorthandToFactory(const std::string& t) {
  static const std::regex ivf(R"(IVF(\d+))");
  static const std::regex ivf_pq(R"(IVF(\d+),PQ(\d+)(?:x(\d+))?)");
  static const std::regex ivf_sq(R"(IVF(\d+)_SQ(\w+))");
  static const std::regex hnsw(R"(HNSW(\d+))");
  static const std::regex pq(R"(PQ(\d+)(?:x(\d+))?)");
  static const std::regex sq(R"(SQ(\w+))");
  std::smatch m;
  if (t == "L2" || t == "IP" || t == "Flat" || t == "FLAT") return "Flat";
  if (t == "IVF") return "IVF100,Flat";
  if (t == "HNSW") return "HNSW32";
  if (t == "PQ") return "PQ8x8";
  if (t == "SQ") return "SQ8";
  if (std::regex_match(t, m, ivf)) return "IVF" + m[1].str() + ",Flat";
  if (std::regex_match(t, m, ivf_pq)) {
    return "IVF" + m[1].str() + ",PQ" + m[2].str() + "x" + (m[3].matched ? m[3].str() : "8");
  }
  if (std::regex_match(t, m, ivf_sq)) {
    std::string sq_factory = SqFactory(m[2].str(), /*faiss_enum=*/true);
    return sq_factory.empty() ? "" : "IVF" + m[1].str() + "," + sq_factory;
  }
  if (std::regex_match(t, m, hnsw)) return t;
  if (std::regex_match(t, m, pq))
    return "PQ" + m[1].str() + "x" + (m[2].matched ? m[2].str() : "8");
  if (std::regex_match(t, m, sq)) return SqFactory(m[1].str(), /*faiss_enum=*/false);
  return "";
}

StatusOr<IndexSpec> ParseBinary(IndexSpec spec, const std::string& t) {
  static const std::regex bivf(R"(BINARY_IVF(\d*))");
  static const std::regex bhash(R"(BINARY_HASH(\d*))");
  std::smatch m;
  if (spec.dim % 8 != 0) {
    return InvalidArgument("dimension: binary indexes need a multiple of 8 bits, got " +
                           std::to_string(spec.dim));
  }
  spec.binary = true;
  if (t == "BINARY_FLAT") {
    spec.factory = "BFlat";
  } else if (std::regex_match(t, m, bivf)) {
    spec.nlist = m[1].length() ? ToInt(m[1]) : 100;
    if (spec.nlist < 1 || spec.nlist > kMaxNlist || m[1].length() > 7) {
      return InvalidArgument("index_type: nlist must be within 1.." + std::to_string(kMaxNlist));
    }
    spec.factory = "BIVF" + std::to_string(spec.nlist);
  } else if (std::regex_match(t, m, bhash)) {
    int bits = m[1].length() ? ToInt(m[1]) : 8;
    if (bits < 1 || bits > 32 || bits > spec.dim || m[1].length() > 3) {
      return InvalidArgument("index_type: hash bits must be within 1..min(32, dimension)");
    }
    spec.factory = "BHash" + std::to_string(bits);
  } else {
    return InvalidArgument("index_type: unknown binary index type '" + t + "'");
  }
  return spec;
}

Status BadFactory(const std::string& factory, const std::string& why) {
  return InvalidArgument("index_type: '" + factory + "': " + why);
}

// "<prefix><digits><rest>": the number after `prefix`, or -1 when `token` does not start so.
int NumberAfter(const std::string& token, std::string_view prefix, std::string* rest) {
  if (token.rfind(prefix, 0) != 0) return -1;
  size_t i = prefix.size(), j = i;
  while (j < token.size() && j - i < 9 && std::isdigit(static_cast<unsigned char>(token[j]))) ++j;
  if (j == i) return -1;
  *rest = token.substr(j);
  return std::stoi(token.substr(i, j - i));
}

// "PQ{m}[x{b}][np]" within an index of dimension d.
Status CheckPq(const std::string& f, const std::string& token, int d) {
  std::string rest;
  int m = NumberAfter(token, "PQ", &rest);
  int bits = 8;
  if (rest.rfind("x", 0) == 0) {
    std::string tail;
    bits = NumberAfter(rest, "x", &tail);
    rest = tail;
  }
  if (m < 1 || (rest != "" && rest != "np"))
    return BadFactory(f, "bad PQ component '" + token + "'");
  if (d % m != 0) {
    return BadFactory(f, "PQ" + std::to_string(m) + " needs a dimension divisible by " +
                             std::to_string(m) + ", it is " + std::to_string(d));
  }
  if (bits < 1 || bits > kMaxCodeBits) {
    return BadFactory(f, "PQ code bits must be within 1.." + std::to_string(kMaxCodeBits));
  }
  return Status::Ok();
}

bool IsSq(const std::string& t) { return t == "SQ4" || t == "SQ6" || t == "SQ8" || t == "SQfp16"; }

Status CheckHnswM(const std::string& f, int m) {
  if (m < 2 || m > kMaxHnswM) {
    return BadFactory(f, "HNSW M must be within 2.." + std::to_string(kMaxHnswM));
  }
  return Status::Ok();
}

// Accepts [transforms,] main [,encoding] with supported components only.
Status ValidateFloatFactory(const std::string& f, int dim) {
  std::vector<std::string> parts;
  std::stringstream ss(f);
  for (std::string p; std::getline(ss, p, ',');) parts.push_back(p);
  size_t i = 0;
  int d = dim;
  std::string rest;
  // Vector transforms that may precede the index.
  for (; i + 1 < parts.size(); ++i) {
    const std::string& t = parts[i];
    int n;
    if (t == "L2norm") continue;
    if ((n = NumberAfter(t, "PCAWR", &rest)) >= 0 || (n = NumberAfter(t, "PCAW", &rest)) >= 0 ||
        (n = NumberAfter(t, "PCAR", &rest)) >= 0 || (n = NumberAfter(t, "PCA", &rest)) >= 0) {
      if (!rest.empty() || n < 1 || n > d) {
        return BadFactory(f, "'" + t + "' must reduce to 1.." + std::to_string(d) + " dimensions");
      }
      d = n;
    } else if ((n = NumberAfter(t, "OPQ", &rest)) >= 0) {
      int out = d;
      if (!rest.empty()) {
        std::string tail;
        out = NumberAfter(rest, "_", &tail);
        if (out < 1 || out > d || !tail.empty()) return BadFactory(f, "bad OPQ output dimension");
      }
      if (n < 1 || out % n != 0) {
        return BadFactory(f, "OPQ" + std::to_string(n) + " needs a dimension divisible by it");
      }
      d = out;
    } else if ((n = NumberAfter(t, "RR", &rest)) >= 0) {
      if (!rest.empty() || n < 1 || n > 10'000) return BadFactory(f, "bad rotation '" + t + "'");
      d = n;
    } else {
      break;
    }
  }
  if (i >= parts.size()) return BadFactory(f, "names no index");
  const std::string& main = parts[i];
  const std::string next = i + 1 < parts.size() ? parts[i + 1] : "";
  const size_t consumed = next.empty() ? i + 1 : i + 2;
  if (consumed < parts.size()) return BadFactory(f, "unexpected '" + parts[consumed] + "'");
  int n;
  if (main == "Flat") {
    if (!next.empty()) return BadFactory(f, "unexpected '" + next + "' after Flat");
  } else if ((n = NumberAfter(main, "IVF", &rest)) >= 0) {
    if (n < 1 || n > kMaxNlist || int64_t{n} * d > kMaxCentroidFloats) {
      return BadFactory(f, "nlist must be within 1.." + std::to_string(kMaxNlist) +
                               " (and nlist x dimension within 2^28)");
    }
    if (!rest.empty()) {
      std::string tail;
      int m = NumberAfter(rest, "_HNSW", &tail);
      if (m < 0 || !tail.empty()) return BadFactory(f, "bad coarse quantizer '" + main + "'");
      RETURN_IF_ERROR(CheckHnswM(f, m));
    }
    if (next.rfind("PQ", 0) == 0) {
      RETURN_IF_ERROR(CheckPq(f, next, d));
    } else if (next != "Flat" && !IsSq(next)) {
      return BadFactory(f, "IVF needs Flat, PQ{m}x{bits} or SQ{4,6,8,fp16} after it");
    }
  } else if ((n = NumberAfter(main, "HNSW", &rest)) >= 0) {
    RETURN_IF_ERROR(CheckHnswM(f, n));
    std::string storage = !rest.empty() ? rest.substr(1) : next;
    if (!rest.empty() && (rest[0] != '_' || !next.empty())) {
      return BadFactory(f, "bad HNSW component '" + main + "'");
    }
    if (storage.rfind("PQ", 0) == 0) {
      RETURN_IF_ERROR(CheckPq(f, storage, d));
    } else if (!storage.empty() && storage != "Flat" && !IsSq(storage)) {
      return BadFactory(f, "HNSW stores Flat, PQ{m} or SQ{4,6,8,fp16} vectors");
    }
  } else if (main.rfind("PQ", 0) == 0) {
    if (!next.empty()) return BadFactory(f, "unexpected '" + next + "' after " + main);
    RETURN_IF_ERROR(CheckPq(f, main, d));
  } else if (IsSq(main)) {
    if (!next.empty()) return BadFactory(f, "unexpected '" + next + "' after " + main);
  } else {
    return BadFactory(f, "'" + main +
                             "' is not a supported index (supported: Flat, IVF{n}, "
                             "HNSW{M}, PQ{m}x{bits}, SQ{4,6,8,fp16}, with optional PCA/OPQ/RR/"
                             "L2norm transforms)");
  }
  return Status::Ok();
}

}  // namespace

std::string_view MetricName(Metric m) { return m == Metric::kL2 ? "L2" : "IP"; }

std::string IndexSpec::kind() const {
  if (binary) {
    if (factory.rfind("BIVF", 0) == 0) return "BINARY_IVF";
    if (factory.rfind("BHash", 0) == 0) return "BINARY_HASH";
    return "BINARY_FLAT";
  }
  if (hnsw_m > 0) return "HNSW";
  if (nlist > 0 && pq_m > 0) return "IVF_PQ";
  if (nlist > 0 && sq_bits > 0) return "IVF_SQ";
  if (nlist > 0) return "IVF";
  if (pq_m > 0) return "PQ";
  if (sq_bits > 0) return "SQ";
  if (factory == "Flat") return "FLAT";
  return "FACTORY";
}

StatusOr<IndexSpec> ParseIndexType(std::string_view index_type, int dim,
                                   std::string_view metric_override) {
  IndexSpec spec;
  spec.index_type = std::string(index_type);
  spec.dim = dim;
  if (index_type.empty()) return InvalidArgument("index_type: must not be empty");
  if (index_type.size() > 256) return InvalidArgument("index_type: longer than 256 characters");

  if (index_type.rfind("IDMap2:", 0) == 0 || index_type.rfind("IDMap:", 0) == 0) {
    bool two = index_type.rfind("IDMap2:", 0) == 0;
    spec.id_map = two ? IdMapKind::kIdMap2 : IdMapKind::kIdMap;
    spec.base_index_id = std::string(index_type.substr(two ? 7 : 6));
    if (spec.base_index_id.empty()) {
      return InvalidArgument("index_type: '" + spec.index_type + "' names no base index");
    }
    return spec;  // the rest comes from the base index
  }

  std::string t(index_type);
  if (t.rfind("BINARY_", 0) == 0) return ParseBinary(std::move(spec), t);

  if (t == "IP") spec.metric = Metric::kInnerProduct;
  if (EndsWith(t, kIpSuffix)) {
    spec.metric = Metric::kInnerProduct;
    t.resize(t.size() - kIpSuffix.size());
  }
  if (!metric_override.empty()) {
    ASSIGN_OR_RETURN(spec.metric, ParseMetric(metric_override));
  }
  spec.factory = ShorthandToFactory(t);
  if (spec.factory.empty()) {
    // A plain FAISS factory string; "IDMap,..." / "IDMap2,..." prefixes become the wrapper.
    if (t.rfind("IDMap2,", 0) == 0) {
      spec.id_map = IdMapKind::kIdMap2;
      t = t.substr(7);
    } else if (t.rfind("IDMap,", 0) == 0) {
      spec.id_map = IdMapKind::kIdMap;
      t = t.substr(6);
    }
    if (t.empty()) return InvalidArgument("index_type: factory string names no index");
    spec.factory = t;
  }
  RETURN_IF_ERROR(ValidateFloatFactory(spec.factory, dim));
  FillDetails(spec);
  return spec;
}

std::string ViewBaseOf(std::string_view index_type) {
  for (std::string_view prefix : {"IDMap:", "IDMap2:"}) {
    if (index_type.substr(0, prefix.size()) == prefix) {
      return std::string(index_type.substr(prefix.size()));
    }
  }
  return "";
}

}  // namespace vecgpu
