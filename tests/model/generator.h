#pragma once

#include <cstdint>
#include <random>

#include "tests/model/model.h"
#include "tests/model/ops.h"

namespace vecgpu::model {

// Draws random ops that mostly make sense against the model's current state (existing names,
// stored ids, stored vectors as queries), with a share of requests that must be refused.
// Deterministic for a seed and the same sequence of model states.
class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}
  Op Next(const Model& model);

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  // rows random vectors of the collection's kind (0/1 for binary).
  std::vector<float> Vectors(int rows, int dim, bool binary);
  // Picks an existing collection of `tenant` (or, rarely, a name nobody has).
  std::string PickName(const Model& model, int tenant);
  void Corrupt(Op& op, const Model::Collection* c);

  std::mt19937_64 rng_;
};

}  // namespace vecgpu::model
