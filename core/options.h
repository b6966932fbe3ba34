#pragma once

#include <cstddef>
#include <cstdint>

#include "core/util/status.h"

namespace vecgpu {

// Input limits, enforced before anything is allocated from a client-declared size.
// Defaults follow the FAISSx server where it has one.
struct Limits {
  // Largest accepted request, in bytes. Default: 100 MB (FAISSx).
  int64_t max_request_bytes = 100'000'000;
  // Hard cap at the socket: larger messages are dropped by ZeroMQ with the connection.
  // Default: 2 * max_request_bytes + 1 MiB (set by Validate when 0).
  int64_t max_message_bytes = 0;
  // Deepest msgpack nesting accepted (request map = 1, vectors = 2, rows = 3). Default: 8.
  int max_depth = 8;
  // Most elements in one msgpack array or map. Default: 16,000,000.
  int64_t max_container_elements = 16'000'000;
  // Vector dimension, 1..max_dimension. Default: 10,000 (FAISSx).
  int max_dimension = 10'000;
  // k for searches, 1..max_k. Default: 10,000 (FAISSx).
  int max_k = 10'000;
  // Vectors per add call. Default: 10,000 (FAISSx).
  int64_t max_add_vectors = 10'000;
  // Query vectors per search call. Default: 10,000.
  int64_t max_query_vectors = 10'000;
  // Results one search may return (queries x k; range search hits). Default: 10,000,000.
  int64_t max_search_results = 10'000'000;
  // Training vectors per train call. Default: 1,000,000.
  int64_t max_train_vectors = 1'000'000;
  // Vectors returned by one reconstruct_n / get_vectors call. Default: 100,000.
  int64_t max_fetch_vectors = 100'000;
  // Length of an index id. Default: 256.
  int max_index_id_length = 256;
  // Length of an object's string id (the Vald API). Default: 4096.
  int max_object_id_length = 4096;
  // Length of an API key. Default: 256 (FAISSx).
  int max_api_key_length = 256;
  // Length of a tenant id. Default: 128 (FAISSx).
  int max_tenant_id_length = 128;
  // Collections one tenant may own. Default: 10,000.
  int max_collections_per_tenant = 10'000;
  // Largest estimated cost of one clustering, training or recluster run: rows x clusters x
  // iterations x dimension (multiply-adds of k-means). About 1e9 a second per core here, so
  // the default, 1e12, is some minutes of the long workers. Larger requests are refused
  // before they start. Default: 1e12.
  double max_work_cost = 1e12;

  // Checks every field; fills derived defaults. Called once at start-up.
  Status Validate();
};

// Threads and queues of the request scheduler (core/scheduler/scheduler.h).
struct SchedulerOptions {
  // Workers for short work: searches (batched), reads, small writes, metadata.
  // Default: 0 = 2 * hardware threads, min 4.
  int query_threads = 0;
  // Workers for long work (training, large adds, merges, reclustering, clustering); they take
  // short work too when no long work waits. Default: 2.
  int write_threads = 2;
  // Threads that decode requests and encode replies. Default: 0 = hardware threads, min 2.
  int dispatch_threads = 0;
  // Requests queued, all tenants together, before clients get a "busy" error. Default: 4096.
  int max_queued = 4096;
  // Requests one tenant may have queued before its clients get "busy". Default: 1024.
  int max_queued_per_tenant = 1024;
  // Query rows one batched search may gather; 1 turns batching off. Default: 4096.
  int max_batch_rows = 4096;
  // Workers per GPU in use: each takes the short work (searches, adds) of the queues placed on
  // its GPU, so a request that waits (on its write's fsync, on the device) leaves the others
  // running; one tenant holds no more than an even share of a GPU's workers while another
  // tenant's work for that GPU waits. Default: 2.
  int gpu_workers = 2;
  // Long workers one tenant may hold while another tenant's long work waits; an idle server
  // lets one tenant use them all. 0: an even share (write_threads / tenants with long work,
  // at least 1). Default: 0.
  int long_workers_per_tenant = 0;
  // Nice value of the long workers' threads (Linux: per thread), so that training, clustering
  // and snapshots yield the cores to searches when both want them, and use them fully when
  // nothing else runs. 0: the process's. Default: 10.
  int long_worker_nice = 10;
  // Adds of at least this many vectors are long work. Default: 1000.
  int long_add_rows = 1000;
  // A request still queued after this long is answered TIMEOUT instead of run; requests may
  // set their own `timeout_ms`. 0: no deadline. Default: 60000.
  int request_timeout_ms = 60'000;

  Status Validate();
};

}  // namespace vecgpu
