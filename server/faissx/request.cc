#include "server/faissx/request.h"

#include <cmath>
#include <cstring>

#include "server/faissx/msgpack_scan.h"

namespace vecgpu::server {
namespace {

using msgpack::type::object_type;

bool IsNumber(const msgpack::object& o) {
  return o.type == object_type::POSITIVE_INTEGER || o.type == object_type::NEGATIVE_INTEGER ||
         o.type == object_type::FLOAT32 || o.type == object_type::FLOAT64;
}

double AsDouble(const msgpack::object& o) {
  switch (o.type) {
    case object_type::POSITIVE_INTEGER:
      return static_cast<double>(o.via.u64);
    case object_type::NEGATIVE_INTEGER:
      return static_cast<double>(o.via.i64);
    default:
      return o.via.f64;
  }
}

bool AsInt(const msgpack::object& o, int64_t* out) {
  if (o.type == object_type::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(o.via.u64);
    return true;
  }
  if (o.type == object_type::NEGATIVE_INTEGER) {
    *out = o.via.i64;
    return true;
  }
  return false;
}

Status FieldError(std::string_view key, const std::string& what) {
  return InvalidArgument(std::string(key) + ": " + what);
}

// Strings and bins stay in the payload instead of being copied into the zone.
bool ReferenceAll(msgpack::type::object_type, std::size_t, void*) { return true; }

}  // namespace

StatusOr<Request> Request::Decode(std::string payload, const Limits& limits) {
  ScanLimits scan{limits.max_depth, limits.max_container_elements};
  RETURN_IF_ERROR(ScanMsgpack(payload, scan));
  Request r;
  r.payload_ = std::make_unique<const std::string>(std::move(payload));
  r.limits_ = limits;
  try {
    msgpack::unpack_limit ul(limits.max_container_elements, limits.max_container_elements,
                             limits.max_request_bytes, limits.max_request_bytes,
                             limits.max_request_bytes, limits.max_depth);
    r.handle_ = msgpack::unpack(r.payload_->data(), r.payload_->size(), ReferenceAll, nullptr, ul);
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("Malformed request: ") + e.what());
  }
  const msgpack::object& root = r.handle_.get();
  if (root.type != object_type::MAP) {
    return InvalidArgument("Malformed request: the request must be a msgpack map");
  }
  for (uint32_t i = 0; i < root.via.map.size; ++i) {
    if (root.via.map.ptr[i].key.type != object_type::STR) {
      return InvalidArgument("Malformed request: map keys must be strings");
    }
  }
  const msgpack::object* action = r.Find("action");
  if (!action) return InvalidArgument("Malformed request: no 'action' field");
  if (action->type != object_type::STR || action->via.str.size > 64) {
    return InvalidArgument("Malformed request: 'action' must be a string of at most 64 bytes");
  }
  r.action_.assign(action->via.str.ptr, action->via.str.size);
  return r;
}

const msgpack::object* Request::Find(std::string_view key) const {
  const msgpack::object& root = handle_.get();
  for (uint32_t i = 0; i < root.via.map.size; ++i) {
    const auto& kv = root.via.map.ptr[i];
    if (std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key) {
      // A nil value counts as absent, as Python clients send None for "not given".
      return kv.val.type == object_type::NIL ? nullptr : &kv.val;
    }
  }
  return nullptr;
}

StatusOr<std::string> Request::String(std::string_view key, size_t max_length) const {
  const msgpack::object* o = Find(key);
  if (!o) return FieldError(key, "required");
  if (o->type != object_type::STR) return FieldError(key, "must be a string");
  if (o->via.str.size == 0) return FieldError(key, "must not be empty");
  if (o->via.str.size > max_length) {
    return FieldError(key, "longer than " + std::to_string(max_length) + " characters");
  }
  return std::string(o->via.str.ptr, o->via.str.size);
}

StatusOr<std::string> Request::OptionalString(std::string_view key, std::string fallback,
                                              size_t max_length) const {
  if (!Has(key)) return fallback;
  return String(key, max_length);
}

StatusOr<int64_t> Request::Int(std::string_view key, int64_t min, int64_t max) const {
  const msgpack::object* o = Find(key);
  if (!o) return FieldError(key, "required");
  int64_t v = 0;
  if (!AsInt(*o, &v)) return FieldError(key, "must be an integer");
  if (v < min || v > max) {
    return FieldError(key, "must be within " + std::to_string(min) + ".." + std::to_string(max) +
                               ", got " + std::to_string(v));
  }
  return v;
}

StatusOr<int64_t> Request::OptionalInt(std::string_view key, int64_t fallback, int64_t min,
                                       int64_t max) const {
  if (!Has(key)) return fallback;
  return Int(key, min, max);
}

StatusOr<double> Request::Number(std::string_view key) const {
  const msgpack::object* o = Find(key);
  if (!o) return FieldError(key, "required");
  if (!IsNumber(*o)) return FieldError(key, "must be a number");
  double v = AsDouble(*o);
  if (!std::isfinite(v)) return FieldError(key, "must be a finite number");
  return v;
}

StatusOr<double> Request::OptionalNumber(std::string_view key, double fallback) const {
  if (!Has(key)) return fallback;
  return Number(key);
}

StatusOr<bool> Request::OptionalBool(std::string_view key, bool fallback) const {
  const msgpack::object* o = Find(key);
  if (!o) return fallback;
  if (o->type != object_type::BOOLEAN) return FieldError(key, "must be true or false");
  return o->via.boolean;
}

StatusOr<std::vector<int64_t>> Request::Ids(std::string_view key, int64_t max_count) const {
  const msgpack::object* o = Find(key);
  if (!o) return FieldError(key, "required");
  if (o->type != object_type::ARRAY) return FieldError(key, "must be an array of integers");
  if (o->via.array.size > max_count) {
    return FieldError(key, std::to_string(o->via.array.size) + " ids, above the limit of " +
                               std::to_string(max_count));
  }
  std::vector<int64_t> ids(o->via.array.size);
  for (uint32_t i = 0; i < o->via.array.size; ++i) {
    if (!AsInt(o->via.array.ptr[i], &ids[i])) {
      return FieldError(key, "element " + std::to_string(i) + " is not an integer");
    }
  }
  return ids;
}

StatusOr<std::vector<std::string>> Request::Strings(std::string_view key, int64_t max_count,
                                                    size_t max_length) const {
  const msgpack::object* o = Find(key);
  if (!o) return FieldError(key, "required");
  if (o->type != object_type::ARRAY) return FieldError(key, "must be an array of strings");
  if (o->via.array.size > max_count) {
    return FieldError(key, "more than " + std::to_string(max_count) + " entries");
  }
  std::vector<std::string> out;
  for (uint32_t i = 0; i < o->via.array.size; ++i) {
    const auto& e = o->via.array.ptr[i];
    if (e.type != object_type::STR || e.via.str.size == 0 || e.via.str.size > max_length) {
      return FieldError(key, "element " + std::to_string(i) +
                                 " is not a non-empty string of at "
                                 "most " +
                                 std::to_string(max_length) + " characters");
    }
    out.emplace_back(e.via.str.ptr, e.via.str.size);
  }
  return out;
}

StatusOr<FloatMatrix> Request::Vectors(std::string_view key, VectorShape shape,
                                       int64_t max_rows) const {
  const msgpack::object* o = Find(key);
  if (!o) return FieldError(key, "required");
  FloatMatrix m;
  if (o->type == object_type::BIN) {
    if (shape.dim <= 0) return FieldError(key, "a bin needs the dimension to be known");
    const size_t row_bytes = shape.binary ? shape.dim / 8 : 4 * static_cast<size_t>(shape.dim);
    const size_t size = o->via.bin.size;
    if (size == 0 || size % row_bytes != 0) {
      return FieldError(key, "bin of " + std::to_string(size) + " bytes is not a whole number of " +
                                 std::to_string(row_bytes) + "-byte vectors");
    }
    m.rows = static_cast<int64_t>(size / row_bytes);
    if (m.rows > max_rows) {
      return FieldError(
          key, std::to_string(m.rows) + " vectors, above the limit of " + std::to_string(max_rows));
    }
    m.cols = shape.dim;
    m.data.resize(m.rows * m.cols);
    if (shape.binary) {
      const auto* bits = reinterpret_cast<const uint8_t*>(o->via.bin.ptr);
      for (size_t i = 0; i < m.data.size(); ++i) m.data[i] = (bits[i / 8] >> (i % 8)) & 1;
    } else {
      std::memcpy(m.data.data(), o->via.bin.ptr, size);  // little-endian float32, row-major
    }
    return m;
  }
  if (o->type != object_type::ARRAY) {
    return FieldError(key, "must be an array of vectors (arrays of numbers) or a bin");
  }
  const auto& rows = o->via.array;
  if (rows.size == 0) return FieldError(key, "no vectors given");
  const bool flat = IsNumber(rows.ptr[0]);  // one vector given as a 1-D array
  if (!flat && rows.ptr[0].type != object_type::ARRAY) {
    return FieldError(key, "vector 0 is not an array of numbers");
  }
  const int64_t nrows = flat ? 1 : rows.size;
  const int64_t ncols =
      flat ? rows.size : (rows.ptr[0].type == object_type::ARRAY ? rows.ptr[0].via.array.size : 0);
  if (nrows > max_rows) {
    return FieldError(
        key, std::to_string(nrows) + " vectors, above the limit of " + std::to_string(max_rows));
  }
  if (ncols < 1 || ncols > limits_.max_dimension) {
    return FieldError(
        key, "vectors must have 1.." + std::to_string(limits_.max_dimension) + " components");
  }
  if (shape.dim > 0 && ncols != shape.dim) {
    return FieldError(key, "vector dimension " + std::to_string(ncols) +
                               " does not match the index dimension " + std::to_string(shape.dim));
  }
  m.rows = nrows;
  m.cols = ncols;
  m.data.resize(nrows * ncols);
  for (int64_t r = 0; r < nrows; ++r) {
    const msgpack::object* row = flat ? rows.ptr : nullptr;
    if (!flat) {
      const auto& e = rows.ptr[r];
      if (e.type != object_type::ARRAY) {
        return FieldError(key, "vector " + std::to_string(r) + " is not an array of numbers");
      }
      if (e.via.array.size != ncols) {
        return FieldError(key, "vector " + std::to_string(r) + " has " +
                                   std::to_string(e.via.array.size) + " components, expected " +
                                   std::to_string(ncols));
      }
      row = e.via.array.ptr;
    }
    float* out = m.data.data() + r * ncols;
    for (int64_t c = 0; c < ncols; ++c) {
      if (!IsNumber(row[c])) {
        return FieldError(key, "vector " + std::to_string(r) + " component " + std::to_string(c) +
                                   " is not a number");
      }
      out[c] = static_cast<float>(AsDouble(row[c]));
    }
  }
  return m;
}

StatusOr<SearchParams> Request::Params() const {
  SearchParams p;
  const msgpack::object* o = Find("params");
  if (!o) return p;
  if (o->type != object_type::MAP) return FieldError("params", "must be a map");
  for (uint32_t i = 0; i < o->via.map.size; ++i) {
    const auto& kv = o->via.map.ptr[i];
    if (kv.key.type != object_type::STR) return FieldError("params", "keys must be strings");
    std::string_view name(kv.key.via.str.ptr, kv.key.via.str.size);
    int64_t v = 0;
    const bool is_int = AsInt(kv.val, &v);
    if (name == "nprobe") {
      if (!is_int || v < 1 || v > 1'000'000) {
        return FieldError("params.nprobe", "must be an integer within 1..1000000");
      }
      p.nprobe = static_cast<int>(v);
    } else if (name == "efSearch" || name == "ef_search" || name == "ef") {
      if (!is_int || v < 1 || v > 1'000'000) {
        return FieldError("params." + std::string(name), "must be an integer within 1..1000000");
      }
      p.ef_search = static_cast<int>(v);
    }
    // Other keys are ignored, as FAISSx does.
  }
  return p;
}

}  // namespace vecgpu::server
