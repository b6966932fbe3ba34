#pragma once

// Clang thread-safety annotations (checked by -Wthread-safety on clang builds); no-ops on
// other compilers. Only types annotated CAPABILITY can guard data: use vecgpu::Mutex and
// vecgpu::SharedMutex (core/util/mutex.h), not the std types directly.
#if defined(__clang__)
#define VECGPU_TSA(x) __attribute__((x))
#else
#define VECGPU_TSA(x)
#endif

#define CAPABILITY(x) VECGPU_TSA(capability(x))
#define SCOPED_CAPABILITY VECGPU_TSA(scoped_lockable)
#define GUARDED_BY(x) VECGPU_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) VECGPU_TSA(pt_guarded_by(x))
#define REQUIRES(...) VECGPU_TSA(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) VECGPU_TSA(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) VECGPU_TSA(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) VECGPU_TSA(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) VECGPU_TSA(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) VECGPU_TSA(release_shared_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) VECGPU_TSA(try_acquire_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) VECGPU_TSA(release_generic_capability(__VA_ARGS__))
#define EXCLUDES(...) VECGPU_TSA(locks_excluded(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS VECGPU_TSA(no_thread_safety_analysis)
