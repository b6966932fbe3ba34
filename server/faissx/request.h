#pragma once

#include <cstdint>
#include <memory>
#include <msgpack.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/options.h"
#include "core/types.h"
#include "core/util/status.h"

namespace vecgpu::server {

// How to read a vector field: the index's dimension (0 when the request itself says) and
// whether it is a binary index (bins then hold packed bits instead of float32 values).
struct VectorShape {
  int dim = 0;
  bool binary = false;
};

// One decoded FAISSx request: a msgpack map with string keys. Every accessor validates type
// and range and names the field in its error, so handlers never see unchecked input.
// Movable, not copyable; not thread-safe.
class Request {
 public:
  // Scans `payload` against `limits` (depth, declared lengths) before msgpack allocates
  // anything, then decodes it. Errors start with "Malformed request".
  static StatusOr<Request> Decode(std::string payload, const Limits& limits);

  const std::string& action() const { return action_; }
  const msgpack::object* Find(std::string_view key) const;
  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  StatusOr<std::string> String(std::string_view key, size_t max_length) const;
  StatusOr<std::string> OptionalString(std::string_view key, std::string fallback,
                                       size_t max_length) const;
  StatusOr<int64_t> Int(std::string_view key, int64_t min, int64_t max) const;
  StatusOr<int64_t> OptionalInt(std::string_view key, int64_t fallback, int64_t min,
                                int64_t max) const;
  StatusOr<double> Number(std::string_view key) const;
  StatusOr<double> OptionalNumber(std::string_view key, double fallback) const;
  StatusOr<bool> OptionalBool(std::string_view key, bool fallback) const;
  StatusOr<std::vector<int64_t>> Ids(std::string_view key, int64_t max_count) const;
  StatusOr<std::vector<std::string>> Strings(std::string_view key, int64_t max_count,
                                             size_t max_length) const;
  // A matrix from nested arrays of numbers, a single flat vector, or a bin (see PROTOCOL.md).
  // At most max_rows rows and limits.max_dimension columns are ever allocated.
  StatusOr<FloatMatrix> Vectors(std::string_view key, VectorShape shape, int64_t max_rows) const;
  // The optional "params" map: nprobe, efSearch / ef_search / ef.
  StatusOr<SearchParams> Params() const;

 private:
  Request() = default;

  // msgpack strings and bins point into it, so it lives on the heap: a moved Request must not
  // move the bytes (a short std::string keeps them inline).
  std::unique_ptr<const std::string> payload_;
  msgpack::object_handle handle_;
  std::string action_;
  Limits limits_;
};

}  // namespace vecgpu::server
