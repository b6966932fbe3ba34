#pragma once

#include <faiss/impl/io.h>

#include <algorithm>
#include <cstring>
#include <string_view>

namespace vecgpu::cpu {

// Reads FAISS's serialization straight from bytes in memory, without the copy
// faiss::VectorIOReader needs (a loaded snapshot's index can be gigabytes).
struct SpanIOReader final : faiss::IOReader {
  explicit SpanIOReader(std::string_view b) : bytes(b) {}
  size_t operator()(void* ptr, size_t size, size_t nitems) override {
    if (size == 0 || nitems == 0) return 0;
    const size_t n = std::min(nitems, (bytes.size() - pos) / size);
    std::memcpy(ptr, bytes.data() + pos, n * size);
    pos += n * size;
    return n;
  }
  bool done() const { return pos == bytes.size(); }

  std::string_view bytes;
  size_t pos = 0;
};

}  // namespace vecgpu::cpu
