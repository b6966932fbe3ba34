#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/index_spec.h"
#include "core/types.h"
#include "core/util/status.h"

namespace vecgpu {

// What a backend reports about its index.
struct BackendInfo {
  int64_t ntotal = 0;
  bool is_trained = false;
  std::string device;            // where searches run now: "cpu", "gpu:0", "gpu:0,1"
  std::string placement;         // where the DeviceManager placed it, and why (empty: unplaced)
  std::string replica;           // the device copy: "current", "building", "after training", "none"
  int64_t gpu_memory_bytes = 0;  // the device copy's own memory, when current
  int64_t memory_bytes = 0;      // estimate of the index's own memory
  int nprobe = 0;                // IVF kinds: lists visited by default
  int ef_search = 0;             // HNSW kinds
  int ef_construction = 0;       // HNSW kinds
};

// One step of an index's vector transform chain (PCA, OPQ, random rotation, L2 norm).
struct TransformStep {
  std::string type;  // "PCAMatrix", "OPQMatrix", "RandomRotationMatrix", "NormalizationTransform"
  int d_in = 0;
  int d_out = 0;
  bool is_trained = false;
};

// One index instance on one device, following FAISS's Index contract: batches of vectors are
// row-major n * d float32 matrices (for binary indexes, one 0/1 float per bit).
//
// Vectors are named by labels the backend assigns: Add gives n consecutive labels starting at
// next_label(). Labels of flat-storage kinds are storage positions, renumbered densely after a
// removal (labels_shift_on_remove()); IVF kinds keep their labels for life and never hand out
// a label twice. Either way, ascending label order is storage order. User ids and which
// collection owns a vector are kept above the backend (core/label_table.h).
//
// Thread safety: const methods may run concurrently with each other; a non-const method
// requires that no other call runs at the same time (Collection enforces this with its lock).
// Methods never throw: library errors come back as Status.
class Backend {
 public:
  virtual ~Backend() = default;

  virtual const IndexSpec& spec() const = 0;
  virtual BackendInfo Info() const = 0;
  // Cheap parts of Info(), for the search and add paths.
  virtual int64_t ntotal() const = 0;
  virtual bool is_trained() const = 0;
  // The label the next added vector gets.
  virtual int64_t next_label() const = 0;
  virtual bool labels_shift_on_remove() const = 0;
  // Whether RemoveLabels works for this kind (FAISS cannot remove from HNSW graphs or binary
  // hash tables). Callers check first, so a refused removal or upsert changes nothing.
  virtual bool can_remove() const = 0;

  // x: size n * d.
  virtual Status Train(int64_t n, const float* x) = 0;
  // x: size n * d. The vectors get labels next_label() .. next_label() + n - 1.
  virtual Status Add(int64_t n, const float* x) = 0;
  // Adds x (size n * d) under the given labels, for rebuilding an index with its labels kept;
  // afterwards next_label() is at least `next_label`. Unimplemented for kinds whose labels are
  // storage positions.
  virtual Status AddLabeled(int64_t n, const float* x, const int64_t* labels,
                            int64_t next_label) = 0;
  // Removes the vectors with these labels; returns how many were there.
  virtual StatusOr<int64_t> RemoveLabels(std::span<const int64_t> labels) = 0;
  // Empties the index, keeping its training.
  virtual Status Reset() = 0;
  // Makes room for `n` vectors in all, so that adds up to that many reallocate nothing. For
  // device copies, whose storage FAISS grows by exactly what each add brings (PlacedBackend
  // decides how much, core/device/placed_backend.h); host indexes grow by themselves: the
  // default does nothing. ResourceExhausted when the device has no memory for it.
  virtual Status ReserveCapacity(int64_t n) {
    (void)n;
    return Status::Ok();
  }

  // x: size n * d; distances and labels: size n * k each. Missing results: label -1.
  virtual Status Search(int64_t n, const float* x, int k, const SearchParams& params,
                        float* distances, int64_t* labels) const = 0;
  // Vectors within `radius` (L2: squared distance < radius; IP: similarity > radius).
  virtual StatusOr<RangeResult> RangeSearch(int64_t n, const float* x, float radius,
                                            const SearchParams& params) const = 0;
  // out: size d. NotFound when no vector has this label.
  virtual Status Reconstruct(int64_t label, float* out) const = 0;
  // The vectors with labels start .. start + n - 1 (for flat-storage kinds: the storage
  // positions); out: size n * d. NotFound when one of them is missing.
  virtual Status ReconstructN(int64_t start, int64_t n, float* out) const = 0;

  // The vector transforms applied before the index (empty when there are none).
  virtual std::vector<TransformStep> Transforms() const = 0;
  // Runs x (size n * d) through the transform chain; InvalidArgument when there is none.
  virtual StatusOr<FloatMatrix> ApplyTransform(int64_t n, const float* x) const = 0;

  // Index settings that persist: "nprobe", "efSearch", "efConstruction".
  virtual Status SetParameter(std::string_view name, double value) = 0;
  virtual StatusOr<double> GetParameter(std::string_view name) const = 0;

  // The index in FAISS's own file format (faiss::write_index / write_index_binary): what
  // device copies are built from. Vectors and labels as stored; the exact buffer of an
  // untrained scalar quantizer is not part of it.
  virtual StatusOr<std::vector<uint8_t>> Serialize() const = 0;
};

// Creates backends for one kind of device, and runs stateless computations there.
// Thread-safe.
class BackendFactory {
 public:
  virtual ~BackendFactory() = default;

  virtual std::string name() const = 0;  // "cpu", "gpu"
  // Builds an empty index for `spec`; InvalidArgument when the spec cannot be built.
  virtual StatusOr<std::unique_ptr<Backend>> Create(const IndexSpec& spec) = 0;
  // Rebuilds an index of `spec` from Backend::Serialize()'s bytes, handing out labels from
  // `next_label` on (IVF kinds never reuse a label). DataLoss when the bytes are not such an
  // index.
  virtual StatusOr<std::unique_ptr<Backend>> Load(const IndexSpec& spec, std::string_view bytes,
                                                  int64_t next_label) = 0;
  // k-means over x (size n * d).
  virtual StatusOr<ClusteringResult> Cluster(int64_t n, int d, const float* x, int n_clusters,
                                             Metric metric, int niter) = 0;
};

}  // namespace vecgpu
