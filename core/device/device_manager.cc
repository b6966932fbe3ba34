#include "core/device/device_manager.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <set>
#include <sstream>

namespace vecgpu {
namespace {

constexpr int64_t kMiB = 1 << 20;

std::string MiB(int64_t bytes) { return std::to_string((bytes + kMiB - 1) / kMiB) + " MiB"; }

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);) out.push_back(part);
  return out;
}

bool ParseInt(const std::string& s, int* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

// "IVF{n}" → true.
bool IsIvf(const std::string& part) {
  int n = 0;
  return part.rfind("IVF", 0) == 0 && ParseInt(part.substr(3), &n) && n > 0;
}

}  // namespace

Status DeviceOptions::Validate() const {
  if (reserve_bytes < 0) return InvalidArgument("gpu_reserve_mb: must be >= 0");
  if (max_faults < 1) return InvalidArgument("gpu_max_faults: must be >= 1");
  if (!(fault_window_s > 0)) return InvalidArgument("gpu_fault_window_s: must be > 0");
  if (!(quarantine_s >= 0)) return InvalidArgument("gpu_quarantine_s: must be >= 0");
  if (!(restart_backoff_s >= 0)) return InvalidArgument("gpu restart backoff: must be >= 0");
  if (temp_memory_bytes < 0 || temp_memory_bytes > (int64_t{1536} << 20)) {
    return InvalidArgument(
        "gpu_temp_memory_mb: must be within 0..1536 (FAISS 1.7.3 takes at most 1.5 GiB)");
  }
  if (!(memory_fraction > 0 && memory_fraction <= 1)) {
    return InvalidArgument("gpu_memory_fraction: must be within (0, 1], got " +
                           std::to_string(memory_fraction));
  }
  if (copies.max_copies < 0) return InvalidArgument("gpu_max_copies: must be >= 0");
  if (copies.add_depth < 1 || !(copies.drop_busy > 0 && copies.drop_busy < 1) ||
      copies.add_after.count() < 0 || copies.drop_after.count() <= 0) {
    return InvalidArgument(
        "gpu copies: add_depth >= 1, 0 < drop_busy < 1, add_after >= 0 and "
        "drop_after > 0");
  }
  std::vector<int> missing;
  return DeviceManager::ParseGpus(gpus, 1 << 20, &missing).status();
}

std::string Placement::device() const {
  if (gpus.empty()) return "cpu";
  std::string out = "gpu:";
  for (size_t i = 0; i < gpus.size(); ++i) out += (i ? "," : "") + std::to_string(gpus[i]);
  return out;
}

StatusOr<std::vector<int>> DeviceManager::ParseGpus(const std::string& spec, int visible,
                                                    std::vector<int>* missing) {
  std::vector<int> out;
  if (spec == "none" || spec.empty()) return out;
  if (spec == "all") {
    for (int i = 0; i < visible; ++i) out.push_back(i);
    return out;
  }
  std::set<int> seen;
  std::vector<std::string> parts = Split(spec, ',');
  if (spec.back() == ',') parts.emplace_back();  // getline drops a trailing empty part
  for (const std::string& part : parts) {
    int id = -1;
    if (!ParseInt(part, &id) || id < 0 || id > 1023) {
      return InvalidArgument("gpus: '" + spec +
                             "' is not \"none\", \"all\" or a list of device numbers such as "
                             "\"0,1\"");
    }
    if (!seen.insert(id).second) {
      return InvalidArgument("gpus: device " + std::to_string(id) + " is named twice");
    }
    if (id < visible) {
      out.push_back(id);
    } else {
      missing->push_back(id);
    }
  }
  return out;
}

DeviceManager::DeviceManager(DeviceProvider* provider, const DeviceOptions& options,
                             std::function<void(const std::string&)> log, ServerMetrics* metrics)
    : provider_(provider), options_(options), log_(std::move(log)), metrics_(metrics) {
  if (options_.gpus == "none") {
    Log("gpus: none requested; every collection is served from the CPU");
    return;
  }
  if (!provider_) {
    Log("gpus: this build has no GPU support (built without CUDA); serving from the CPU");
    return;
  }
  StatusOr<int> count = provider_->Count();
  if (!count.ok()) {
    Log("gpus: no usable GPU (" + count.status().message() + "); serving from the CPU");
    return;
  }
  provider_->SetTempMemory(options_.temp_memory_bytes);
  std::vector<int> missing;
  StatusOr<std::vector<int>> ids = ParseGpus(options_.gpus, *count, &missing);
  if (!ids.ok()) {  // validated at start-up; kept for callers that did not
    Log(ids.status().message() + "; serving from the CPU");
    return;
  }
  for (int id : missing) {
    Log("gpus: GPU " + std::to_string(id) + " does not exist (" + std::to_string(*count) +
        " visible); left out");
  }
  for (int id : *ids) {
    StatusOr<GpuProperties> props = provider_->Properties(id);
    if (!props.ok()) {
      Log("gpus: GPU " + std::to_string(id) + " is not usable (" + props.status().message() +
          "); left out");
      continue;
    }
    auto d = std::make_unique<Device>();
    d->props = *props;
    d->budget =
        static_cast<int64_t>(static_cast<double>(props->total_bytes) * options_.memory_fraction);
    Log("gpus: GPU " + std::to_string(id) + " " + props->name + " (compute " +
        std::to_string(props->compute_major) + "." + std::to_string(props->compute_minor) + ", " +
        MiB(props->total_bytes) + "), budget " + MiB(d->budget) + ", FAISS temporary memory " +
        MiB(options_.temp_memory_bytes));
    gpus_.push_back(id);
    devices_.push_back(std::move(d));
  }
  if (gpus_.empty()) {
    Log("gpus: none of the GPUs named is usable; serving from the CPU");
    return;
  }
  provider_->Watch(this);
  supervisor_ = std::thread([this] { Supervise(); });
}

DeviceManager::~DeviceManager() {
  if (!supervisor_.joinable()) return;
  provider_->Watch(nullptr);
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  supervisor_.join();
}


DeviceManager::Device* DeviceManager::Find(int id) const {
  for (const auto& d : devices_) {
    if (d->props.id == id) return d.get();
  }
  return nullptr;
}

bool DeviceManager::healthy(int device) const {
  Device* d = Find(device);
  return d && d->healthy.load(std::memory_order_acquire);
}

bool DeviceManager::all_healthy(const std::vector<int>& devices) const {
  return std::all_of(devices.begin(), devices.end(), [this](int d) { return healthy(d); });
}

void DeviceManager::Log(const std::string& line) const {
  if (log_) log_(line);
}

void DeviceManager::CountFallback(const std::string& reason) const {
  if (metrics_) metrics_->gpu_fallbacks.With({reason}).Inc();
}

std::string DeviceManager::GpuUnsupported(const IndexSpec& spec) {
  if (spec.binary) {
    return spec.factory == "BFlat" ? ""
                                   : "FAISS has no GPU index for " + spec.kind() +
                                         " (binary indexes run on a GPU only as BINARY_FLAT)";
  }
  const std::vector<std::string> parts = Split(spec.factory, ',');
  const std::string why =
      "FAISS runs only Flat, IVF-Flat, IVF-PQ and IVF-SQ indexes on a GPU, not '" + spec.factory +
      "'";
  if (parts.size() == 1) return parts[0] == "Flat" ? "" : why;
  if (parts.size() != 2 || !IsIvf(parts[0])) return why;
  const std::string& codec = parts[1];
  if (codec == "Flat") return "";
  if (codec == "SQ4" || codec == "SQ6" || codec == "SQ8" || codec == "SQfp16") return "";
  if (spec.pq_m > 0) {
    // FAISS 1.7.3's GpuIndexIVFPQ: 8-bit codes of these sizes (bytes per vector). Any number
    // of dimensions per sub-quantizer runs: those without a specialised kernel (48 for
    // d = 768 with PQ16, say) take the GEMM code-distance path on their own; and PQ96's
    // lookup tables, too large for shared memory as float32, are made float16
    // (gpu/gpu_replica.cc IvfPqUnsupported).
    static const std::set<int> kCodes = {1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96};
    if (spec.pq_nbits != 8)
      return "FAISS's GPU IVF-PQ takes 8-bit codes only, not PQ" + std::to_string(spec.pq_m) + "x" +
             std::to_string(spec.pq_nbits);
    if (!kCodes.count(spec.pq_m)) {
      return "FAISS's GPU IVF-PQ takes 1-4, 8, 12, ..., 64 or 96 sub-quantizers, not " +
             std::to_string(spec.pq_m);
    }
    if (spec.dim % spec.pq_m != 0) {
      return "the " + std::to_string(spec.pq_m) + " sub-quantizers do not divide the " +
             std::to_string(spec.dim) + " dimensions";
    }
    return "";
  }
  return why;
}

int64_t DeviceManager::GpuBytes(const IndexSpec& spec, int64_t n) {
  const int64_t d = spec.dim;
  constexpr int64_t kBase = 1 * kMiB;  // the index object, its streams' small buffers
  if (spec.binary) return kBase + n * ((d + 7) / 8);
  const int64_t centroids = int64_t{spec.nlist} * d * 4;
  constexpr int64_t kId = 8;                            // IVF kinds keep a 64-bit id per vector
  if (spec.nlist == 0) return kBase + n * (d * 4 + 4);  // flat: vectors and their norms
  if (spec.pq_m > 0) {
    return kBase + centroids + int64_t{spec.pq_m} * 256 * (d / spec.pq_m) * 4 +
           n * (spec.pq_m * spec.pq_nbits / 8 + kId);
  }
  if (spec.sq_bits > 0) {
    const int64_t code = spec.sq_bits == 16 ? d * 2 : (d * spec.sq_bits + 7) / 8;
    return kBase + centroids + n * (code + kId);
  }
  return kBase + centroids + n * (d * 4 + kId);
}

int64_t DeviceManager::GpuCapacity(const IndexSpec& spec, int64_t bytes) {
  const int64_t fixed = GpuBytes(spec, 0);
  const int64_t per_vector = GpuBytes(spec, 1) - fixed;
  return bytes <= fixed || per_vector <= 0 ? 0 : (bytes - fixed) / per_vector;
}

std::map<int, int64_t> DeviceManager::Measured(const std::vector<int>& ids) const {
  std::map<int, int64_t> out;
  for (int id : ids) {
    if (auto free = provider_->FreeBytes(id); free.ok()) {
      out[id] = std::max<int64_t>(0, *free - options_.reserve_bytes);
    }
  }
  return out;
}

Placement DeviceManager::Choose(const std::vector<Device*>& candidates, int64_t bytes,
                                bool shardable, const std::map<int, int64_t>& measured) {
  Placement p;
  const int64_t want = bytes + bytes / 4;  // headroom for growth
  // Room: what the budget leaves, and no more than the device says is free beyond the
  // reserve (other processes, FAISS's temporary memory, copies estimated too low).
  auto free_of = [&](Device* d) {
    int64_t room = d->budget - d->reserved;
    if (auto m = measured.find(d->props.id); m != measured.end()) room = std::min(room, m->second);
    return room;
  };
  std::vector<Device*> by_free = candidates;
  // Most room first; among equals (a measure that caps them alike), the most budget left.
  std::stable_sort(by_free.begin(), by_free.end(), [&](Device* a, Device* b) {
    const int64_t fa = free_of(a), fb = free_of(b);
    if (fa != fb) return fa > fb;
    return a->budget - a->reserved > b->budget - b->reserved;
  });
  if (by_free.empty()) return p;
  if (free_of(by_free[0]) >= bytes) {
    Device* d = by_free[0];
    const int64_t take = std::min(want, free_of(d));
    d->reserved += take;
    d->collections++;
    p.gpus = {d->props.id};
    p.reserved = {take};
    p.reason = "on GPU " + std::to_string(d->props.id) + ", the one with the most free budget (" +
               MiB(free_of(d) + take) + " free, " + MiB(bytes) + " needed)";
    return p;
  }
  if (!shardable) return p;
  // The fewest GPUs, most free first, that each hold an even share.
  for (size_t k = 2; k <= by_free.size(); ++k) {
    const int64_t share = (bytes + static_cast<int64_t>(k) - 1) / static_cast<int64_t>(k);
    if (free_of(by_free[k - 1]) < share) continue;
    const int64_t share_want = (want + static_cast<int64_t>(k) - 1) / static_cast<int64_t>(k);
    for (size_t i = 0; i < k; ++i) {
      Device* d = by_free[i];
      const int64_t take = std::min(share_want, free_of(d));
      d->reserved += take;
      d->collections++;
      p.gpus.push_back(d->props.id);
      p.reserved.push_back(take);
    }
    p.reason = "sharded over " + std::to_string(k) + " GPUs: " + MiB(bytes) +
               " needed, more than any one GPU's free budget";
    return p;
  }
  return p;
}

StatusOr<Placement> DeviceManager::Place(const IndexSpec& spec, int64_t bytes,
                                         const std::string& hint, const std::string& who) {
  int only = -1;
  if (!hint.empty() && hint != "cpu" && hint != "gpu") {
    if (hint.rfind("gpu:", 0) != 0 || !ParseInt(hint.substr(4), &only) || only < 0) {
      return InvalidArgument("device: '" + hint + "' is not \"cpu\", \"gpu\" or \"gpu:N\"");
    }
  }
  Placement p;
  Reclaims reclaims;
  if (hint == "cpu") {
    p.reason = "on the CPU, as its device hint asks";
    p.fallback = gpus_.empty() ? "" : kFallbackHint;
  } else if (gpus_.empty()) {
    p.reason = "on the CPU: no GPU in use";
  } else if (std::string why = GpuUnsupported(spec); !why.empty()) {
    p.reason = "on the CPU: " + why;
    p.fallback = kFallbackUnsupported;
  } else {
    std::vector<Device*> candidates;
    std::vector<int> ids;
    for (const auto& d : devices_) {
      if ((only < 0 || d->props.id == only) && d->healthy.load()) {
        candidates.push_back(d.get());
        ids.push_back(d->props.id);
      }
    }
    std::map<int, int64_t> measured = Measured(ids);
    MutexLock lock(mu_);
    if (candidates.empty()) {
      p.reason = "on the CPU: " + (only >= 0 ? "GPU " + std::to_string(only) + " is not in use"
                                             : std::string("every GPU in use has failed"));
      p.fallback = only >= 0 ? kFallbackHint : kFallbackDeviceFailed;
    } else {
      // One GPU; else one GPU once extra copies of hot indexes give their room back; else
      // sharded.
      p = Choose(candidates, bytes, /*shardable=*/false, measured);
      if (!p.on_gpu()) {
        ReclaimForPlace(candidates, bytes, who, &measured, &reclaims);
        if (!reclaims.empty()) p = Choose(candidates, bytes, /*shardable=*/false, measured);
      }
      if (!p.on_gpu() && only < 0) p = Choose(candidates, bytes, /*shardable=*/true, measured);
      if (!p.on_gpu()) {
        // The roomiest GPU, and whether its measured memory (not its budget) limits it.
        int64_t best = -1;
        bool by_measure = false;
        for (Device* d : candidates) {
          const int64_t budget = d->budget - d->reserved;
          auto m = measured.find(d->props.id);
          const int64_t room = m != measured.end() ? std::min(budget, m->second) : budget;
          if (room > best) {
            best = room;
            by_measure = m != measured.end() && m->second < budget;
          }
        }
        std::string what = "budget is ";
        if (by_measure) what = "as measured, less the " + MiB(options_.reserve_bytes) + " reserve, is ";
        p.reason = "on the CPU: needs " + MiB(bytes) + " of GPU memory, the most free ";
        p.reason += what;
        p.reason += MiB(std::max<int64_t>(best, 0));
        p.fallback = kFallbackNoBudget;
      }
    }
  }
  {
    MutexLock lock(mu_);
    if (!p.on_gpu()) cpu_collections_++;
  }
  RunReclaims(reclaims);
  if (!p.fallback.empty()) CountFallback(p.fallback);
  Log("placement: " + who + " " + p.reason);
  return p;
}

Placement DeviceManager::Resize(const Placement& p, const IndexSpec& spec, int64_t bytes,
                                const std::string& hint, const std::string& who) {
  if (!p.on_gpu()) return p;  // the CPU has no budget to track
  std::optional<Placement> grown;
  Reclaims reclaims;
  {
    int64_t have = 0;
    for (int64_t r : p.reserved) have += r;
    if (bytes <= have) return p;
    std::map<int, int64_t> measured = Measured(p.gpus);
    MutexLock lock(mu_);
    // Grow in place when every GPU of the placement has room for what its share adds: in its
    // budget, and measured free; room that extra copies of hot indexes hold is taken back
    // when that makes it fit. Geometrically when there is room for it (the copy's storage
    // follows), else by a quarter more than needed. A GPU that is down counts too: the
    // collection keeps its place there while it restarts (its memory cannot be measured).
    const int64_t k = static_cast<int64_t>(p.gpus.size());
    auto room = [&](size_t i) {
      Device* d = Find(p.gpus[i]);
      int64_t r = d->budget - d->reserved;
      if (auto m = measured.find(p.gpus[i]); m != measured.end()) r = std::min(r, m->second);
      return r;
    };
    const int64_t quarter = bytes + bytes / 4;
    const int64_t geometric = std::max(quarter, static_cast<int64_t>(have * kGrowth));
    for (int64_t total : {geometric, quarter}) {
      const int64_t share = (total + k - 1) / k;
      bool fits = true, fits_reclaiming = true;
      for (size_t i = 0; i < p.gpus.size(); ++i) {
        Device* d = Find(p.gpus[i]);
        if (!d) {
          fits = fits_reclaiming = false;
          break;
        }
        fits = fits && room(i) >= share - p.reserved[i];
        fits_reclaiming = fits_reclaiming && room(i) + d->reclaimable >= share - p.reserved[i];
      }
      // Copies are reclaimed for what is needed (a quarter more), never for geometric room.
      if (!fits && fits_reclaiming && total == quarter) {
        for (size_t i = 0; i < p.gpus.size(); ++i) {
          ReclaimLocked(Find(p.gpus[i]), room(i), share - p.reserved[i], who, &measured,
                        &reclaims);
        }
        fits = true;
      }
      if (!fits) continue;
      grown = p;
      for (size_t i = 0; i < p.gpus.size(); ++i) {
        Find(p.gpus[i])->reserved += share - p.reserved[i];
        grown->reserved[i] = share;
      }
      break;
    }
    if (!grown) ReleaseLocked(p);
  }
  RunReclaims(reclaims);  // the owners of reclaimed copies drop them (no lock held)
  if (grown) return *grown;
  StatusOr<Placement> moved = Place(spec, bytes, hint, who + " (grown to " + MiB(bytes) + ")");
  if (moved.ok()) return *moved;
  Placement cpu;  // the hint was accepted when the collection was made
  cpu.reason = "on the CPU: " + moved.status().message();
  MutexLock lock(mu_);
  cpu_collections_++;
  return cpu;
}

void DeviceManager::ReleaseLocked(const Placement& p) {
  if (!p.on_gpu()) {
    cpu_collections_--;
    return;
  }
  for (size_t i = 0; i < p.gpus.size(); ++i) {
    if (Device* d = Find(p.gpus[i])) {
      d->reserved -= p.reserved[i];
      d->collections--;
    }
  }
}

void DeviceManager::Release(const Placement& p) {
  MutexLock lock(mu_);
  ReleaseLocked(p);
}

Placement DeviceManager::Failed(const Placement& p, int device, const Status& error,
                                const std::string& who) {
  Placement cpu;
  if (error.code() == StatusCode::kResourceExhausted) {
    cpu.reason = "on the CPU: " + p.device() + " ran out of memory (" + error.message() + ")";
    cpu.fallback = kFallbackOutOfMemory;
  } else if (error.code() == StatusCode::kInvalidArgument ||
             error.code() == StatusCode::kFailedPrecondition ||
             error.code() == StatusCode::kUnimplemented) {
    cpu.reason = "on the CPU: " + p.device() + " cannot run it (" + error.message() + ")";
    cpu.fallback = kFallbackUnsupported;
  } else if (device < 0) {
    cpu.reason = "on the CPU: its copy on " + p.device() + " failed (" + error.message() + ")";
    cpu.fallback = kFallbackDeviceFailed;
  } else {
    // The GPU failed: it restarts (or is quarantined); the collection keeps its place there
    // and is served from the CPU until the GPU is back.
    DeviceLost(device, error.message());
    CountFallback(kFallbackDeviceFailed);
    Log("placement: " + who + " served from the CPU while GPU " + std::to_string(device) +
        " is down (" + error.message() + ")");
    return p;
  }
  {
    MutexLock lock(mu_);
    ReleaseLocked(p);
    cpu_collections_++;
  }
  CountFallback(cpu.fallback);
  Log("placement: " + who + " " + cpu.reason);
  return cpu;
}

std::vector<DeviceManager::DeviceState> DeviceManager::Devices() const {
  MutexLock lock(mu_);
  std::vector<DeviceState> out;
  for (const auto& d : devices_) {
    out.push_back({d->props.id, d->props.name, d->props.total_bytes, d->budget, d->reserved,
                   d->collections, d->extra_copies, d->healthy.load(), d->quarantined,
                   d->faults, d->restarts.load()});
  }
  return out;
}

int DeviceManager::cpu_collections() const {
  MutexLock lock(mu_);
  return cpu_collections_;
}

}  // namespace vecgpu
