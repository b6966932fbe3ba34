#include "cpu_fallback/cpu_threads.h"

#include <dlfcn.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/utils/distances.h>
#include <omp.h>

#include <initializer_list>
#include <memory>

#include "core/util/interrupt.h"

namespace vecgpu::cpu {
namespace {
// FAISS checks this between k-means iterations, in training and in IVF scans: the work on the
// asking thread stops once its deadline passed or the server is stopping (core/util/interrupt.h).
struct DeadlineInterrupt : faiss::InterruptCallback {
  bool want_interrupt() override { return Interrupted(); }
};
}  // namespace

void ConfigureCpuThreads() {
  // libblas.so.3 may be OpenBLAS (pthreads build), the reference BLAS or another; look the
  // setter up at run time so the binary links against any of them.
  using SetThreads = void (*)(int);
  for (const char* name : {"openblas_set_num_threads", "goto_set_num_threads"}) {
    if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, name))) {
      fn(1);
      break;
    }
  }
  // Exact searches of 4 queries or more go through BLAS (FAISS's default: 20). The scheduler
  // batches concurrent one-query searches and searches the batch in row chunks on every core;
  // a chunk of 16 queries scanned query by query took 6 times as long as through BLAS.
  faiss::distance_compute_blas_threshold = 4;
  faiss::InterruptCallback::instance = std::make_unique<DeadlineInterrupt>();
}

void UseOneThreadHere() { omp_set_num_threads(1); }

}  // namespace vecgpu::cpu
