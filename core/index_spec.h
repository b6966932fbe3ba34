#pragma once

#include <string>
#include <string_view>

#include "core/types.h"
#include "core/util/status.h"

namespace vecgpu {

enum class IdMapKind { kNone, kIdMap, kIdMap2 };

// What a collection's index is: the FAISS factory string, metric and dimension, plus the
// FAISSx type details clients read back. Built from a FAISSx `index_type` by ParseIndexType.
struct IndexSpec {
  std::string index_type;  // as the client gave it, echoed back
  std::string factory;     // FAISS factory string, e.g. "IVF100,Flat"; "BFlat" etc. if binary
  Metric metric = Metric::kL2;
  int dim = 0;          // float components; bits for binary indexes
  bool binary = false;  // vectors are bit strings (0/1 per component on the wire)
  IdMapKind id_map = IdMapKind::kNone;
  std::string base_index_id;  // for "IDMap:{base}" / "IDMap2:{base}"

  // Type details, 0 when they do not apply.
  int nlist = 0;
  int hnsw_m = 0;
  int pq_m = 0;
  int pq_nbits = 0;
  int sq_bits = 0;

  std::string kind() const;  // "FLAT", "IVF", "IVF_PQ", "HNSW", "PQ", "SQ", "IVF_SQ", "BINARY_*"
};

// Parses a FAISSx `index_type` (see PROTOCOL.md: "L2", "IP", "IVF{n}", "IVF{n},PQ{m}x{b}",
// "HNSW{M}", "PQ{m}x{b}", "SQ{bits}", "IVF{n}_SQ{q}", "_IP" suffixes, "BINARY_*",
// "IDMap:{id}", "IDMap2:{id}") or a plain FAISS factory string. `metric_override`, when not
// empty ("L2", "IP", "INNER_PRODUCT", "METRIC_INNER_PRODUCT"...), sets the metric of a plain
// factory string. The factory string itself is checked later, by the backend that builds it.
// An IDMap view's base index ("IDMap2:base" -> "base"), or "" for any other index type.
std::string ViewBaseOf(std::string_view index_type);

StatusOr<IndexSpec> ParseIndexType(std::string_view index_type, int dim,
                                   std::string_view metric_override = {});

}  // namespace vecgpu
