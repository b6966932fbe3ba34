#include "cpu_fallback/cpu_threads.h"

#include <dlfcn.h>
#include <omp.h>

#include <initializer_list>

namespace vecgpu::cpu {

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
}

void UseOneThreadHere() { omp_set_num_threads(1); }

}  // namespace vecgpu::cpu
