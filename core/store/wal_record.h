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
};

std::string_view RecordTypeName(RecordType t);

// One logged mutation of one collection of one tenant. Fields a type does not use stay empty.
struct WalRecord {
  RecordType type = RecordType::kCreate;
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
// DataLoss naming what is wrong for bytes that are not a valid payload (an unknown type, a
// length past the end, trailing bytes).
StatusOr<WalRecord> DecodeRecord(std::string_view payload);

}  // namespace vecgpu::store
