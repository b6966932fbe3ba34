#include "gpu/gpu_replica.h"

#include <faiss/IndexBinaryFlat.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/IndexShards.h>
#include <faiss/gpu/GpuCloner.h>
#include <faiss/gpu/GpuClonerOptions.h>
#include <faiss/gpu/GpuIndexBinaryFlat.h>
#include <faiss/gpu/GpuIndexFlat.h>
#include <faiss/gpu/GpuIndexIVF.h>
#include <faiss/gpu/StandardGpuResources.h>
#include <faiss/gpu/impl/BinaryFlatIndex.cuh>
#include <faiss/gpu/impl/FlatIndex.cuh>
#include <faiss/gpu/utils/DeviceUtils.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <numeric>
#include <set>
#include <string>

#include "core/device/device_manager.h"
#include "core/device/placed_backend.h"
#include "core/util/bits.h"
#include "core/util/mutex.h"
#include "gpu/gpu_errors.h"

namespace vecgpu::gpu {

class GpuDevice {
 public:
  GpuDevice(int id, int64_t temp_memory) : id_(id), temp_memory_(temp_memory) {}
  GpuDevice(const GpuDevice&) = delete;
  GpuDevice& operator=(const GpuDevice&) = delete;

  int id() const { return id_; }
  void Lock() ACQUIRE(mu_) { mu_.Lock(); }
  void Unlock() RELEASE(mu_) { mu_.Unlock(); }
  // REQUIRES: the device lock (not annotated: DeviceLocks takes several at once).
  faiss::gpu::StandardGpuResources* resources() NO_THREAD_SAFETY_ANALYSIS {
    if (!res_) {
      res_ = std::make_unique<faiss::gpu::StandardGpuResources>();
      // Before the first use, which allocates it on the device.
      res_->setTempMemory(static_cast<size_t>(temp_memory_));
      in_use_.store(true, std::memory_order_release);
    }
    return res_.get();
  }
  // Whether FAISS's resources, and with them its temporary memory, exist on the device.
  bool in_use() const { return in_use_.load(std::memory_order_acquire); }

 private:
  const int id_;
  const int64_t temp_memory_;
  std::atomic<bool> in_use_{false};
  Mutex mu_;
  std::unique_ptr<faiss::gpu::StandardGpuResources> res_ GUARDED_BY(mu_);
};

std::shared_ptr<GpuDevice> NewGpuDevice(int id, int64_t temp_memory) {
  return std::make_shared<GpuDevice>(id, temp_memory);
}

bool DeviceInUse(const GpuDevice& device) { return device.in_use(); }

namespace {

// Holds the device locks of `devices` (sorted by id, so two copies sharing GPUs never
// deadlock) for its lifetime.
class DeviceLocks {
 public:
  explicit DeviceLocks(const std::vector<GpuDevice*>& sorted) NO_THREAD_SAFETY_ANALYSIS
      : devices_(sorted) {
    for (GpuDevice* d : devices_) d->Lock();
  }
  ~DeviceLocks() NO_THREAD_SAFETY_ANALYSIS {
    for (auto it = devices_.rbegin(); it != devices_.rend(); ++it) (*it)->Unlock();
  }
  DeviceLocks(const DeviceLocks&) = delete;
  DeviceLocks& operator=(const DeviceLocks&) = delete;

 private:
  const std::vector<GpuDevice*>& devices_;
};

// FAISS's GPU k-selection handles up to this many results or probed lists.
constexpr int kMaxGpuSelect = PlacedBackend::kMaxGpuK;
// Shared memory FAISS 1.7.3 assumes per block for the IVF-PQ lookup tables (sharedMemPerBlock).
constexpr int64_t kSharedMemPerBlock = 48 * 1024;

enum class Kind { kFlat, kIvf, kBinaryFlat };

constexpr const char* kOnlySearchAndAdd = "the GPU copy answers searches and adds only";

std::vector<int64_t> Iota(int64_t n, int64_t first) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

// Why FAISS's GPU IVF-PQ cannot take `pq` (checked up front: FAISS would throw with messages
// that read like device failures), or "". Sets *fp16 when the lookup tables must be float16
// to fit in shared memory.
std::string IvfPqUnsupported(const faiss::IndexIVFPQ& pq, bool* fp16) {
  static const std::set<int> kCodeBytes = {1,  2,  3,  4,  8,  12, 16, 20,
                                           24, 28, 32, 40, 48, 56, 64, 96};
  const int m = static_cast<int>(pq.pq.M);
  if (pq.pq.nbits != 8) return "FAISS's GPU IVF-PQ takes 8-bit codes only";
  if (!pq.by_residual) return "FAISS's GPU IVF-PQ encodes residuals only";
  if (pq.polysemous_ht != 0) return "FAISS's GPU IVF-PQ has no polysemous codes";
  if (!kCodeBytes.count(m))
    return "FAISS's GPU IVF-PQ does not take " + std::to_string(m) + " sub-quantizers";
  if (pq.d % m != 0) return "the sub-quantizers do not divide the dimension";
  *fp16 = int64_t{m} * 256 * 4 > kSharedMemPerBlock;
  if (int64_t{m} * 256 * 2 > kSharedMemPerBlock) return "PQ lookup tables too large";
  return "";
}

// FAISS 1.7.3's GPU flat storage grows by exactly what each add brings (FlatIndex::add and
// BinaryFlatIndex::add append with reserveExact), reallocating and copying all of it every
// time; GpuIndexFlat::add's own reserve asks for only the vectors being added. The copy
// reserves ahead instead (GpuReplica::ReserveCapacity). A GpuIndexFlat's storage is public
// (getGpuData); a GpuIndexBinaryFlat's is protected, hence this subclass.
class BinaryFlatStorage final : public faiss::gpu::GpuIndexBinaryFlat {
 public:
  using GpuIndexBinaryFlat::GpuIndexBinaryFlat;

  // Room for n vectors. REQUIRES: the device lock, and an add to this index right after, in
  // the same hold: BinaryFlatIndex::reserve moves the storage without updating the tensor
  // searches read, which only its next add does.
  void ReserveThenAdd(size_t n) {
    faiss::gpu::DeviceScope scope(getDevice());
    // BinaryFlatIndex::reserve counts 4 bytes (sizeof(unsigned int)) per byte of a code.
    data_->reserve((n + 3) / 4, resources_->getDefaultStream(getDevice()));
  }
};

// The device copy. See BuildGpuReplica.
class GpuReplica final : public Backend {
 public:
  GpuReplica(const Backend& host, Kind kind, std::vector<std::shared_ptr<GpuDevice>> devices)
      : spec_(host.spec()),
        kind_(kind),
        devices_(std::move(devices)),
        labels_shift_(host.labels_shift_on_remove()),
        next_label_(host.next_label()) {
    for (const auto& d : devices_) lock_order_.push_back(d.get());
    std::sort(lock_order_.begin(), lock_order_.end(),
              [](GpuDevice* a, GpuDevice* b) { return a->id() < b->id(); });
    device_ = "gpu:";
    for (size_t i = 0; i < devices_.size(); ++i) {
      if (i > 0) device_ += ',';
      device_ += std::to_string(devices_[i]->id());
    }
  }

  ~GpuReplica() override {
    DeviceLocks lock(lock_order_);  // freeing device memory uses the devices' resources
    float_.reset();
    binary_.reset();
  }

  // Copies `cpu` (read from the host's serialization) to the devices.
  Status BuildFloat(faiss::Index* cpu);
  Status BuildBinary(faiss::IndexBinary* cpu);

  const IndexSpec& spec() const override { return spec_; }
  BackendInfo Info() const override {
    BackendInfo info;
    info.ntotal = ntotal();
    info.is_trained = true;
    info.device = device_;
    info.replica = "current";
    info.memory_bytes = DeviceManager::GpuBytes(spec_, std::max(info.ntotal, capacity_));
    info.gpu_memory_bytes = info.memory_bytes;
    info.nprobe = nprobe_;
    return info;
  }
  int64_t ntotal() const override { return binary_ ? binary_->ntotal : float_->ntotal; }
  bool is_trained() const override { return true; }
  int64_t next_label() const override { return kind_ == Kind::kIvf ? next_label_ : ntotal(); }
  bool labels_shift_on_remove() const override { return labels_shift_; }
  bool can_remove() const override { return false; }

  Status Train(int64_t, const float*) override { return Unimplemented(kOnlySearchAndAdd); }
  Status Add(int64_t n, const float* x) override {
    const std::vector<int64_t> labels = Iota(n, next_label());
    return AddLabeled(n, x, labels.data(), next_label() + n);
  }
  Status AddLabeled(int64_t n, const float* x, const int64_t* labels, int64_t next_label) override;
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t>) override {
    return Unimplemented(kOnlySearchAndAdd);
  }
  Status Reset() override { return Unimplemented(kOnlySearchAndAdd); }
  Status ReserveCapacity(int64_t n) override;

  Status Search(int64_t n, const float* x, int k, const SearchParams& params, float* distances,
                int64_t* labels) const override;
  StatusOr<RangeResult> RangeSearch(int64_t, const float*, float,
                                    const SearchParams&) const override {
    return Unimplemented(kOnlySearchAndAdd);
  }
  Status Reconstruct(int64_t, float*) const override { return Unimplemented(kOnlySearchAndAdd); }
  Status ReconstructN(int64_t, int64_t, float*) const override {
    return Unimplemented(kOnlySearchAndAdd);
  }
  std::vector<TransformStep> Transforms() const override { return {}; }
  StatusOr<FloatMatrix> ApplyTransform(int64_t, const float*) const override {
    return Unimplemented(kOnlySearchAndAdd);
  }
  Status SetParameter(std::string_view, double) override {
    return Unimplemented(kOnlySearchAndAdd);
  }
  StatusOr<double> GetParameter(std::string_view) const override {
    return Unimplemented(kOnlySearchAndAdd);
  }
  StatusOr<std::vector<uint8_t>> Serialize() const override {
    return Unimplemented(kOnlySearchAndAdd);
  }

 private:
  bool sharded() const { return devices_.size() > 1; }
  // Sharded flat kinds: how many of n added vectors each shard takes, so the shards stay
  // within one vector of each other (FAISS's IndexShards would give all of a single add to
  // the last shard, outgrowing its reserved share).
  std::vector<int64_t> ShardCounts(int64_t n) const;
  // Flat kinds: adds the n vectors x (size n * d; binary: packed codes) labelled `labels`.
  // REQUIRES: the device locks; inside CallGpu.
  void AddFlat(int64_t n, const float* x, const uint8_t* codes, const int64_t* labels);

  const IndexSpec spec_;
  const Kind kind_;
  const std::vector<std::shared_ptr<GpuDevice>> devices_;  // in placement order
  std::vector<GpuDevice*> lock_order_;                     // the same, by ascending id
  std::string device_;                                     // "gpu:0", "gpu:0,1"
  const bool labels_shift_;
  int64_t next_label_;  // IVF: past the largest label the host handed out

  // Float kinds: a GPU index; sharded: an IndexShards over one per device (flat kinds through
  // an IndexIDMap each, so labels stay the host's storage positions).
  std::unique_ptr<faiss::Index> float_;
  // Binary Flat: a GpuIndexBinaryFlat, or an IndexBinaryShards as above.
  std::unique_ptr<faiss::IndexBinary> binary_;
  // IVF kinds: the GPU IVF index of each device, to set nprobe on (under the device locks).
  std::vector<faiss::gpu::GpuIndexIVF*> ivfs_;
  // Flat kinds: the GPU index of each device (owned by float_ / binary_), and when sharded
  // the IndexIDMap over each (in the same order), which adds go through.
  std::vector<faiss::gpu::GpuIndexFlat*> flats_;
  std::vector<BinaryFlatStorage*> binary_flats_;
  std::vector<faiss::IndexIDMap*> flat_maps_;
  std::vector<faiss::IndexBinaryIDMap*> binary_maps_;
  int64_t capacity_ = 0;        // vectors reserved for (ReserveCapacity)
  int64_t binary_reserve_ = 0;  // binary: each shard's room, reserved at the next add
  int nlist_ = 0;
  int nprobe_ = 0;  // the host's, at build time
};

Status GpuReplica::BuildFloat(faiss::Index* cpu) {
  auto* flat = dynamic_cast<faiss::IndexFlat*>(cpu);
  auto* ivf = dynamic_cast<faiss::IndexIVF*>(cpu);
  bool fp16_tables = false;
  if (kind_ == Kind::kFlat && !flat) return Internal("expected a flat index");
  if (kind_ == Kind::kIvf) {
    if (!ivf) return Internal("expected an IVF index");
    if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(ivf)) {
      if (std::string why = IvfPqUnsupported(*pq, &fp16_tables); !why.empty()) {
        return Unimplemented(why);
      }
    }
    if (ivf->nlist > static_cast<size_t>(std::numeric_limits<int>::max())) {
      return Unimplemented("FAISS's GPU IVF takes at most 2^31 - 1 lists");
    }
    nlist_ = static_cast<int>(ivf->nlist);
    // FAISS's GPU copy refuses an nprobe it cannot select; each search sets its own anyway.
    ivf->nprobe = std::clamp<size_t>(ivf->nprobe, 1, std::min<size_t>(ivf->nlist, kMaxGpuSelect));
    nprobe_ = static_cast<int>(ivf->nprobe);
  }
  if (cpu->ntotal > std::numeric_limits<int>::max()) {
    return Unimplemented("FAISS's GPU indexes hold at most 2^31 - 1 vectors");
  }
  DeviceLocks lock(lock_order_);
  return CallGpu("build", [&] {
    if (kind_ == Kind::kFlat && !sharded()) {
      faiss::gpu::GpuIndexFlatConfig config;
      config.device = devices_[0]->id();
      auto gpu = std::make_unique<faiss::gpu::GpuIndexFlat>(devices_[0]->resources(), flat, config);
      flats_.push_back(gpu.get());
      float_ = std::move(gpu);
    } else if (kind_ == Kind::kFlat) {
      // One GPU flat index per device behind an IndexIDMap: each holds an even share of the
      // storage positions, and adds spread over the devices while the labels stay positions.
      auto shards = std::make_unique<faiss::IndexShards>(cpu->d, /*threaded=*/true,
                                                         /*successive_ids=*/false);
      shards->own_fields = true;
      for (const auto& dev : devices_) {
        faiss::gpu::GpuIndexFlatConfig config;
        config.device = dev->id();
        auto part = std::make_unique<faiss::gpu::GpuIndexFlat>(dev->resources(), cpu->d,
                                                               cpu->metric_type, config);
        auto mapped = std::make_unique<faiss::IndexIDMap>(part.get());
        flats_.push_back(part.release());
        mapped->own_fields = true;
        shards->add_shard(mapped.get());
        flat_maps_.push_back(mapped.release());
      }
      if (flat->ntotal > 0) {
        const std::vector<int64_t> ids = Iota(flat->ntotal, 0);
        shards->add_with_ids(flat->ntotal, flat->get_xb(), ids.data());
      }
      float_ = std::move(shards);
    } else {
      faiss::gpu::GpuMultipleClonerOptions options;
      options.indicesOptions = faiss::gpu::INDICES_64_BIT;  // the host's labels, as stored
      options.useFloat16 = fp16_tables;                     // IVF-PQ lookup tables only
      options.shard = true;
      if (!sharded()) {
        float_.reset(faiss::gpu::index_cpu_to_gpu(devices_[0]->resources(), devices_[0]->id(), cpu,
                                                  &options));
      } else {
        std::vector<faiss::gpu::GpuResourcesProvider*> res;
        std::vector<int> ids;
        for (const auto& dev : devices_) {
          res.push_back(dev->resources());
          ids.push_back(dev->id());
        }
        float_.reset(faiss::gpu::index_cpu_to_gpu_multiple(res, ids, cpu, &options));
      }
      if (auto* one = dynamic_cast<faiss::gpu::GpuIndexIVF*>(float_.get())) {
        ivfs_.push_back(one);
      } else if (auto* shards = dynamic_cast<faiss::IndexShards*>(float_.get())) {
        for (int i = 0; i < shards->count(); ++i) {
          if (auto* part = dynamic_cast<faiss::gpu::GpuIndexIVF*>(shards->at(i))) {
            ivfs_.push_back(part);
          }
        }
      }
      if (ivfs_.size() != devices_.size()) {
        throw std::runtime_error("FAISS made no GPU IVF index of this index (not supported)");
      }
    }
  });
}

Status GpuReplica::BuildBinary(faiss::IndexBinary* cpu) {
  auto* flat = dynamic_cast<faiss::IndexBinaryFlat*>(cpu);
  if (!flat) return Unimplemented("FAISS has no GPU index for binary " + spec_.kind());
  if (cpu->d % 8 != 0) return Unimplemented("FAISS's GPU binary index takes a multiple of 8 bits");
  if (cpu->ntotal > std::numeric_limits<int>::max()) {
    return Unimplemented("FAISS's GPU indexes hold at most 2^31 - 1 vectors");
  }
  DeviceLocks lock(lock_order_);
  return CallGpu("build", [&] {
    if (!sharded()) {
      faiss::gpu::GpuIndexBinaryFlatConfig config;
      config.device = devices_[0]->id();
      auto gpu = std::make_unique<BinaryFlatStorage>(devices_[0]->resources(), flat, config);
      binary_flats_.push_back(gpu.get());
      binary_ = std::move(gpu);
      return;
    }
    auto shards = std::make_unique<faiss::IndexBinaryShards>(cpu->d, /*threaded=*/true,
                                                             /*successive_ids=*/false);
    shards->own_fields = true;
    for (const auto& dev : devices_) {
      faiss::gpu::GpuIndexBinaryFlatConfig config;
      config.device = dev->id();
      auto part = std::make_unique<BinaryFlatStorage>(dev->resources(), cpu->d, config);
      auto mapped = std::make_unique<faiss::IndexBinaryIDMap>(part.get());
      binary_flats_.push_back(part.release());
      mapped->own_fields = true;
      shards->add_shard(mapped.get());
      binary_maps_.push_back(mapped.release());
    }
    if (flat->ntotal > 0) {
      const std::vector<int64_t> ids = Iota(flat->ntotal, 0);
      shards->add_with_ids(flat->ntotal, flat->xb.data(), ids.data());
    }
    binary_ = std::move(shards);
  });
}

Status GpuReplica::AddLabeled(int64_t n, const float* x, const int64_t* labels,
                              int64_t next_label) {
  if (n <= 0) return Status::Ok();
  if (ntotal() + n > std::numeric_limits<int>::max()) {
    return Unimplemented("FAISS's GPU indexes hold at most 2^31 - 1 vectors");
  }
  if (kind_ != Kind::kIvf) {
    // Flat kinds: labels are storage positions, so an add must append.
    const int64_t first = ntotal();
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] != first + i) {
        return FailedPrecondition("the GPU copy of a flat index appends at position " +
                                  std::to_string(first + i) + ", not " + std::to_string(labels[i]));
      }
    }
  }
  std::vector<uint8_t> codes;
  if (kind_ == Kind::kBinaryFlat) {
    ASSIGN_OR_RETURN(codes, PackBits(n, spec_.dim, x));
  }
  DeviceLocks lock(lock_order_);
  RETURN_IF_ERROR(CallGpu("add_vectors", [&] {
    if (kind_ == Kind::kIvf) {
      float_->add_with_ids(n, x, labels);  // IVF lists grow by powers of two on their own
    } else {
      AddFlat(n, x, codes.data(), labels);
    }
  }));
  next_label_ = std::max(next_label_, next_label);
  for (int64_t i = 0; i < n; ++i) next_label_ = std::max(next_label_, labels[i] + 1);
  return Status::Ok();
}

std::vector<int64_t> GpuReplica::ShardCounts(int64_t n) const {
  const size_t k = devices_.size();
  std::vector<int64_t> have(k), counts(k, 0);
  for (size_t i = 0; i < k; ++i) {
    have[i] = binary_ ? binary_flats_[i]->ntotal : flats_[i]->ntotal;
  }
  // As if each vector went to the emptiest shard, in bulk: raise the lowest shards to the
  // next height, until the add is spread.
  for (int64_t left = n; left > 0;) {
    const size_t low = std::min_element(have.begin(), have.end()) - have.begin();
    int64_t next = std::numeric_limits<int64_t>::max();  // the next height above the lowest
    size_t at_low = 0;
    for (size_t i = 0; i < k; ++i) {
      if (have[i] == have[low]) {
        at_low++;
      } else {
        next = std::min(next, have[i]);
      }
    }
    const int64_t step =
        next == std::numeric_limits<int64_t>::max()
            ? (left + static_cast<int64_t>(at_low) - 1) / static_cast<int64_t>(at_low)
            : next - have[low];
    const int64_t level = have[low];
    for (size_t i = 0; i < k && left > 0; ++i) {
      if (have[i] != level) continue;
      const int64_t take = std::min(step, left);
      have[i] += take;
      counts[i] += take;
      left -= take;
    }
  }
  return counts;
}

void GpuReplica::AddFlat(int64_t n, const float* x, const uint8_t* codes, const int64_t* labels) {
  if (!sharded()) {
    if (binary_) {
      if (binary_reserve_ >= binary_->ntotal + n) binary_flats_[0]->ReserveThenAdd(binary_reserve_);
      binary_->add(n, codes);
    } else {
      float_->add(n, x);
    }
    return;
  }
  const std::vector<int64_t> counts = ShardCounts(n);
  const size_t row = binary_ ? static_cast<size_t>(spec_.dim / 8) : static_cast<size_t>(spec_.dim);
  int64_t at = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] == 0) continue;
    if (binary_) {
      if (binary_reserve_ >= binary_flats_[i]->ntotal + counts[i]) {
        binary_flats_[i]->ReserveThenAdd(binary_reserve_);
      }
      binary_maps_[i]->add_with_ids(counts[i], codes + at * row, labels + at);
    } else {
      flat_maps_[i]->add_with_ids(counts[i], x + at * row, labels + at);
    }
    at += counts[i];
  }
  // The shards' own counts changed under IndexShards: it keeps the total.
  if (binary_) {
    binary_->ntotal += n;
  } else {
    float_->ntotal += n;
  }
}

Status GpuReplica::ReserveCapacity(int64_t n) {
  if (n <= capacity_) return Status::Ok();
  if (n > std::numeric_limits<int>::max()) {
    return Unimplemented("FAISS's GPU indexes hold at most 2^31 - 1 vectors");
  }
  // Flat kinds hold an even share per shard (ShardCounts keeps them even).
  const int64_t k = static_cast<int64_t>(devices_.size());
  const int64_t share = (n + k - 1) / k;
  if (kind_ == Kind::kIvf) {
    // FAISS 1.7.3's IVF lists grow by powers of two on every add (DeviceVector::resize); its
    // reserveMemory would spread room evenly over lists that do not fill evenly.
  } else if (binary_) {
    binary_reserve_ = share;  // applied by the next add (BinaryFlatStorage::ReserveThenAdd)
  } else {
    DeviceLocks lock(lock_order_);
    RETURN_IF_ERROR(CallGpu("reserve", [&] {
      for (size_t i = 0; i < flats_.size(); ++i) {
        const int id = devices_[i]->id();
        faiss::gpu::DeviceScope scope(id);
        flats_[i]->getGpuData()->reserve(static_cast<size_t>(share),
                                         devices_[i]->resources()->getDefaultStream(id));
      }
    }));
  }
  capacity_ = n;
  return Status::Ok();
}

Status GpuReplica::Search(int64_t n, const float* x, int k, const SearchParams& params,
                          float* distances, int64_t* labels) const {
  if (n <= 0) return Status::Ok();
  if (k <= 0 || k > kMaxGpuSelect) {
    return InvalidArgument("k: the GPU copy returns 1.." + std::to_string(kMaxGpuSelect) +
                           " results a query, not " + std::to_string(k));
  }
  const size_t out = static_cast<size_t>(n) * k;
  if (ntotal() == 0) {  // as the host answers an empty index
    std::fill(labels, labels + out, int64_t{-1});
    std::fill(distances, distances + out, std::numeric_limits<float>::max());
    return Status::Ok();
  }
  std::vector<uint8_t> codes;
  std::vector<int32_t> hamming;
  if (binary_) {
    ASSIGN_OR_RETURN(codes, PackBits(n, spec_.dim, x));
    hamming.resize(out);
  }
  {
    DeviceLocks lock(lock_order_);
    RETURN_IF_ERROR(CallGpu("search", [&] {
      if (!ivfs_.empty()) {
        const int nprobe =
            std::clamp(params.nprobe.value_or(nprobe_), 1, std::min(nlist_, kMaxGpuSelect));
        for (faiss::gpu::GpuIndexIVF* ivf : ivfs_) ivf->setNumProbes(nprobe);
      }
      if (binary_) {
        binary_->search(n, codes.data(), k, hamming.data(), labels);
      } else {
        float_->search(n, x, k, distances, labels);
      }
    }));
  }
  // Missing results as FAISS's CPU indexes report them (the GPU's k-selection and the shard
  // merge leave other sentinels).
  const bool ip = !binary_ && spec_.metric == Metric::kInnerProduct;
  const float missing = ip ? -std::numeric_limits<float>::max() : std::numeric_limits<float>::max();
  for (size_t i = 0; i < out; ++i) {
    if (labels[i] < 0) {
      labels[i] = -1;
      distances[i] = missing;
    } else if (binary_) {
      distances[i] = static_cast<float>(hamming[i]);
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<Backend>> BuildGpuReplica(
    const Backend& host, const std::vector<std::shared_ptr<GpuDevice>>& devices) {
  const IndexSpec& spec = host.spec();
  if (devices.empty()) return InvalidArgument("no device to build the GPU copy on");
  if (!host.is_trained()) return FailedPrecondition("the index is not trained");
  if (std::string why = DeviceManager::GpuUnsupported(spec); !why.empty()) {
    return Unimplemented(why);
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, host.Serialize());
  faiss::VectorIOReader reader;
  reader.data = std::move(bytes);
  std::unique_ptr<faiss::Index> cpu;
  std::unique_ptr<faiss::IndexBinary> cpu_binary;
  try {
    if (spec.binary) {
      cpu_binary.reset(faiss::read_index_binary(&reader));
    } else {
      cpu.reset(faiss::read_index(&reader));
    }
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("GPU copy: out of host memory reading the index");
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("GPU copy: cannot read the host index: ") + e.what());
  }
  reader.data = {};
  const Kind kind = spec.binary                                       ? Kind::kBinaryFlat
                    : dynamic_cast<const faiss::IndexIVF*>(cpu.get()) ? Kind::kIvf
                                                                      : Kind::kFlat;
  auto replica = std::make_unique<GpuReplica>(host, kind, devices);
  RETURN_IF_ERROR(spec.binary ? replica->BuildBinary(cpu_binary.get())
                              : replica->BuildFloat(cpu.get()));
  return std::unique_ptr<Backend>(std::move(replica));
}

}  // namespace vecgpu::gpu
