// Turning a FAISSx index file into a snapshot vecgpu can load (vecgpu import-faissx):
// what each FAISS structure must hold before anything of it is trusted, and the index type,
// label table and ids it amounts to. The command itself (the directory, the metadata, the
// engine) is server/import_faissx.cc.
#include <cxxabi.h>
#include <faiss/IndexBinaryFlat.h>
#include <faiss/IndexBinaryHash.h>
#include <faiss/IndexBinaryIVF.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <typeinfo>
#include <unordered_set>
#include <utility>

#include "core/index_spec.h"
#include "core/label_table.h"
#include "core/util/utf8.h"
#include "cpu_fallback/faiss_errors.h"
#include "server/faiss_file_check.h"
#include "server/import_faissx.h"

namespace vecgpu::server {
namespace {

using faissx_import::Bad;
using faissx_import::kBinaryKinds;
using faissx_import::kFloatKinds;
using faissx_import::kMaxHashProbes;
using faissx_import::kMaxNlist;
using faissx_import::NotImported;

// Labels above the vectors' count that a plain IVF index may leave unused (removed vectors);
// more means ids no FAISSx server hands out, and a label table that large.
constexpr int64_t kMaxLabelGap = int64_t{1} << 24;

// "faiss::IndexLSH" for the dynamic type of `x`.
template <typename T>
std::string TypeName(const T& x) {
  const char* mangled = typeid(x).name();
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && name ? name.get() : mangled;
}

template <typename T, typename... Ts>
bool IsOneOf(const std::type_info& t) {
  return ((t == typeid(T)) || ... || (t == typeid(Ts)));
}

// A FAISS float index's vecgpu type, without any IDMap wrapper: `shorthand` as a FAISSx client
// names it ("IVF100_IP"), `factory` as a FAISS factory string ("IVF100,Flat").
struct Kind {
  std::string shorthand;
  std::string factory;
};

StatusOr<std::string> SqName(faiss::ScalarQuantizer::QuantizerType q) {
  using SQ = faiss::ScalarQuantizer;
  switch (q) {
    case SQ::QT_8bit:
    case SQ::QT_8bit_uniform:
      return std::string("SQ8");
    case SQ::QT_8bit_direct:
      // Found by comparing searches: FAISS 1.7.3's distances to such codes are not the
      // distances to their decoded vectors.
      return Unimplemented(
          "its scalar quantizer is QT_8bit_direct, which the FAISS vecgpu is built on (1.7.3) "
          "searches wrongly");
    case SQ::QT_4bit:
    case SQ::QT_4bit_uniform:
      return std::string("SQ4");
    case SQ::QT_6bit:
      return std::string("SQ6");
    case SQ::QT_fp16:
      return std::string("SQfp16");
  }
  return Bad("scalar quantizer type " + std::to_string(static_cast<int>(q)) +
             " is not one FAISS 1.7.3 knows");
}

bool IsFlat(const faiss::Index* x) {
  return x && IsOneOf<faiss::IndexFlat, faiss::IndexFlatL2, faiss::IndexFlatIP>(typeid(*x));
}

// `codes` holds exactly `ntotal` codes of `code_size` bytes (by division: a file's ntotal
// times code_size can wrap around to the size it holds).
bool HoldsCodes(size_t codes, int64_t ntotal, size_t code_size) {
  return code_size > 0 && ntotal >= 0 && codes % code_size == 0 &&
         codes / code_size == static_cast<uint64_t>(ntotal);
}

// Codes for exactly ntotal vectors.
Status CheckCodes(const faiss::IndexFlatCodes& x, const std::string& what) {
  if (!HoldsCodes(x.codes.size(), x.ntotal, x.code_size)) {
    return Bad(what + " holds " + std::to_string(x.codes.size()) + " bytes of codes for " +
               std::to_string(x.ntotal) + " vectors of " + std::to_string(x.code_size) +
               " bytes (a damaged file)");
  }
  return Status::Ok();
}

// `x` is a flat index of dimension d and `metric` that holds d floats for each vector.
Status CheckFlat(const faiss::Index* x, int d, faiss::MetricType metric, const std::string& what) {
  if (!IsFlat(x) || x->d != d || x->metric_type != metric) {
    return Bad(what + " is not a flat index of its dimension and metric");
  }
  auto& flat = static_cast<const faiss::IndexFlat&>(*x);
  if (flat.code_size != sizeof(float) * d)
    return Bad(what + " has a bad code size (a damaged file)");
  return CheckCodes(flat, what);
}

// A product quantizer's sizes agree with each other and with its index's.
Status CheckPq(const faiss::ProductQuantizer& pq, int d, size_t code_size) {
  const bool ok = pq.d == static_cast<size_t>(d) && pq.M > 0 && pq.nbits >= 1 && pq.nbits <= 16 &&
                  pq.dsub * pq.M == pq.d && pq.ksub == size_t{1} << pq.nbits &&
                  pq.code_size == (pq.M * pq.nbits + 7) / 8 && pq.code_size == code_size &&
                  pq.centroids.size() == pq.d * pq.ksub;
  return ok ? Status::Ok() : Bad("its product quantizer's sizes disagree (a damaged file)");
}

// A scalar quantizer's sizes agree with its type and with its index's.
Status CheckSq(const faiss::ScalarQuantizer& sq, int d, size_t code_size, bool trained) {
  using SQ = faiss::ScalarQuantizer;
  const size_t n = static_cast<size_t>(d);
  size_t want_code = n, want_trained = 2 * n;  // per dimension: a minimum and a range
  switch (sq.qtype) {
    case SQ::QT_8bit:
      break;
    case SQ::QT_8bit_uniform:
      want_trained = 2;  // one range for all dimensions
      break;
    case SQ::QT_4bit:
      want_code = (n + 1) / 2;
      break;
    case SQ::QT_4bit_uniform:
      want_code = (n + 1) / 2;
      want_trained = 2;
      break;
    case SQ::QT_6bit:
      want_code = (n * 6 + 7) / 8;
      break;
    case SQ::QT_fp16:
      want_code = 2 * n;
      want_trained = 0;
      break;
    default:
      return SqName(sq.qtype).status();
  }
  if (sq.d != n || sq.code_size != want_code || code_size != want_code ||
      (trained && sq.trained.size() != want_trained)) {
    return Bad("its scalar quantizer's sizes disagree (a damaged file)");
  }
  return Status::Ok();
}

// The HNSW graph only points at vectors that exist, and its levels fit its offsets.
Status CheckHnsw(const faiss::IndexHNSW& x) {
  const faiss::HNSW& h = x.hnsw;
  const int64_t n = x.ntotal;
  auto bad = [](const std::string& what) {
    return Bad("its HNSW graph " + what + " (a damaged file)");
  };
  if (!x.storage || x.storage->ntotal != n)
    return bad("and its stored vectors disagree on the count");
  if (static_cast<int64_t>(h.levels.size()) != n ||
      static_cast<int64_t>(h.offsets.size()) != n + 1) {
    return bad("does not have one entry per vector");
  }
  // Level 1's neighbour count (cum_nneighbor_per_level[2] - [1]) names its type.
  if (h.cum_nneighbor_per_level.size() < 3 || h.offsets[0] != 0 ||
      h.offsets.back() != h.neighbors.size()) {
    return bad("has inconsistent offsets");
  }
  const int levels = static_cast<int>(h.cum_nneighbor_per_level.size()) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int l = h.levels[i];
    if (l < 1 || l > levels || h.offsets[i + 1] < h.offsets[i] ||
        h.offsets[i + 1] - h.offsets[i] != static_cast<size_t>(h.cum_nneighbor_per_level[l])) {
      return bad("has a bad level or neighbour list at vector " + std::to_string(i));
    }
  }
  for (auto v : h.neighbors) {
    if (v < -1 || v >= n) return bad("links to vector " + std::to_string(v));
  }
  if (n > 0 &&
      (h.entry_point < 0 || h.entry_point >= n || h.max_level != h.levels[h.entry_point] - 1)) {
    return bad("has a bad entry point");
  }
  // FAISS allocates max(efSearch, upper_beam) candidates for each search, efConstruction for
  // each add: bounded as the server bounds the values clients set (faiss_backend.cc).
  constexpr int kMaxEf = 1'000'000;
  for (int ef : {h.efSearch, h.efConstruction, h.upper_beam}) {
    if (ef < 1 || ef > kMaxEf) {
      return Bad("its HNSW efSearch, efConstruction or upper_beam is outside 1.." +
                 std::to_string(kMaxEf));
    }
  }
  return Status::Ok();
}

// Every inverted list has one code per id, the lists hold ntotal vectors, and `labels` gets
// their ids.
Status CheckInvertedLists(const faiss::InvertedLists* il, size_t nlist, size_t code_size,
                          int64_t ntotal, std::vector<int64_t>* labels) {
  auto* lists = dynamic_cast<const faiss::ArrayInvertedLists*>(il);
  if (!lists) return Bad("its inverted lists are not held in memory (ArrayInvertedLists)");
  if (lists->nlist != nlist || lists->code_size != code_size || lists->ids.size() != nlist ||
      lists->codes.size() != nlist) {
    return Bad("its inverted lists do not match its nlist or code size (a damaged file)");
  }
  labels->clear();
  for (size_t l = 0; l < nlist; ++l) {
    if (lists->codes[l].size() != lists->ids[l].size() * code_size) {
      return Bad("inverted list " + std::to_string(l) +
                 " holds codes for another count of vectors than ids (a damaged file)");
    }
    labels->insert(labels->end(), lists->ids[l].begin(), lists->ids[l].end());
  }
  if (static_cast<int64_t>(labels->size()) != ntotal) {
    return Bad("its inverted lists hold " + std::to_string(labels->size()) +
               " vectors, its ntotal is " + std::to_string(ntotal) + " (a damaged file)");
  }
  return Status::Ok();
}

// The vecgpu type of a FAISS float index, after checking that its parts agree. `labels`: for
// IVF kinds, the ids in its lists (its labels); untouched for the others, whose labels are
// their storage positions.
StatusOr<Kind> DescribeFloat(const faiss::Index& x, std::vector<int64_t>* labels, bool* ivf) {
  const std::type_info& t = typeid(x);
  *ivf = false;
  if (x.metric_type != faiss::METRIC_L2 && x.metric_type != faiss::METRIC_INNER_PRODUCT) {
    return Bad("its metric (FAISS metric type " + std::to_string(x.metric_type) +
               ") is not L2 or inner product");
  }
  if (!x.is_trained && x.ntotal > 0) return Bad("it holds vectors but is not trained");
  const bool ip = x.metric_type == faiss::METRIC_INNER_PRODUCT;
  if (IsFlat(&x)) {
    RETURN_IF_ERROR(CheckFlat(&x, x.d, x.metric_type, "it"));
    return Kind{ip ? "IP" : "L2", "Flat"};
  }
  if (t == typeid(faiss::IndexHNSWFlat)) {
    auto& h = static_cast<const faiss::IndexHNSWFlat&>(x);
    RETURN_IF_ERROR(CheckFlat(h.storage, x.d, x.metric_type, "its HNSW storage"));
    RETURN_IF_ERROR(CheckHnsw(h));
    const std::string f = "HNSW" + std::to_string(h.hnsw.nb_neighbors(1));
    return Kind{f, f};
  }
  if (t == typeid(faiss::IndexPQ)) {
    auto& pq = static_cast<const faiss::IndexPQ&>(x);
    RETURN_IF_ERROR(CheckPq(pq.pq, x.d, pq.code_size));
    RETURN_IF_ERROR(CheckCodes(pq, "it"));
    const std::string f = "PQ" + std::to_string(pq.pq.M) + "x" + std::to_string(pq.pq.nbits);
    return Kind{f, f};
  }
  if (t == typeid(faiss::IndexScalarQuantizer)) {
    auto& sq = static_cast<const faiss::IndexScalarQuantizer&>(x);
    RETURN_IF_ERROR(CheckSq(sq.sq, x.d, sq.code_size, sq.is_trained));
    RETURN_IF_ERROR(CheckCodes(sq, "it"));
    ASSIGN_OR_RETURN(std::string f, SqName(sq.sq.qtype));
    return Kind{f, f};
  }
  if (IsOneOf<faiss::IndexIVFFlat, faiss::IndexIVFPQ, faiss::IndexIVFScalarQuantizer>(t)) {
    auto& ivf_index = static_cast<const faiss::IndexIVF&>(x);
    const std::string nlist = "IVF" + std::to_string(ivf_index.nlist);
    if (!IsFlat(ivf_index.quantizer)) {
      return Bad("its coarse quantizer is not a flat index (vecgpu builds IVF kinds over one)");
    }
    RETURN_IF_ERROR(CheckFlat(ivf_index.quantizer, x.d, x.metric_type, "its coarse quantizer"));
    if (ivf_index.is_trained &&
        ivf_index.quantizer->ntotal != static_cast<int64_t>(ivf_index.nlist)) {
      return Bad("its coarse quantizer holds " + std::to_string(ivf_index.quantizer->ntotal) +
                 " centroids for " + std::to_string(ivf_index.nlist) + " lists (a damaged file)");
    }
    Kind kind{nlist, nlist + ",Flat"};
    if (t == typeid(faiss::IndexIVFFlat)) {
      if (ivf_index.code_size != sizeof(float) * x.d) return Bad("its code size is not d floats");
    } else if (t == typeid(faiss::IndexIVFPQ)) {
      auto& pq = static_cast<const faiss::IndexIVFPQ&>(x).pq;
      RETURN_IF_ERROR(CheckPq(pq, x.d, ivf_index.code_size));
      kind.shorthand = kind.factory =
          nlist + ",PQ" + std::to_string(pq.M) + "x" + std::to_string(pq.nbits);
    } else {
      auto& sq = static_cast<const faiss::IndexIVFScalarQuantizer&>(x).sq;
      RETURN_IF_ERROR(CheckSq(sq, x.d, ivf_index.code_size, x.is_trained));
      ASSIGN_OR_RETURN(std::string name, SqName(sq.qtype));
      kind.shorthand = kind.factory = nlist + "," + name;
    }
    RETURN_IF_ERROR(CheckInvertedLists(ivf_index.invlists, ivf_index.nlist, ivf_index.code_size,
                                       x.ntotal, labels));
    *ivf = true;
    return kind;
  }
  return NotImported(TypeName(x), kFloatKinds);
}

// Buckets an IndexBinaryHash of b-bit hashes probes for each search: sum_{i <= nflip} C(b, i)
// (b <= 64, 0 <= nflip <= b; saturates past kMaxHashProbes).
uint64_t HashProbes(int b, int nflip) {
  uint64_t total = 0, choose = 1;  // C(b, i)
  for (int i = 0; i <= nflip && total <= kMaxHashProbes; ++i) {
    total += choose;
    choose = std::min<uint64_t>(choose * (b - i) / (i + 1), kMaxHashProbes + 1);
  }
  return total;
}

// As DescribeFloat, for binary indexes: their FAISSx type names.
StatusOr<std::string> DescribeBinary(const faiss::IndexBinary& x, std::vector<int64_t>* labels,
                                     bool* ivf) {
  const std::type_info& t = typeid(x);
  *ivf = false;
  const size_t code_size = static_cast<size_t>(x.code_size);
  if (x.d <= 0 || x.d % 8 != 0 || code_size != static_cast<size_t>(x.d / 8)) {
    return Bad("its code size is not d / 8 bytes (a damaged file)");
  }
  if (t == typeid(faiss::IndexBinaryFlat)) {
    if (!HoldsCodes(static_cast<const faiss::IndexBinaryFlat&>(x).xb.size(), x.ntotal, code_size)) {
      return Bad("its codes do not match its ntotal (a damaged file)");
    }
    return std::string("BINARY_FLAT");
  }
  if (t == typeid(faiss::IndexBinaryIVF)) {
    auto& b = static_cast<const faiss::IndexBinaryIVF&>(x);
    auto* q = dynamic_cast<const faiss::IndexBinaryFlat*>(b.quantizer);
    if (!q || typeid(*q) != typeid(faiss::IndexBinaryFlat) || q->d != x.d ||
        (b.is_trained && q->ntotal != static_cast<int64_t>(b.nlist)) ||
        !HoldsCodes(q->xb.size(), q->ntotal, code_size)) {
      return Bad("its coarse quantizer is not a flat binary index of its nlist");
    }
    if (!b.is_trained && b.ntotal > 0) return Bad("it holds vectors but is not trained");
    RETURN_IF_ERROR(CheckInvertedLists(b.invlists, b.nlist, code_size, x.ntotal, labels));
    *ivf = true;
    return "BINARY_IVF" + std::to_string(b.nlist);
  }
  if (t == typeid(faiss::IndexBinaryHash)) {
    auto& h = static_cast<const faiss::IndexBinaryHash&>(x);
    // Each search probes every bucket within nflip bits of the query's hash (vecgpu keeps the
    // file's nflip): sum over i <= nflip of C(b, i) buckets.
    if (h.b < 1 || h.b > 64 || h.nflip < 0 || h.nflip > h.b ||
        HashProbes(h.b, h.nflip) > kMaxHashProbes) {
      return Bad("its nflip (bits flipped at search) makes each search probe more than " +
                 std::to_string(kMaxHashProbes) + " buckets");
    }
    std::vector<int64_t> ids;
    for (const auto& [key, list] : h.invlists) {
      if (list.vecs.size() != list.ids.size() * code_size) {
        return Bad("a hash bucket has codes for a different count of vectors than ids");
      }
      ids.insert(ids.end(), list.ids.begin(), list.ids.end());
    }
    std::sort(ids.begin(), ids.end());
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] != static_cast<int64_t>(i)) return Bad("its ids are not 0..ntotal-1");
    }
    if (static_cast<int64_t>(ids.size()) != x.ntotal) {
      return Bad("its buckets do not hold ntotal vectors (a damaged file)");
    }
    return "BINARY_HASH" + std::to_string(h.b);
  }
  return NotImported(TypeName(x), kBinaryKinds);
}

// For IVF kinds: their ids (FAISS's labels), checked to be labels vecgpu can keep as they
// are; returns next_label. `exact`: they must be 0..ntotal-1 (under an IndexIDMap, whose id
// map is indexed by them).
StatusOr<int64_t> CheckIvfLabels(std::vector<int64_t>& labels, bool exact) {
  std::sort(labels.begin(), labels.end());
  const int64_t n = static_cast<int64_t>(labels.size());
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] < 0)
      return Bad("its inverted lists hold the negative id " + std::to_string(labels[i]));
    if (i > 0 && labels[i] == labels[i - 1]) {
      return Bad("its inverted lists hold id " + std::to_string(labels[i]) + " twice");
    }
  }
  const int64_t last = n == 0 ? -1 : labels.back();  // not + 1 yet: it may be INT64_MAX
  if (exact && last != n - 1) {
    return Bad(
        "its base's ids are not 0..ntotal-1 (vectors were removed from it, which FAISS's "
        "IndexIDMap over an IVF index does not track)");
  }
  if (last >= n + kMaxLabelGap) return Bad("its ids run past " + std::to_string(n + kMaxLabelGap));
  return last + 1;
}

// The label table of a base-view collection whose vectors have these (sorted) labels.
LabelTable BaseTable(const std::vector<int64_t>& sorted_labels) {
  LabelTable t;
  for (size_t i = 0; i < sorted_labels.size();) {
    size_t j = i + 1;
    while (j < sorted_labels.size() && sorted_labels[j] == sorted_labels[j - 1] + 1) ++j;
    t.Append(sorted_labels[i], static_cast<int64_t>(j - i), LabelTable::kBaseView, {});
    i = j;
  }
  return t;
}

// What FAISSx's <stem>.json says (fields may be missing or null). Its base_index_id is not
// needed: FAISS writes an IndexIDMap with its base inside.

}  // namespace

StatusOr<store::StorageSnapshot> ConvertFaissxIndex(std::vector<uint8_t> bytes,
                                                    const std::string& name, int64_t dimension) {
  store::StorageSnapshot s;
  s.name = name;
  LabelTable table;
  std::vector<int64_t> labels;
  bool ivf = false;
  std::unique_ptr<faiss::Index> base;
  std::unique_ptr<faiss::IndexBinary> binary;
  // FAISS tells its binary indexes by their fourcc: "IB..".
  const bool is_binary = bytes.size() >= 2 && bytes[0] == 'I' && bytes[1] == 'B';
  RETURN_IF_ERROR(faissx_import::CheckFaissFile(bytes, is_binary));
  // FAISS reads the bytes just checked (not the file again, which may have changed since).
  faiss::VectorIOReader reader;
  reader.data = std::move(bytes);
  auto read = [&](auto&& fn) -> Status {
    Status st = cpu::CallFaiss("FAISS cannot read it", fn);
    std::vector<uint8_t>().swap(reader.data);  // read: its memory goes back before converting
    if (st.ok()) return st;
    // Not FAISS's own message: some quote values read from the file.
    if (st.code() == StatusCode::kResourceExhausted) return st;
    return Bad("FAISS cannot read it (a damaged file)");
  };
  if (is_binary) {
    RETURN_IF_ERROR(read([&] { binary.reset(faiss::read_index_binary(&reader)); }));
    ASSIGN_OR_RETURN(s.index_type, DescribeBinary(*binary, &labels, &ivf));
    s.dim = binary->d;
  } else {
    std::unique_ptr<faiss::Index> file;
    // The IVF-PQ table FAISS precomputes for searches is not needed to convert the index (its
    // snapshot does not hold it), and can take 2 GB.
    RETURN_IF_ERROR(read(
        [&] { file.reset(faiss::read_index(&reader, faiss::IO_FLAG_SKIP_PRECOMPUTE_TABLE)); }));
    s.dim = file->d;
    // An IndexIDMap's base, unwrapped: vecgpu keeps the ids in its label table.
    std::vector<int64_t> ids;
    std::string wrapper;
    if (auto* map = dynamic_cast<faiss::IndexIDMap*>(file.get())) {
      wrapper = dynamic_cast<faiss::IndexIDMap2*>(map) ? "IDMap2" : "IDMap";
      if (!map->index) return Bad("its IndexIDMap wraps no index");
      ids = std::move(map->id_map);
      base.reset(map->index);
      map->own_fields = false;  // `base` owns it now
      map->index = nullptr;
      if (static_cast<int64_t>(ids.size()) != base->ntotal || map->ntotal != base->ntotal) {
        return Bad("its IndexIDMap holds " + std::to_string(ids.size()) + " ids for " +
                   std::to_string(base->ntotal) +
                   " vectors (vectors were added to its base directly, so FAISS's ids no "
                   "longer match them)");
      }
      if (base->d != file->d) return Bad("its IndexIDMap and its base disagree on the dimension");
    } else {
      base = std::move(file);
    }
    if (base->d != s.dim) return Bad("it holds vectors of two dimensions");
    ASSIGN_OR_RETURN(Kind kind, DescribeFloat(*base, &labels, &ivf));
    s.metric = base->metric_type == faiss::METRIC_INNER_PRODUCT ? "IP" : "L2";
    if (!wrapper.empty()) {
      std::unordered_set<int64_t> seen;
      for (int64_t id : ids) {
        if (id < 0) return Bad("it holds the negative id " + std::to_string(id));
        if (!seen.insert(id).second) {
          return Bad("it holds id " + std::to_string(id) +
                     " twice (FAISS's IndexIDMap keeps both vectors; vecgpu ids are unique)");
        }
      }
      s.index_type = wrapper + "," + kind.factory;
      const LabelTable::View view = table.NewView();
      table.Append(0, static_cast<int64_t>(ids.size()), view, ids);
      s.names.push_back({name, s.index_type, view});
    } else {
      s.index_type = kind.shorthand + (s.metric == "IP" && kind.shorthand != "IP" ? "_IP" : "");
    }
    if (ivf) {
      ASSIGN_OR_RETURN(s.next_label, CheckIvfLabels(labels, !wrapper.empty()));
      if (wrapper.empty()) table = BaseTable(labels);
      // vecgpu's IVF backends find vectors by label through a hash table (reconstruct, remove).
      // Built from the lists: one the file holds may point anywhere. FAISS keeps a map of the
      // type asked for as it is, so the file's is dropped first.
      auto* ivf_index = static_cast<faiss::IndexIVF*>(base.get());
      RETURN_IF_ERROR(cpu::CallFaiss("direct map", [&] {
        ivf_index->set_direct_map_type(faiss::DirectMap::NoMap);
        ivf_index->set_direct_map_type(faiss::DirectMap::Hashtable);
      }));
    }
  }
  if (dimension >= 0 && dimension != s.dim) {
    return Bad("its .json says dimension " + std::to_string(dimension) + ", its index holds " +
               std::to_string(s.dim));
  }
  const int64_t ntotal = binary ? binary->ntotal : base->ntotal;
  if (binary && ivf) {
    ASSIGN_OR_RETURN(s.next_label, CheckIvfLabels(labels, false));
    table = BaseTable(labels);
    auto* b = static_cast<faiss::IndexBinaryIVF*>(binary.get());
    RETURN_IF_ERROR(cpu::CallFaiss("direct map", [&] {
      b->set_direct_map_type(faiss::DirectMap::NoMap);  // as above: rebuilt from the lists
      b->set_direct_map_type(faiss::DirectMap::Hashtable);
    }));
  }
  if (!ivf) {
    s.next_label = ntotal;
    if (s.names.empty()) table.Append(0, ntotal, LabelTable::kBaseView, {});
  }
  if (s.names.empty()) s.names.push_back({name, s.index_type, LabelTable::kBaseView});
  // The type must be one vecgpu can build again (its limits on nlist, M, PQ bits...).
  auto spec = ParseIndexType(s.index_type, s.dim, s.metric);
  if (!spec.ok()) return Bad(spec.status().message());
  s.factory = spec->factory;
  s.labels = table.Encode();
  faiss::VectorIOWriter out;
  RETURN_IF_ERROR(cpu::CallFaiss("serialize", [&] {
    if (binary) {
      faiss::write_index_binary(binary.get(), &out);
    } else {
      faiss::write_index(base.get(), &out);
    }
  }));
  s.index = std::move(out.data);
  return s;
}

}  // namespace vecgpu::server
