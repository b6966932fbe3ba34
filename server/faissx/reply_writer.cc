#include "server/faissx/reply_writer.h"

namespace vecgpu::server {

void PackFloats(msgpack::packer<msgpack::sbuffer>& p, const float* v, size_t n) {
  p.pack_array(static_cast<uint32_t>(n));
  // float64 on the wire, as the FAISSx server sends numpy values; exact for float32 inputs.
  for (size_t i = 0; i < n; ++i) p.pack_double(v[i]);
}

void PackInts(msgpack::packer<msgpack::sbuffer>& p, const int64_t* v, size_t n) {
  p.pack_array(static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; ++i) p.pack_int64(v[i]);
}

void PackBin(msgpack::packer<msgpack::sbuffer>& p, const void* data, size_t bytes) {
  p.pack_bin(static_cast<uint32_t>(bytes));
  p.pack_bin_body(static_cast<const char*>(data), static_cast<uint32_t>(bytes));
}

void ReplyWriter::Str(std::string_view key, std::string_view v) {
  auto& p = Key(key);
  p.pack_str(static_cast<uint32_t>(v.size()));
  p.pack_str_body(v.data(), static_cast<uint32_t>(v.size()));
}

void ReplyWriter::Matrix(std::string_view key, const FloatMatrix& m, bool binary) {
  auto& p = Key(key);
  if (binary) {
    PackBin(p, m.data.data(), m.data.size() * sizeof(float));
    return;
  }
  p.pack_array(static_cast<uint32_t>(m.rows));
  for (int64_t r = 0; r < m.rows; ++r) PackFloats(p, m.row(r), m.cols);
}

void ReplyWriter::Vector(std::string_view key, const FloatMatrix& m, bool binary) {
  auto& p = Key(key);
  if (binary) {
    PackBin(p, m.data.data(), m.cols * sizeof(float));
  } else {
    PackFloats(p, m.data.data(), m.cols);
  }
}

void ReplyWriter::Floats(std::string_view key, const float* v, size_t n) {
  PackFloats(Key(key), v, n);
}

void ReplyWriter::Ints(std::string_view key, const int64_t* v, size_t n) {
  PackInts(Key(key), v, n);
}

std::string ReplyWriter::Finish() const {
  msgpack::sbuffer head;
  msgpack::packer<msgpack::sbuffer>(head).pack_map(fields_);
  std::string out;
  out.reserve(head.size() + body_.size());
  out.append(head.data(), head.size());
  out.append(body_.data(), body_.size());
  return out;
}

}  // namespace vecgpu::server
