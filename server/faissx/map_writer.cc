#include "server/faissx/map_writer.h"

#include <cstring>

namespace vecgpu::server {

void MapWriter::Float64(double v) {
  char buf[9];
  buf[0] = static_cast<char>(0xcb);
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  for (int i = 0; i < 8; ++i) buf[1 + i] = static_cast<char>(bits >> (56 - 8 * i));
  body_.write(buf, 9);
}

void MapWriter::FloatArray(const float* v, size_t n) {
  packer_.pack_array(static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; ++i) Float64(v[i]);  // exact for float32 values
}

void MapWriter::IntArray(const int64_t* v, size_t n) {
  packer_.pack_array(static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; ++i) packer_.pack_int64(v[i]);
}

void MapWriter::Bin(const void* data, size_t bytes) {
  packer_.pack_bin(static_cast<uint32_t>(bytes));
  packer_.pack_bin_body(static_cast<const char*>(data), static_cast<uint32_t>(bytes));
}

void MapWriter::Str(std::string_view key, std::string_view v) {
  auto& p = Key(key);
  p.pack_str(static_cast<uint32_t>(v.size()));
  p.pack_str_body(v.data(), static_cast<uint32_t>(v.size()));
}

void MapWriter::Matrix(std::string_view key, const FloatMatrix& m, bool binary) {
  Key(key);
  if (binary) {
    Bin(m.data.data(), m.data.size() * sizeof(float));
    return;
  }
  packer_.pack_array(static_cast<uint32_t>(m.rows));
  for (int64_t r = 0; r < m.rows; ++r) FloatArray(m.row(r), m.cols);
}

void MapWriter::Vector(std::string_view key, const FloatMatrix& m, bool binary) {
  Key(key);
  if (binary) {
    Bin(m.data.data(), m.cols * sizeof(float));
  } else {
    FloatArray(m.data.data(), m.cols);
  }
}

void MapWriter::Floats(std::string_view key, const float* v, size_t n) {
  Key(key);
  FloatArray(v, n);
}

void MapWriter::Ints(std::string_view key, const int64_t* v, size_t n) {
  Key(key);
  IntArray(v, n);
}

std::string MapWriter::Finish() const {
  msgpack::sbuffer head;
  msgpack::packer<msgpack::sbuffer>(head).pack_map(fields_);
  std::string out;
  out.reserve(head.size() + body_.size());
  out.append(head.data(), head.size());
  out.append(body_.data(), body_.size());
  return out;
}

}  // namespace vecgpu::server
