#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/types.h"
#include "core/util/status.h"

namespace vecgpu::store {

// What a write-ahead log record says happened. Values are part of the on-disk format
// (core/store/FORMAT.md): never renumber, only add.
enum class RecordType : uint8_t {
  kCreate = 1,         // a collection: index_type, dim, metric, device
  kDrop = 2,           // delete_index
  kAdd = 3,            // vectors, ids (empty: numbered by the index)
  kRemove = 4,         // ids
  kReplace = 5,        // ids[0] := vectors row 0
  kTrain = 6,          // vectors
  kReset = 7,          // reset / clear
  kMerge = 8,          // sources into this collection
  kRecluster = 9,      // n_clusters, sample_ratio
  kSetParameter = 10,  // name := value
  kPutKeys = 11,       // keys[i] := vectors row i, stamped timestamps[i] (the Vald API)
  kRemoveKeys = 12,    // keys
  kStampKey = 13,      // keys[0] stamped timestamps[0]
  kFailed = 14,        // the storage's record storage_seq failed when applied: replay skips it
};

// Payloads of format 2 carry their storage (FORMAT.md): the type byte has this bit set.
inline constexpr uint8_t kStorageHeaderBit = 0x80;

std::string_view RecordTypeName(RecordType t);

// One logged mutation of one collection of one tenant. Fields a type does not use stay empty.
struct WalRecord {
  RecordType type = RecordType::kCreate;
  // Format 2: which storage the record is about and its place in that storage's own order
  // (1, 2, ...: every record about a storage, its create first). storage_id is the sequence
  // number of the create record that made the storage; 0 in a create that makes one (the
  // record's own sequence number names it). False for a format-1 payload, which has neither.
  bool has_storage = true;
  uint64_t storage_id = 0;
  uint64_t storage_seq = 0;
  std::string tenant;
  std::string collection;
  // kCreate
  std::string index_type;
  int32_t dim = 0;
  std::string metric;
  std::string device;
  // kAdd, kReplace, kTrain, kMerge: row-major float32 (binary: one 0/1 float per bit)
  FloatMatrix vectors;
  // kAdd, kRemove, kReplace, kMerge
  std::vector<int64_t> ids;
  // kMerge
  std::vector<std::string> sources;
  // kRecluster
  int32_t n_clusters = 0;
  double sample_ratio = 0;
  // kTrain, kRecluster (format 2): what the training produced, as Backend::Serialize() of the
  // trained index before any vector was added (centroids, codebooks, ranges, transforms);
  // replay installs it instead of training again. Empty: replay trains from the vectors.
  std::string artefact;
  // kFailed: why the record failed
  std::string error;
  // kSetParameter
  std::string name;
  double value = 0;
  // kPutKeys, kRemoveKeys, kStampKey: string ids and their timestamps (Unix ns)
  std::vector<std::string> keys;
  std::vector<int64_t> timestamps;

  bool operator==(const WalRecord& o) const;
};

// The record's payload bytes (FORMAT.md, "Record payload"), little-endian.
std::string EncodeRecord(const WalRecord& r);
// A digest of what a record changes, not of how one node stored it (its storage id, which each
// node numbers itself, and a training artefact, which follows from the rest are left out):
// equal for the same record on every copy of a replicated collection. Never 0.
uint64_t RecordDigest(const WalRecord& r);
// DataLoss naming what is wrong for bytes that are not a valid payload (an unknown type, a
// length past the end, trailing bytes).
StatusOr<WalRecord> DecodeRecord(std::string_view payload);

}  // namespace vecgpu::store
