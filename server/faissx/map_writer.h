#pragma once

#include <cstdint>
#include <msgpack.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/types.h"

namespace vecgpu::server {

// Builds one msgpack map (a FAISSx reply, or a request in the bench client) whose fields are
// written one by one; the map header, which needs the count, is put in front by Finish.
// Not thread-safe.
class MapWriter {
 public:
  MapWriter() : packer_(body_) {}

  // Writes `key` and returns the packer for exactly one value.
  msgpack::packer<msgpack::sbuffer>& Key(std::string_view key) {
    ++fields_;
    packer_.pack_str(static_cast<uint32_t>(key.size()));
    packer_.pack_str_body(key.data(), static_cast<uint32_t>(key.size()));
    return packer_;
  }
  void Str(std::string_view key, std::string_view v);
  void Int(std::string_view key, int64_t v) { Key(key).pack_int64(v); }
  void Double(std::string_view key, double v) {
    Key(key);
    Float64(v);
  }
  void Bool(std::string_view key, bool v) { v ? Key(key).pack_true() : Key(key).pack_false(); }

  // A matrix as nested arrays of floats, or with `binary` as a float32 bin.
  void Matrix(std::string_view key, const FloatMatrix& m, bool binary);
  // One vector (row 0 of m) as an array of floats, or a float32 bin.
  void Vector(std::string_view key, const FloatMatrix& m, bool binary);
  void Floats(std::string_view key, const float* v, size_t n);
  void Ints(std::string_view key, const int64_t* v, size_t n);

  // A field whose value is already-encoded msgpack (e.g. another writer's Finish()).
  void Raw(std::string_view key, const std::string& msgpack_value) {
    Key(key);
    body_.write(msgpack_value.data(), msgpack_value.size());
  }

  // The packer, for values nested inside a field being written.
  msgpack::packer<msgpack::sbuffer>& packer() { return packer_; }

  // Values (no key), for nesting. Floats always go out as msgpack float64, as FAISSx sends
  // numpy values (msgpack-cxx's pack_double would turn integral values into integers).
  void Float64(double v);
  void FloatArray(const float* v, size_t n);
  void IntArray(const int64_t* v, size_t n);
  void Bin(const void* data, size_t bytes);

  // The whole reply.
  std::string Finish() const;

 private:
  msgpack::sbuffer body_;
  msgpack::packer<msgpack::sbuffer> packer_;
  uint32_t fields_ = 0;
};

}  // namespace vecgpu::server
