#pragma once

#include <random>
#include <vector>

#include "core/types.h"

namespace vecgpu::testing {

// n seeded Gaussian vectors around `clusters` centres, row-major.
inline FloatMatrix Clustered(int64_t n, int d, int clusters = 10, unsigned seed = 7) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> centre(0.f, 4.f), noise(0.f, 1.f);
  std::vector<float> centres(clusters * d);
  for (auto& c : centres) c = centre(rng);
  FloatMatrix m;
  m.rows = n;
  m.cols = d;
  m.data.resize(n * d);
  for (int64_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % clusters);
    for (int j = 0; j < d; ++j) m.data[i * d + j] = centres[c * d + j] + noise(rng);
  }
  return m;
}

inline FloatMatrix Rows(const FloatMatrix& m, int64_t start, int64_t n) {
  FloatMatrix out;
  out.rows = n;
  out.cols = m.cols;
  out.data.assign(m.data.begin() + start * m.cols, m.data.begin() + (start + n) * m.cols);
  return out;
}

}  // namespace vecgpu::testing
