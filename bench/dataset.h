#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/types.h"
#include "core/util/status.h"

namespace vecgpu::bench {

// Vectors to index and queries to search, with exact neighbours when known.
struct Dataset {
  std::string name;                // e.g. "synthetic-100000x128" or the file's stem
  FloatMatrix base;                // n x d
  FloatMatrix queries;             // nq x d
  std::vector<int32_t> neighbors;  // nq x gt_k exact neighbour ids (row-major); may be empty
  int gt_k = 0;                    // columns of `neighbors`
  Metric metric = Metric::kL2;
};

// Seeded Gaussian clusters: `clusters` centres drawn N(0, 1), points = centre + N(0, spread^2).
// Queries come from the same distribution (not copies of base rows). The same arguments give
// the same data (with the same standard library). Name "synthetic-<n>x<d>", metric L2.
Dataset Synthetic(int64_t n, int64_t nq, int d, int clusters, uint64_t seed, float spread = 0.3f);

// The TEXMEX formats of the SIFT/GIST sets: per vector, an int32 dimension then d values
// (float32 for fvecs, int32 for ivecs, uint8 for bvecs). `max_rows` < 0 reads all.
// Readers refuse (InvalidArgument, naming the file) empty or truncated files, dimensions
// outside [1, 100000] and any row whose dimension header differs from the first; sizes are
// checked against the file's length before anything is allocated. Missing file: NotFound.
StatusOr<FloatMatrix> ReadFvecs(const std::string& path, int64_t max_rows = -1);
StatusOr<FloatMatrix> ReadBvecs(const std::string& path, int64_t max_rows = -1);
// ivecs rows must all have the same dimension; returns rows x cols int32.
StatusOr<std::vector<int32_t>> ReadIvecs(const std::string& path, int* cols, int64_t max_rows = -1);
// Writers need at least one row and 1 <= cols <= 100000; they write "<path>.tmp" and rename
// it over `path`, so a reader never sees a partial file.
Status WriteFvecs(const std::string& path, const FloatMatrix& m);
Status WriteIvecs(const std::string& path, const std::vector<int32_t>& v, int cols);

// The ann-benchmarks HDF5 layout: datasets "train" (base), "test" (queries), optional
// "neighbors" (int) and "distances"; the file attribute "distance" ("euclidean", "angular",
// "dot") sets the metric ("angular" -> inner product on normalised vectors) and is required.
// Shapes, element types and neighbour ids are checked; declared shapes are checked against the
// bytes stored before allocating. Uses HDF5's process-wide state: not thread-safe.
StatusOr<Dataset> ReadAnnHdf5(const std::string& path);

// Loads "synthetic:n=100000,nq=1000,d=128,clusters=100,seed=1", a .hdf5/.h5 file, or
// "<base>.fvecs|.bvecs" (queries from "<prefix>_query.fvecs", ground truth from
// "<prefix>_groundtruth.ivecs" when present, as in the SIFT layout; a "_base" suffix is not
// part of the prefix, and a .bvecs base first looks for "<prefix>_query.bvecs").
// Synthetic keys: n, nq, d, clusters, seed, spread; defaults n=100000, nq=1000, d=128,
// clusters=100, seed=1, spread=0.3.
StatusOr<Dataset> LoadDataset(const std::string& spec);

}  // namespace vecgpu::bench
