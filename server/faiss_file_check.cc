// Checks a FAISS index file's declared sizes before FAISS 1.7.3 reads it (vecgpu import-faissx).
#include "server/faiss_file_check.h"

#include <faiss/MetricType.h>
#include <faiss/invlists/DirectMap.h>

#include <cstring>
#include <vector>

namespace vecgpu::server::faissx_import {
namespace {

// ---- Checking a FAISS file before FAISS reads it ----------------------------------------
//
// FAISS 1.7.3's readers trust the sizes a file declares: READVECTOR resizes a vector to the
// count it reads and only then reads its elements, so a file of a few bytes declaring 2e9
// floats has 8 GB allocated (and zeroed) before the short read is noticed; a product
// quantizer allocates its 2^nbits centroids, and array inverted lists every list's codes,
// before reading any of them; other kinds (NSG graphs, on-disk inverted lists that name a file
// to open) do worse. FaissFileCheck walks the bytes as FAISS would, for the kinds vecgpu
// imports only, and checks each such size against the bytes that follow it in the file, so
// that FAISS, reading the same bytes next, never allocates much more than the file holds.
// Its messages name offsets and kinds, never the file's bytes.

constexpr uint32_t Fourcc(const char (&s)[5]) {
  return uint32_t{static_cast<uint8_t>(s[0])} | uint32_t{static_cast<uint8_t>(s[1])} << 8 |
         uint32_t{static_cast<uint8_t>(s[2])} << 16 | uint32_t{static_cast<uint8_t>(s[3])} << 24;
}

// FAISS kinds vecgpu does not import, by the fourcc FAISS 1.7.3 writes them under, so that a
// refusal names them.
struct KnownKind {
  uint32_t fourcc;
  const char* name;
};
constexpr KnownKind kOtherKinds[] = {
    {Fourcc("IxMp"), "faiss::IndexIDMap"},  // only an IndexIDMap inside another
    {Fourcc("IxM2"), "faiss::IndexIDMap2"},
    {Fourcc("IxHE"), "faiss::IndexLSH"},
    {Fourcc("IxHe"), "faiss::IndexLSH"},
    {Fourcc("IxRQ"), "faiss::IndexResidualQuantizer"},
    {Fourcc("IxRq"), "faiss::IndexResidualQuantizer"},
    {Fourcc("IxLS"), "faiss::IndexLocalSearchQuantizer"},
    {Fourcc("IxPR"), "faiss::IndexProductResidualQuantizer"},
    {Fourcc("IxPL"), "faiss::IndexProductLocalSearchQuantizer"},
    {Fourcc("ImRQ"), "faiss::ResidualCoarseQuantizer"},
    {Fourcc("ILfs"), "faiss::IndexLocalSearchQuantizerFastScan"},
    {Fourcc("IRfs"), "faiss::IndexResidualQuantizerFastScan"},
    {Fourcc("IPLf"), "faiss::IndexProductLocalSearchQuantizerFastScan"},
    {Fourcc("IPRf"), "faiss::IndexProductResidualQuantizerFastScan"},
    {Fourcc("IVLf"), "faiss::IndexIVFLocalSearchQuantizerFastScan"},
    {Fourcc("IVRf"), "faiss::IndexIVFResidualQuantizerFastScan"},
    {Fourcc("NPLf"), "faiss::IndexIVFProductLocalSearchQuantizerFastScan"},
    {Fourcc("NPRf"), "faiss::IndexIVFProductResidualQuantizerFastScan"},
    {Fourcc("IvFl"), "faiss::IndexIVFFlat (in FAISS's old IVF format)"},
    {Fourcc("IvFL"), "faiss::IndexIVFFlat (in FAISS's old IVF format)"},
    {Fourcc("IvSQ"), "faiss::IndexIVFScalarQuantizer (in FAISS's old IVF format)"},
    {Fourcc("IvPQ"), "faiss::IndexIVFPQ (in FAISS's old IVF format)"},
    {Fourcc("IvQR"), "faiss::IndexIVFPQR"},
    {Fourcc("IwQR"), "faiss::IndexIVFPQR"},
    {Fourcc("IwFd"), "faiss::IndexIVFFlatDedup"},
    {Fourcc("IwLS"), "faiss::IndexIVFLocalSearchQuantizer"},
    {Fourcc("IwRQ"), "faiss::IndexIVFResidualQuantizer"},
    {Fourcc("IwPL"), "faiss::IndexIVFProductLocalSearchQuantizer"},
    {Fourcc("IwPR"), "faiss::IndexIVFProductResidualQuantizer"},
    {Fourcc("IwSh"), "faiss::IndexIVFSpectralHash"},
    {Fourcc("IwPf"), "faiss::IndexIVFPQFastScan"},
    {Fourcc("IPfs"), "faiss::IndexPQFastScan"},
    {Fourcc("IxLa"), "faiss::IndexLattice"},
    {Fourcc("IxPT"), "faiss::IndexPreTransform"},
    {Fourcc("IxRF"), "faiss::IndexRefine"},
    {Fourcc("Imiq"), "faiss::MultiIndexQuantizer"},
    {Fourcc("Ix2L"), "faiss::Index2Layer"},
    {Fourcc("IHNp"), "faiss::IndexHNSWPQ"},
    {Fourcc("IHNs"), "faiss::IndexHNSWSQ"},
    {Fourcc("IHN2"), "faiss::IndexHNSW2Level"},
    {Fourcc("INSf"), "faiss::IndexNSGFlat"},
    {Fourcc("INSp"), "faiss::IndexNSGPQ"},
    {Fourcc("INSs"), "faiss::IndexNSGSQ"},
    {Fourcc("INNf"), "faiss::IndexNNDescentFlat"},
    {Fourcc("IRMf"), "faiss::IndexRowwiseMinMax"},
    {Fourcc("IRMh"), "faiss::IndexRowwiseMinMaxFP16"},
    {Fourcc("IBFf"), "faiss::IndexBinaryFromFloat"},
    {Fourcc("IBHf"), "faiss::IndexBinaryHNSW"},
    {Fourcc("IBMp"), "faiss::IndexBinaryIDMap"},
    {Fourcc("IBM2"), "faiss::IndexBinaryIDMap2"},
    {Fourcc("IBHm"), "faiss::IndexBinaryMultiHash"},
};

bool IsFlatFourcc(uint32_t h) {
  return h == Fourcc("IxF2") || h == Fourcc("IxFI") || h == Fourcc("IxFl");
}

class FaissFileCheck {
 public:
  explicit FaissFileCheck(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  // The whole file: one index, and nothing after it (FAISS writes nothing there).
  Status File(bool binary) {
    RETURN_IF_ERROR(binary ? BinaryIndex(Role::kTop) : FloatIndex(Role::kTop));
    if (left() != 0) {
      return Bad("it holds " + std::to_string(left()) +
                 " bytes after its index (not a file FAISS wrote, or a damaged one)");
    }
    return Status::Ok();
  }

 private:
  // Where an index is: the kinds each place may hold.
  enum class Role { kTop, kIdMapBase, kQuantizer, kHnswStorage };

  uint64_t left() const { return bytes_.size() - pos_; }

  Status Short() const {
    return Bad("it declares more data than the file holds (at byte " + std::to_string(pos_) +
               " of " + std::to_string(bytes_.size()) + "; a damaged or truncated file)");
  }

  Status Skip(uint64_t n) {
    if (n > left()) return Short();
    pos_ += n;
    return Status::Ok();
  }

  template <typename T>
  StatusOr<T> Get() {
    if (sizeof(T) > left()) return Short();
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // READVECTOR: a count, then that many elements of `size` bytes; returns the count.
  StatusOr<uint64_t> Vector(uint64_t size) {
    const size_t at = pos_;
    ASSIGN_OR_RETURN(uint64_t n, Get<uint64_t>());
    if (n > left() / size) {
      pos_ = at;
      return Short();
    }
    pos_ += n * size;
    return n;
  }

  // FAISS's index header: d, ntotal, two unused fields, is_trained, the metric (and its
  // argument for metrics past inner product and L2). Returns ntotal.
  StatusOr<int64_t> Header() {
    ASSIGN_OR_RETURN(int32_t d, Get<int32_t>());
    ASSIGN_OR_RETURN(int64_t ntotal, Get<int64_t>());
    if (d < 1 || ntotal < 0) return Bad("its header has a bad dimension or count (a damaged file)");
    RETURN_IF_ERROR(Skip(8 + 8 + 1));
    ASSIGN_OR_RETURN(int32_t metric, Get<int32_t>());
    if (metric > 1) RETURN_IF_ERROR(Skip(sizeof(float)));
    return ntotal;
  }

  // A binary index's: d, code_size, ntotal, is_trained, metric.
  Status BinaryHeader() {
    ASSIGN_OR_RETURN(int32_t d, Get<int32_t>());
    ASSIGN_OR_RETURN(int32_t code_size, Get<int32_t>());
    ASSIGN_OR_RETURN(int64_t ntotal, Get<int64_t>());
    if (d < 1 || code_size < 0 || ntotal < 0) {
      return Bad("its header has a bad dimension or count (a damaged file)");
    }
    return Skip(1 + 4);
  }

  // Refuses the index of fourcc `h`, which is not a kind vecgpu imports at `role`.
  Status Other(uint32_t h, Role role, const char* kinds) const {
    if (role == Role::kQuantizer) {
      return Bad("its coarse quantizer is not a flat index (vecgpu builds IVF kinds over one)");
    }
    if (role == Role::kHnswStorage) return Bad("its HNSW storage is not a flat index");
    for (const KnownKind& k : kOtherKinds) {
      if (k.fourcc == h) return NotImported(k.name, kinds);
    }
    if (role == Role::kTop) return Bad("not a FAISS index file FAISSx writes (unknown index type)");
    return Bad("it holds an index of an unknown type (a damaged file)");
  }

  Status FloatIndex(Role role) {
    ASSIGN_OR_RETURN(uint32_t h, Get<uint32_t>());
    if (IsFlatFourcc(h)) {
      RETURN_IF_ERROR(Header().status());
      // READXBVECTOR: a count of 4-byte groups.
      return Vector(4).status();
    }
    if (role == Role::kQuantizer || role == Role::kHnswStorage) return Other(h, role, kFloatKinds);
    if (h == Fourcc("IHNf")) {
      RETURN_IF_ERROR(Header().status());
      RETURN_IF_ERROR(Hnsw());
      return FloatIndex(Role::kHnswStorage);
    }
    if (h == Fourcc("IxPQ") || h == Fourcc("IxPo") || h == Fourcc("IxPq")) {
      RETURN_IF_ERROR(Header().status());
      RETURN_IF_ERROR(ProductQuantizer());
      RETURN_IF_ERROR(Vector(1).status());  // codes
      // search_type, encode_signs, polysemous_ht
      return h == Fourcc("IxPQ") ? Status::Ok() : Skip(4 + 1 + 4);
    }
    if (h == Fourcc("IxSQ")) {
      RETURN_IF_ERROR(Header().status());
      RETURN_IF_ERROR(ScalarQuantizer());
      return Vector(1).status();  // codes
    }
    if (h == Fourcc("IwFl")) {
      ASSIGN_OR_RETURN(uint64_t nlist, IvfHeader(false));
      return InvertedLists(nlist);
    }
    if (h == Fourcc("IwPQ")) {
      ASSIGN_OR_RETURN(uint64_t nlist, IvfHeader(false));
      RETURN_IF_ERROR(Skip(1 + 8));  // by_residual, code_size
      RETURN_IF_ERROR(ProductQuantizer());
      return InvertedLists(nlist);
    }
    if (h == Fourcc("IwSQ") || h == Fourcc("IwSq")) {
      ASSIGN_OR_RETURN(uint64_t nlist, IvfHeader(false));
      RETURN_IF_ERROR(ScalarQuantizer());
      RETURN_IF_ERROR(Skip(8 + (h == Fourcc("IwSq") ? 1 : 0)));  // code_size, by_residual
      return InvertedLists(nlist);
    }
    if ((h == Fourcc("IxMp") || h == Fourcc("IxM2")) && role == Role::kTop) {
      ASSIGN_OR_RETURN(int64_t ntotal, Header());
      RETURN_IF_ERROR(FloatIndex(Role::kIdMapBase));
      ASSIGN_OR_RETURN(uint64_t ids, Vector(sizeof(int64_t)));
      // FAISS builds an IndexIDMap2's reverse map from its first ntotal ids, however many the
      // file holds. (An IndexIDMap's count is compared with its base's once read.)
      if (h == Fourcc("IxM2") && static_cast<uint64_t>(ntotal) > ids) {
        return Bad(
            "its IndexIDMap2 counts more vectors than it holds ids for (vectors were added to "
            "its base directly, or a damaged file)");
      }
      return Status::Ok();
    }
    return Other(h, role, kFloatKinds);
  }

  Status BinaryIndex(Role role) {
    ASSIGN_OR_RETURN(uint32_t h, Get<uint32_t>());
    if (h == Fourcc("IBxF")) {
      RETURN_IF_ERROR(BinaryHeader());
      return Vector(1).status();  // codes
    }
    if (role == Role::kQuantizer) return Other(h, role, kBinaryKinds);
    if (h == Fourcc("IBwF")) {
      ASSIGN_OR_RETURN(uint64_t nlist, IvfHeader(true));
      return InvertedLists(nlist);
    }
    if (h == Fourcc("IBHh")) {
      RETURN_IF_ERROR(BinaryHeader());
      ASSIGN_OR_RETURN(int32_t b, Get<int32_t>());
      RETURN_IF_ERROR(Skip(4));  // nflip
      return BinaryHashLists(b);
    }
    return Other(h, role, kBinaryKinds);
  }

  // An IVF index's header, its coarse quantizer and its direct map; returns nlist.
  StatusOr<uint64_t> IvfHeader(bool binary) {
    RETURN_IF_ERROR(binary ? BinaryHeader() : Header().status());
    ASSIGN_OR_RETURN(uint64_t nlist, Get<uint64_t>());
    RETURN_IF_ERROR(Skip(8));  // nprobe
    if (nlist > kMaxNlist) {
      return Bad("it declares " + std::to_string(nlist) + " inverted lists, more than the " +
                 std::to_string(kMaxNlist) + " vecgpu serves");
    }
    RETURN_IF_ERROR(binary ? BinaryIndex(Role::kQuantizer) : FloatIndex(Role::kQuantizer));
    ASSIGN_OR_RETURN(uint8_t type, Get<uint8_t>());
    if (type > faiss::DirectMap::Hashtable) {
      return Bad("its direct map is of an unknown type (a damaged file)");
    }
    RETURN_IF_ERROR(Vector(sizeof(int64_t)).status());  // the array
    if (type == faiss::DirectMap::Hashtable) {
      RETURN_IF_ERROR(Vector(2 * sizeof(int64_t)).status());  // (id, list and offset) pairs
    }
    return nlist;
  }

  // Array inverted lists ("ilar"): nlist, code_size, every list's size (all, or the non-empty
  // ones as (list, size) pairs), then each list's codes and ids. FAISS allocates every list
  // before reading any, so their sizes must add up to no more than the file holds.
  Status InvertedLists(uint64_t nlist) {
    ASSIGN_OR_RETURN(uint32_t h, Get<uint32_t>());
    if (h != Fourcc("ilar")) {
      // "il00" (none stored), or a kind FAISS reads from elsewhere (on-disk lists name a file).
      return Bad("its inverted lists are not held in the file (ArrayInvertedLists)");
    }
    ASSIGN_OR_RETURN(uint64_t lists, Get<uint64_t>());
    ASSIGN_OR_RETURN(uint64_t code_size, Get<uint64_t>());
    if (lists != nlist) return Bad("its inverted lists do not match its nlist (a damaged file)");
    std::vector<uint64_t> sizes(nlist);  // nlist <= kMaxNlist
    ASSIGN_OR_RETURN(uint32_t layout, Get<uint32_t>());
    if (layout == Fourcc("full")) {
      ASSIGN_OR_RETURN(uint64_t n, Get<uint64_t>());
      if (n != nlist) return Bad("its inverted lists do not match its nlist (a damaged file)");
      for (uint64_t& size : sizes) {
        ASSIGN_OR_RETURN(size, Get<uint64_t>());
      }
    } else if (layout == Fourcc("sprs")) {
      const size_t at = pos_;
      ASSIGN_OR_RETURN(uint64_t n, Vector(sizeof(uint64_t)));
      // FAISS reads them as pairs without checking that the last one is whole.
      if (n % 2 != 0) return Bad("its inverted lists' sizes are not pairs (a damaged file)");
      pos_ = at + sizeof(uint64_t);
      for (uint64_t j = 0; j < n; j += 2) {
        ASSIGN_OR_RETURN(uint64_t list, Get<uint64_t>());
        ASSIGN_OR_RETURN(uint64_t size, Get<uint64_t>());
        if (list >= nlist) return Bad("its inverted lists' sizes name a list it does not have");
        sizes[list] = size;
      }
    } else {
      return Bad("its inverted lists' sizes are in an unknown layout (a damaged file)");
    }
    uint64_t total = 0;  // bytes: each vector's code and id
    for (uint64_t size : sizes) {
      if (size == 0) continue;
      if (code_size > left() || size > (left() - total) / (code_size + sizeof(int64_t))) {
        return Short();
      }
      total += size * (code_size + sizeof(int64_t));
    }
    return Skip(total);
  }

  // d, M, nbits, then the d * 2^nbits centroids, which FAISS allocates before reading them.
  Status ProductQuantizer() {
    ASSIGN_OR_RETURN(uint64_t d, Get<uint64_t>());
    ASSIGN_OR_RETURN(uint64_t m, Get<uint64_t>());
    ASSIGN_OR_RETURN(uint64_t nbits, Get<uint64_t>());
    // FAISS divides d by M, and shifts an int by nbits.
    if (m == 0 || d % m != 0 || nbits == 0 || nbits > 24) {
      return Bad("its product quantizer's sizes disagree (a damaged file)");
    }
    if (d > (left() / sizeof(float)) >> nbits) return Short();
    return Vector(sizeof(float)).status();
  }

  // qtype, rangestat, rangestat_arg, d, code_size, then its trained values.
  Status ScalarQuantizer() {
    RETURN_IF_ERROR(Skip(4 + 4 + 4 + 8 + 8));
    return Vector(sizeof(float)).status();
  }

  Status Hnsw() {
    RETURN_IF_ERROR(Vector(sizeof(double)).status());    // assign_probas
    RETURN_IF_ERROR(Vector(sizeof(int32_t)).status());   // cum_nneighbor_per_level
    RETURN_IF_ERROR(Vector(sizeof(int32_t)).status());   // levels
    RETURN_IF_ERROR(Vector(sizeof(uint64_t)).status());  // offsets
    RETURN_IF_ERROR(Vector(sizeof(int32_t)).status());   // neighbors
    // entry_point, max_level, efConstruction, efSearch, upper_beam
    return Skip(5 * 4);
  }

  // IndexBinaryHash's buckets: their count, the bits of a list size, a bit string of each
  // bucket's hash (b bits) and size, then each bucket's ids and codes. FAISS allocates
  // (b + il_nbit) * count bytes before reading the bit string, then reads it without checking
  // that it holds that many bits.
  Status BinaryHashLists(int32_t b) {
    ASSIGN_OR_RETURN(uint64_t count, Get<uint64_t>());
    ASSIGN_OR_RETURN(int32_t il_nbit, Get<int32_t>());
    if (b < 1 || b > 64 || il_nbit < 0 || il_nbit > 64 || (count > 0 && il_nbit == 0)) {
      return Bad("its hash table's sizes are out of range (a damaged file)");
    }
    // Each bucket holds at least two vector counts.
    if (count > left() / (2 * sizeof(uint64_t))) return Short();
    ASSIGN_OR_RETURN(uint64_t n, Vector(1));
    if (n < (static_cast<uint64_t>(b + il_nbit) * count + 7) / 8) {
      return Bad("its hash table's bit string is shorter than its buckets (a damaged file)");
    }
    for (uint64_t i = 0; i < count; ++i) {
      RETURN_IF_ERROR(Vector(sizeof(int64_t)).status());  // ids
      RETURN_IF_ERROR(Vector(1).status());                // codes
    }
    return Status::Ok();
  }

  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

}  // namespace

Status CheckFaissFile(std::span<const uint8_t> bytes, bool binary) {
  return FaissFileCheck(bytes).File(binary);
}

}  // namespace vecgpu::server::faissx_import
