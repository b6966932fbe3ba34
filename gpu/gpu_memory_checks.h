#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/device/device_provider.h"

namespace vecgpu::gpu {

// The memory checks of vecgpu-gpu-check (gpu/gpu_check.cc), run by scripts/gpu-check.sh on a
// GPU machine. Each returns its figures as JSON and appends what went wrong to `problems`
// (empty: passed). They use the device as they find it and free what they took.

// Single adds to a large flat GPU copy: how its storage grows. A flat index of n x d random
// vectors is placed on the device by a DeviceManager, as the server places a collection (its
// PlacedBackend reserves room ahead of adds); then `adds` vectors are added one call each, as
// an index fed one vector at a time is. Reports cudaMemGetInfo's free memory before the copy,
// with it and after the adds; the lowest free memory a sampling thread saw during the adds
// (a reallocation holds the old and the new storage at once); the add latencies; and the
// slow adds: over one device-to-device copy of the whole storage and over 4 times the
// typical add (each most likely reallocated and copied the storage).
// Problems: an add failing, the deadline passing first, the copy no longer current or not
// finding the last vector, a typical add as slow as half a copy of the storage (every add
// reallocates), or more than `max_slow_adds` slow adds.
struct SingleAddsOptions {
  int device = 0;
  int64_t n = 1'000'000;
  int dim = 128;
  int64_t adds = 10'000;
  double seconds = 40;  // for the adds
  int64_t max_slow_adds = 100;
};
nlohmann::json SingleAdds(DeviceProvider& provider, const SingleAddsOptions& o,
                          std::vector<std::string>* problems);

// Out of device memory, forced: another allocation (plain cudaMalloc) takes all but
// `free_mb` of the device's free memory, then
//  - building a GPU copy of a `copy_mb` index must fail with ResourceExhausted,
//  - adding `copy_mb` of vectors to an existing small copy must fail with ResourceExhausted,
//  - a collection placed by the DeviceManager on the device (copy current) takes an add of
//    `copy_mb`: the add succeeds, the collection is then served by its host copy, and its
//    searches equal an unplaced CPU index's;
// and the process is still there to say so. REQUIRES: copy_mb > free_mb.
struct OomOptions {
  int device = 0;
  int64_t copy_mb = 1024;
  int64_t free_mb = 256;
};
nlohmann::json ForcedOom(DeviceProvider& provider, const OomOptions& o,
                         std::vector<std::string>* problems);

}  // namespace vecgpu::gpu
