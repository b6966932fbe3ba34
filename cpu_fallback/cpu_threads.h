#pragma once

namespace vecgpu::cpu {

// Process-wide threading setup for FAISS on the CPU, called once at start-up: pins OpenBLAS to
// one thread (its own spinning thread pool fights OpenMP and the request workers for the cores,
// which made a small PQ training run take tens of seconds on two cores). Parallelism comes from
// the request workers and FAISS's OpenMP loops instead. Also lowers the query count at which
// FAISS's exact searches use BLAS, for batched searches split across the cores.
void ConfigureCpuThreads();

// Called on each request worker thread that serves many small concurrent calls: FAISS runs
// single-threaded there, so concurrent searches never oversubscribe the cores with OpenMP
// teams.
void UseOneThreadHere();

}  // namespace vecgpu::cpu
