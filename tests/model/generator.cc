#include "tests/model/generator.h"

#include <cmath>

namespace vecgpu::model {
namespace {

constexpr int kTenants = 3;
constexpr int kFloatDim = 8;
constexpr int kBinaryDim = 16;
const char* const kNames[] = {"a", "b", "c", "d", "e", "f"};
const char* const kBaseTypes[] = {
    "L2",    "IP",         "IDMap2,Flat", "IVF4",        "IVF4_IP",      "HNSW8",     "SQ8",
    "PQ2x4", "IVF4,PQ2x4", "BINARY_FLAT", "BINARY_IVF4", "BINARY_HASH8", "PCA8,HNSW8"};

}  // namespace

std::vector<float> Generator::Vectors(int rows, int dim, bool binary) {
  std::vector<float> x(static_cast<size_t>(rows) * dim);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (float& v : x) {
    // Multiples of 1/16: exact in float32 and float64, so the wire round-trips them bit for bit.
    v = binary ? static_cast<float>(Uniform(0, 1)) : std::round(normal(rng_) * 16.f) / 16.f;
  }
  return x;
}

std::string Generator::PickName(const Model& model, int tenant) {
  std::vector<std::string> mine;
  for (const auto& [key, c] : model.collections()) {
    if (key.first == tenant) mine.push_back(key.second);
  }
  if (mine.empty() || Chance(0.03)) return kNames[Uniform(0, 5)];
  return mine[Uniform(0, static_cast<int>(mine.size()) - 1)];
}

void Generator::Corrupt(Op& op, const Model::Collection* c) {
  const bool binary = c && c->storage->traits.binary;
  switch (Uniform(0, 2)) {
    case 0:  // one component too many
      op.bad = "dim";
      op.cols += 1;
      op.x = Vectors(op.rows, op.cols, binary);
      break;
    case 1:  // NaN (the encoder writes it: JSON has no NaN)
      op.bad = "nan";
      break;
    default:
      if (binary) {
        op.bad = "bit";
        op.x[0] = 0.5f;
      } else {
        op.bad = "nan";
      }
  }
}

Op Generator::Next(const Model& model) {
  Op op;
  op.tenant = Uniform(0, kTenants - 1);
  int ours = 0;
  for (const auto& [key, c] : model.collections()) ours += key.first == op.tenant;
  const int roll = Uniform(0, 99);
  // Creation is likelier while a tenant has few indexes.
  if (roll < (ours < 3 ? 25 : 4)) {
    op.kind = OpKind::kCreate;
    op.name = kNames[Uniform(0, 5)];
    if (ours > 0 && Chance(0.3)) {
      // An IDMap view over an existing index of the tenant.
      std::string base = PickName(model, op.tenant);
      op.index_type = (Chance(0.5) ? "IDMap:" : "IDMap2:") + base;
      auto it = model.collections().find({op.tenant, base});
      op.dim = it != model.collections().end() ? it->second.storage->dim : kFloatDim;
    } else {
      op.index_type = kBaseTypes[Uniform(0, std::size(kBaseTypes) - 1)];
      op.dim = TraitsOf(op.index_type).binary ? kBinaryDim : kFloatDim;
    }
    return op;
  }
  op.name = PickName(model, op.tenant);
  auto it = model.collections().find({op.tenant, op.name});
  const Model::Collection* c = it == model.collections().end() ? nullptr : &it->second;
  const int dim = c ? c->storage->dim : kFloatDim;
  const bool binary = c && c->storage->traits.binary;
  const std::vector<int64_t> ids = c ? Model::IdsOf(*c) : std::vector<int64_t>{};
  auto some_id = [&] {
    return !ids.empty() && Chance(0.85) ? ids[Uniform(0, static_cast<int>(ids.size()) - 1)]
                                        : static_cast<int64_t>(Uniform(0, 300));
  };
  auto queries = [&](int rows) {
    op.rows = rows;
    op.cols = dim;
    op.x = Vectors(rows, dim, binary);
    for (int q = 0; q < rows && c && !ids.empty(); ++q) {
      if (!Chance(0.5)) continue;
      const Model::Entry* e = Model::Find(*c, ids[Uniform(0, static_cast<int>(ids.size()) - 1)]);
      if (e && static_cast<int>(e->v.size()) == dim) {
        std::copy(e->v.begin(), e->v.end(), op.x.begin() + q * dim);
      }
    }
  };
  const bool has_ids = c && c->view != 0;

  const int what = Uniform(0, 99);
  if (what < 22) {  // add
    op.kind = OpKind::kAdd;
    op.rows = Uniform(1, 8);
    op.cols = dim;
    op.x = Vectors(op.rows, dim, binary);
    if (has_ids || Chance(0.1)) {
      op.send_ids = true;
      const int64_t next = c && !has_ids ? (c->storage->traits.stable_labels
                                                ? c->storage->next_label
                                                : static_cast<int64_t>(c->storage->entries.size()))
                                         : 0;
      for (int i = 0; i < op.rows; ++i) {
        op.ids.push_back(has_ids ? (Chance(0.3) ? some_id() : Uniform(0, 300)) : next + i);
      }
      if (!has_ids && Chance(0.3)) op.ids[0] += 1;  // wrong numbering: refused
      if (has_ids && Chance(0.05)) op.ids[0] = -op.ids[0] - 1;
      if (has_ids && Chance(0.05) && op.rows > 1) op.ids[1] = op.ids[0];
      if (Chance(0.3)) op.kind = OpKind::kAddWithIds;
    }
    if (Chance(0.07)) Corrupt(op, c);
  } else if (what < 30) {
    op.kind = OpKind::kTrain;
    op.rows = Uniform(64, 96);
    op.cols = dim;
    op.x = Vectors(op.rows, dim, binary);
    if (Chance(0.05)) Corrupt(op, c);
  } else if (what < 37) {
    op.kind = OpKind::kRemove;
    for (int i = Uniform(1, 4); i > 0; --i) op.ids.push_back(some_id());
  } else if (what < 42) {
    op.kind = OpKind::kReplace;
    op.ids = {some_id()};
    op.rows = 1;
    op.cols = dim;
    op.x = Vectors(1, dim, binary);
    if (Chance(0.1)) Corrupt(op, c);
  } else if (what < 44) {
    op.kind = Chance(0.5) ? OpKind::kReset : OpKind::kClear;
  } else if (what < 46) {
    op.kind = OpKind::kDelete;
  } else if (what < 49) {
    op.kind = OpKind::kMerge;
    for (int i = Uniform(1, 2); i > 0; --i) op.sources.push_back(PickName(model, op.tenant));
  } else if (what < 51) {
    op.kind = OpKind::kRecluster;
    op.count = Chance(0.5) ? 0 : Uniform(2, 6);
  } else if (what < 53) {
    op.kind = OpKind::kSetParam;
    op.param = Chance(0.5) ? "nprobe" : "efSearch";
    op.value = Uniform(0, 8);
  } else if (what < 70) {
    op.kind = Chance(0.8) ? OpKind::kSearch : OpKind::kSearchAndReconstruct;
    queries(Uniform(1, 3));
    op.k = Uniform(1, 12);
    if (Chance(0.3)) {
      op.param = Chance(0.5) ? "nprobe" : "efSearch";
      op.value = Uniform(1, 64);
    }
    if (Chance(0.05)) {
      Corrupt(op, c);
    } else if (Chance(0.03)) {
      op.bad = "k0";
      op.k = 0;
    }
  } else if (what < 77) {
    op.kind = OpKind::kRangeSearch;
    queries(Uniform(1, 2));
    op.radius = binary                       ? Uniform(0, 10) + 0.5 * Uniform(0, 1)
                : c && c->storage->traits.ip ? Uniform(-3, 6) + 0.25
                                             : Uniform(0, 24) + 0.25;
  } else if (what < 84) {
    op.kind = OpKind::kReconstruct;
    op.ids = {std::abs(some_id())};
  } else if (what < 89) {
    op.kind = OpKind::kReconstructN;
    op.start = Uniform(0, static_cast<int>(ids.size()) + 1);
    op.count = Uniform(0, 6);
  } else if (what < 94) {
    op.kind = OpKind::kGetVectors;
    op.start = Uniform(0, static_cast<int>(ids.size()) + 1);
    op.count = Chance(0.5) ? 0 : Uniform(1, 6);
  } else if (what < 98) {
    op.kind = OpKind::kStats;
  } else {
    op.kind = OpKind::kList;
    op.name.clear();
  }
  return op;
}

}  // namespace vecgpu::model
