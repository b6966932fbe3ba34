#include "core/store/wal_record.h"

#include <cstring>

namespace vecgpu::store {
namespace {

// Little-endian field writer.
class Writer {
 public:
  template <typename T>
  void Fixed(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));  // x86-64 and aarch64 are little-endian
    out_.append(b, sizeof(T));
  }
  void Str(std::string_view s) {
    Fixed<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void Raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Little-endian field reader; every read checks the bounds.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  Status Fixed(const char* field, T* v) {
    if (in_.size() - at_ < sizeof(T)) return Short(field);
    std::memcpy(v, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return Status::Ok();
  }
  Status Str(const char* field, std::string* s) {
    uint32_t n = 0;
    RETURN_IF_ERROR(Fixed(field, &n));
    if (in_.size() - at_ < n) return Short(field);
    s->assign(in_.data() + at_, n);
    at_ += n;
    return Status::Ok();
  }
  // Reads `count` elements of T into *out after checking they are there.
  template <typename T>
  Status Array(const char* field, uint64_t count, std::vector<T>* out) {
    if (count > (in_.size() - at_) / sizeof(T)) return Short(field);
    out->resize(count);
    if (count) std::memcpy(out->data(), in_.data() + at_, count * sizeof(T));
    at_ += count * sizeof(T);
    return Status::Ok();
  }
  bool done() const { return at_ == in_.size(); }
  size_t at() const { return at_; }

 private:
  Status Short(const char* field) const {
    return DataLoss("log record: " + std::string(field) + " runs past the end of the record (" +
                    std::to_string(in_.size()) + " bytes)");
  }
  std::string_view in_;
  size_t at_ = 0;
};

bool Known(uint8_t t) { return t >= 1 && t <= 14; }

}  // namespace

std::string_view RecordTypeName(RecordType t) {
  switch (t) {
    case RecordType::kCreate:
      return "create";
    case RecordType::kDrop:
      return "drop";
    case RecordType::kAdd:
      return "add";
    case RecordType::kRemove:
      return "remove";
    case RecordType::kReplace:
      return "replace";
    case RecordType::kTrain:
      return "train";
    case RecordType::kReset:
      return "reset";
    case RecordType::kMerge:
      return "merge";
    case RecordType::kRecluster:
      return "recluster";
    case RecordType::kSetParameter:
      return "set_parameter";
    case RecordType::kPutKeys:
      return "put_keys";
    case RecordType::kRemoveKeys:
      return "remove_keys";
    case RecordType::kStampKey:
      return "stamp_key";
    case RecordType::kFailed:
      return "failed";
  }
  return "unknown";
}

bool WalRecord::operator==(const WalRecord& o) const {
  return type == o.type && has_storage == o.has_storage && storage_id == o.storage_id &&
         storage_seq == o.storage_seq && artefact == o.artefact && error == o.error &&
         tenant == o.tenant && collection == o.collection &&
         index_type == o.index_type && dim == o.dim && metric == o.metric && device == o.device &&
         vectors.rows == o.vectors.rows && vectors.cols == o.vectors.cols &&
         vectors.data == o.vectors.data && ids == o.ids && sources == o.sources &&
         n_clusters == o.n_clusters && sample_ratio == o.sample_ratio && name == o.name &&
         value == o.value && keys == o.keys && timestamps == o.timestamps;
}

// Layout (FORMAT.md): type u8 (format 2: | 0x80, then storage id u64, storage seq u64),
// tenant str, collection str, then by type:
//   create: index_type str, dim i32, metric str, device str
//   add / replace / train: rows u64, cols u32, rows*cols f32 [, add/replace: nids u64, ids i64*]
//   remove: nids u64, ids i64*
//   merge: nsources u32, sources str*, then the merged vectors and ids as add
//   recluster: n_clusters i32, sample_ratio f64
//   set_parameter: name str, value f64
//   put_keys: nkeys u64, keys str*, timestamps i64*, then the vectors as add (one row per key)
//   remove_keys: nkeys u64, keys str*
//   stamp_key: nkeys u64 (= 1), keys str*, timestamps i64*
//   drop, reset: nothing more
//   format 2 only: train and recluster end with artefact (u64 length + bytes); failed: error str
// str = u32 length + bytes.
std::string EncodeRecord(const WalRecord& r) {
  Writer w;
  const uint8_t type = static_cast<uint8_t>(r.type);
  if (r.has_storage) {
    w.Fixed<uint8_t>(type | kStorageHeaderBit);
    w.Fixed<uint64_t>(r.storage_id);
    w.Fixed<uint64_t>(r.storage_seq);
  } else {
    w.Fixed<uint8_t>(type);
  }
  w.Str(r.tenant);
  w.Str(r.collection);
  auto matrix = [&] {
    w.Fixed<uint64_t>(static_cast<uint64_t>(r.vectors.rows));
    w.Fixed<uint32_t>(static_cast<uint32_t>(r.vectors.cols));
    w.Raw(r.vectors.data.data(), r.vectors.data.size() * sizeof(float));  // little-endian
  };
  auto ids = [&] {
    w.Fixed<uint64_t>(r.ids.size());
    for (int64_t id : r.ids) w.Fixed<int64_t>(id);
  };
  auto artefact = [&] {
    if (!r.has_storage) return;
    w.Fixed<uint64_t>(r.artefact.size());
    w.Raw(r.artefact.data(), r.artefact.size());
  };
  switch (r.type) {
    case RecordType::kCreate:
      w.Str(r.index_type);
      w.Fixed<int32_t>(r.dim);
      w.Str(r.metric);
      w.Str(r.device);
      break;
    case RecordType::kAdd:
    case RecordType::kReplace:
      matrix();
      ids();
      break;
    case RecordType::kTrain:
      matrix();
      artefact();
      break;
    case RecordType::kRemove:
      ids();
      break;
    case RecordType::kFailed:
      w.Str(r.error);
      break;
    case RecordType::kMerge:
      w.Fixed<uint32_t>(static_cast<uint32_t>(r.sources.size()));
      for (const std::string& s : r.sources) w.Str(s);
      matrix();  // what the sources held: a replay must not read them again
      ids();
      break;
    case RecordType::kRecluster:
      w.Fixed<int32_t>(r.n_clusters);
      w.Fixed<double>(r.sample_ratio);
      artefact();
      break;
    case RecordType::kSetParameter:
      w.Str(r.name);
      w.Fixed<double>(r.value);
      break;
    case RecordType::kPutKeys:
    case RecordType::kRemoveKeys:
    case RecordType::kStampKey:
      w.Fixed<uint64_t>(r.keys.size());
      for (const std::string& k : r.keys) w.Str(k);
      if (r.type == RecordType::kRemoveKeys) break;
      for (size_t i = 0; i < r.keys.size(); ++i) {
        w.Fixed<int64_t>(i < r.timestamps.size() ? r.timestamps[i] : 0);
      }
      if (r.type == RecordType::kPutKeys) matrix();
      break;
    case RecordType::kDrop:
    case RecordType::kReset:
      break;
  }
  return w.Take();
}

StatusOr<WalRecord> DecodeRecord(std::string_view payload) {
  Reader in(payload);
  WalRecord r;
  uint8_t type = 0;
  RETURN_IF_ERROR(in.Fixed("type", &type));
  r.has_storage = (type & kStorageHeaderBit) != 0;
  type &= ~kStorageHeaderBit;
  if (!Known(type) || (!r.has_storage && type == static_cast<uint8_t>(RecordType::kFailed))) {
    return DataLoss("log record: unknown type " + std::to_string(type));
  }
  r.type = static_cast<RecordType>(type);
  if (r.has_storage) {
    RETURN_IF_ERROR(in.Fixed("storage id", &r.storage_id));
    RETURN_IF_ERROR(in.Fixed("storage seq", &r.storage_seq));
  }
  RETURN_IF_ERROR(in.Str("tenant", &r.tenant));
  RETURN_IF_ERROR(in.Str("collection", &r.collection));
  auto matrix = [&]() -> Status {
    uint64_t rows = 0;
    uint32_t cols = 0;
    RETURN_IF_ERROR(in.Fixed("rows", &rows));
    RETURN_IF_ERROR(in.Fixed("cols", &cols));
    if (cols != 0 && rows > payload.size() / 4 / cols) {
      return DataLoss("log record: " + std::to_string(rows) + " x " + std::to_string(cols) +
                      " vectors do not fit in the record");
    }
    r.vectors.rows = static_cast<int64_t>(rows);
    r.vectors.cols = cols;
    return in.Array("vectors", rows * cols, &r.vectors.data);
  };
  auto ids = [&]() -> Status {
    uint64_t n = 0;
    RETURN_IF_ERROR(in.Fixed("id count", &n));
    return in.Array("ids", n, &r.ids);
  };
  auto artefact = [&]() -> Status {
    if (!r.has_storage) return Status::Ok();
    uint64_t n = 0;
    RETURN_IF_ERROR(in.Fixed("artefact length", &n));
    std::vector<char> bytes;
    RETURN_IF_ERROR(in.Array("artefact", n, &bytes));
    r.artefact.assign(bytes.begin(), bytes.end());
    return Status::Ok();
  };
  switch (r.type) {
    case RecordType::kCreate:
      RETURN_IF_ERROR(in.Str("index_type", &r.index_type));
      RETURN_IF_ERROR(in.Fixed("dim", &r.dim));
      RETURN_IF_ERROR(in.Str("metric", &r.metric));
      RETURN_IF_ERROR(in.Str("device", &r.device));
      break;
    case RecordType::kAdd:
    case RecordType::kReplace:
      RETURN_IF_ERROR(matrix());
      RETURN_IF_ERROR(ids());
      break;
    case RecordType::kTrain:
      RETURN_IF_ERROR(matrix());
      RETURN_IF_ERROR(artefact());
      break;
    case RecordType::kRemove:
      RETURN_IF_ERROR(ids());
      break;
    case RecordType::kFailed:
      RETURN_IF_ERROR(in.Str("error", &r.error));
      break;
    case RecordType::kMerge: {
      uint32_t n = 0;
      RETURN_IF_ERROR(in.Fixed("source count", &n));
      if (n > payload.size() / 4) return DataLoss("log record: source count past the end");
      r.sources.resize(n);
      for (auto& s : r.sources) RETURN_IF_ERROR(in.Str("source", &s));
      RETURN_IF_ERROR(matrix());
      RETURN_IF_ERROR(ids());
      break;
    }
    case RecordType::kRecluster:
      RETURN_IF_ERROR(in.Fixed("n_clusters", &r.n_clusters));
      RETURN_IF_ERROR(in.Fixed("sample_ratio", &r.sample_ratio));
      RETURN_IF_ERROR(artefact());
      break;
    case RecordType::kSetParameter:
      RETURN_IF_ERROR(in.Str("name", &r.name));
      RETURN_IF_ERROR(in.Fixed("value", &r.value));
      break;
    case RecordType::kPutKeys:
    case RecordType::kRemoveKeys:
    case RecordType::kStampKey: {
      uint64_t n = 0;
      RETURN_IF_ERROR(in.Fixed("key count", &n));
      if (n > payload.size() / 4) return DataLoss("log record: key count past the end");
      r.keys.resize(n);
      for (auto& k : r.keys) RETURN_IF_ERROR(in.Str("key", &k));
      if (r.type == RecordType::kRemoveKeys) break;
      RETURN_IF_ERROR(in.Array("timestamps", n, &r.timestamps));
      if (r.type == RecordType::kPutKeys) {
        RETURN_IF_ERROR(matrix());
        if (r.vectors.rows != static_cast<int64_t>(n)) {
          return DataLoss("log record: " + std::to_string(n) + " keys for " +
                          std::to_string(r.vectors.rows) + " vectors");
        }
      }
      break;
    }
    case RecordType::kDrop:
    case RecordType::kReset:
      break;
  }
  if (!in.done()) {
    return DataLoss("log record (" + std::string(RecordTypeName(r.type)) +
                    "): " + std::to_string(payload.size() - in.at()) + " bytes past its end");
  }
  return r;
}

uint64_t RecordDigest(const WalRecord& r) {
  // FNV-1a over what the record changes (not its storage id, which each node numbers itself,
  // nor a training artefact, which follows from the rest).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  auto str = [&](const std::string& v) {
    const uint64_t n = v.size();
    mix(&n, sizeof n);
    mix(v.data(), v.size());
  };
  const auto type = static_cast<uint8_t>(r.type);
  mix(&type, 1);
  mix(&r.storage_seq, sizeof r.storage_seq);
  str(r.tenant);
  str(r.collection);
  str(r.index_type);
  mix(r.vectors.data.data(), r.vectors.data.size() * sizeof(float));
  mix(r.ids.data(), r.ids.size() * sizeof(int64_t));
  for (const std::string& k : r.keys) str(k);
  mix(r.timestamps.data(), r.timestamps.size() * sizeof(int64_t));
  str(r.name);
  mix(&r.value, sizeof r.value);
  mix(&r.n_clusters, sizeof r.n_clusters);
  return h | 1;  // never 0 ("not known")
}

}  // namespace vecgpu::store
