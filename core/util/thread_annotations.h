#pragma once

// Clang thread-safety annotations; no-ops on other compilers.
#if defined(__clang__)
#define GUARDED_BY(x) __attribute__((guarded_by(x)))
#else
#define GUARDED_BY(x)
#endif
