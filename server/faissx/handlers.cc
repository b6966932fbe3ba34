#include "server/faissx/handlers.h"

#include <cfloat>
#include <chrono>
#include <unordered_map>

namespace vecgpu::server {
namespace {

constexpr float kMissingDistance = FLT_MAX;  // 3.4028234663852886e38, as FAISSx reports it

StatusOr<std::string> IndexId(ActionContext& c, std::string_view key = "index_id") {
  return c.req.String(key, c.limits.max_index_id_length);
}

// Reads a vector field of the collection `name`. Nested lists carry their own shape (the
// Engine checks it against the index), so only a bin costs a look-up of the index's layout.
StatusOr<FloatMatrix> CollectionVectors(ActionContext& c, const std::string& name,
                                        std::string_view key, int64_t max_rows) {
  VectorShape shape;
  if (const msgpack::object* o = c.req.Find(key); o && o->type == msgpack::type::BIN) {
    ASSIGN_OR_RETURN(VectorLayout layout, c.engine.Layout(c.tenant, name));
    shape = VectorShape{layout.dim, layout.binary};
  }
  return c.req.Vectors(key, shape, max_rows);
}

void WriteTypeDetails(MapWriter& out, const IndexSpec& spec) {
  out.Str("metric_type", MetricName(spec.metric));
  if (spec.nlist) out.Int("nlist", spec.nlist);
  if (spec.hnsw_m) out.Int("M", spec.hnsw_m);
  if (spec.pq_m) out.Int("pq_m", spec.pq_m);
  if (spec.pq_nbits) out.Int("nbits", spec.pq_nbits);
  if (spec.sq_bits) out.Int("sq_bits", spec.sq_bits);
  if (spec.id_map != IdMapKind::kNone) {
    out.Bool("is_idmap", true);
    out.Bool("is_idmap2", spec.id_map == IdMapKind::kIdMap2);
  }
  if (!spec.base_index_id.empty()) out.Str("base_index_id", spec.base_index_id);
}

// Where the index is served from (vecgpu extension fields beside FAISSx's "device").
void WriteDevice(MapWriter& m, const BackendInfo& b) {
  m.Str("device", b.device);
  if (!b.placement.empty()) m.Str("placement", b.placement);
  if (!b.replica.empty()) m.Str("gpu_copy", b.replica);
  if (b.gpu_memory_bytes > 0) m.Int("gpu_memory_bytes", b.gpu_memory_bytes);
}

// The "status" map of get_index_status, also used by get_index_info.
std::string StatusMap(const CollectionInfo& info) {
  MapWriter m;
  m.Str("index_id", info.name);
  m.Int("dimension", info.spec.dim);
  m.Int("ntotal", info.backend.ntotal);
  m.Str("index_type", info.spec.index_type);
  m.Str("kind", info.spec.kind());
  m.Str("factory", info.spec.factory);
  m.Bool("is_trained", info.backend.is_trained);
  m.Bool("requires_training", !info.backend.is_trained);
  m.Bool("is_ready_for_use", info.backend.is_trained);
  WriteDevice(m, info.backend);
  WriteTypeDetails(m, info.spec);
  if (info.spec.nlist) m.Int("nprobe", info.backend.nprobe);
  if (info.spec.hnsw_m) {
    m.Int("hnsw_m", info.spec.hnsw_m);
    m.Int("ef_search", info.backend.ef_search);
    m.Int("ef_construction", info.backend.ef_construction);
  }
  return m.Finish();
}

Status Ping(ActionContext& c) {
  c.out.Str("message", "pong");
  c.out.Double(
      "time",
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  return Status::Ok();
}

Status CreateIndex(ActionContext& c) {
  CreateCollectionRequest r;
  ASSIGN_OR_RETURN(r.name, IndexId(c));
  ASSIGN_OR_RETURN(int64_t dim, c.req.Int("dimension", 1, c.limits.max_dimension));
  r.dim = static_cast<int>(dim);
  ASSIGN_OR_RETURN(r.index_type, c.req.OptionalString("index_type", "L2", 256));
  for (const char* key : {"metric", "metric_type"}) {
    if (c.req.Has(key)) {
      ASSIGN_OR_RETURN(r.metric, c.req.String(key, 32));
    }
  }
  // vecgpu extension: a placement hint, "cpu", "gpu" or "gpu:N".
  ASSIGN_OR_RETURN(r.device, c.req.OptionalString("device", "", 16));
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Create(c.tenant, r));
  c.out.Str("index_id", info.name);
  c.out.Int("dimension", info.spec.dim);
  c.out.Str("type", info.spec.index_type);
  c.out.Bool("is_trained", info.backend.is_trained);
  WriteDevice(c.out, info.backend);
  WriteTypeDetails(c.out, info.spec);
  if (const msgpack::object* meta = c.req.Find("metadata")) c.out.Key("metadata").pack(*meta);
  return Status::Ok();
}

// Writes k-NN results: per-query "results" plus top-level n x k "distances"/"indices" (FAISSx's
// IVFPQ client reads those), or with binary=true, float32 / int64 bins.
void WriteSearchResult(MapWriter& w, SearchResult& r, bool binary,
                       const std::vector<FloatMatrix>* vectors) {
  for (size_t i = 0; i < r.labels.size(); ++i) {
    if (r.labels[i] < 0) r.distances[i] = kMissingDistance;
  }
  const size_t k = r.k;
  if (binary) {
    w.Key("distances");
    w.Bin(r.distances.data(), r.distances.size() * sizeof(float));
    w.Key("indices");
    w.Bin(r.labels.data(), r.labels.size() * sizeof(int64_t));
  } else {
    auto& p = w.Key("results");
    p.pack_array(static_cast<uint32_t>(r.nq));
    for (int64_t q = 0; q < r.nq; ++q) {
      p.pack_map(vectors ? 3 : 2);
      p.pack("distances");
      w.FloatArray(r.distances.data() + q * k, k);
      p.pack("indices");
      w.IntArray(r.labels.data() + q * k, k);
      if (vectors) {
        const FloatMatrix& v = (*vectors)[q];
        p.pack("vectors");
        p.pack_array(static_cast<uint32_t>(v.rows));
        for (int64_t j = 0; j < v.rows; ++j) w.FloatArray(v.row(j), v.cols);
      }
    }
    w.Key("distances").pack_array(static_cast<uint32_t>(r.nq));
    for (int64_t q = 0; q < r.nq; ++q) w.FloatArray(r.distances.data() + q * k, k);
    w.Key("indices").pack_array(static_cast<uint32_t>(r.nq));
    for (int64_t q = 0; q < r.nq; ++q) w.IntArray(r.labels.data() + q * k, k);
  }
  w.Int("num_queries", r.nq);
  w.Int("k", r.k);
}

Status SearchAndReconstruct(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(FloatMatrix q,
                   CollectionVectors(c, name, "query_vectors", c.limits.max_query_vectors));
  ASSIGN_OR_RETURN(int64_t k, c.req.OptionalInt("k", 10, 1, c.limits.max_k));
  ASSIGN_OR_RETURN(SearchParams params, c.req.Params());
  ASSIGN_OR_RETURN(SearchAndReconstructResult r,
                   c.engine.SearchAndReconstruct(c.tenant, name, q, static_cast<int>(k), params));
  WriteSearchResult(c.out, r.result, false, &r.vectors);
  return Status::Ok();
}

Status RangeSearch(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(FloatMatrix q,
                   CollectionVectors(c, name, "query_vectors", c.limits.max_query_vectors));
  ASSIGN_OR_RETURN(double radius, c.req.Number("radius"));
  ASSIGN_OR_RETURN(SearchParams params, c.req.Params());
  ASSIGN_OR_RETURN(bool binary, c.req.OptionalBool("binary", false));
  ASSIGN_OR_RETURN(RangeResult r,
                   c.engine.RangeSearch(c.tenant, name, q, static_cast<float>(radius), params));
  const int64_t nq = q.rows;
  if (binary) {
    c.out.Key("lims");
    c.out.Bin(r.lims.data(), r.lims.size() * sizeof(int64_t));
    c.out.Key("distances");
    c.out.Bin(r.distances.data(), r.distances.size() * sizeof(float));
    c.out.Key("indices");
    c.out.Bin(r.labels.data(), r.labels.size() * sizeof(int64_t));
  } else {
    auto& p = c.out.Key("results");
    p.pack_array(static_cast<uint32_t>(nq));
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t begin = r.lims[i], n = r.lims[i + 1] - r.lims[i];
      p.pack_map(5);
      p.pack("query_index");
      p.pack_int64(i);
      p.pack("num_results");
      p.pack_int64(n);
      p.pack("count");
      p.pack_int64(n);
      p.pack("distances");
      c.out.FloatArray(r.distances.data() + begin, n);
      p.pack("indices");
      c.out.IntArray(r.labels.data() + begin, n);
    }
    c.out.Ints("lims", r.lims.data(), r.lims.size());
    c.out.Floats("distances", r.distances.data(), r.distances.size());
    c.out.Ints("indices", r.labels.data(), r.labels.size());
  }
  c.out.Int("num_queries", nq);
  c.out.Double("radius", radius);
  return Status::Ok();
}

Status TrainIndex(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(FloatMatrix x,
                   CollectionVectors(c, name, "training_vectors", c.limits.max_train_vectors));
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Train(c.tenant, name, x));
  c.out.Str("index_id", name);
  c.out.Bool("is_trained", info.backend.is_trained);
  c.out.Int("trained_with", x.rows);
  c.out.Int("ntotal", info.backend.ntotal);
  return Status::Ok();
}

Status Reconstruct(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(bool binary, c.req.OptionalBool("binary", false));
  // The faissx client sends "id"; the FAISSx server reads "idx".
  const char* key = c.req.Has("id") ? "id" : "idx";
  ASSIGN_OR_RETURN(int64_t id, c.req.Int(key, 0, INT64_MAX));
  const int64_t ids[] = {id};
  ASSIGN_OR_RETURN(FloatMatrix v, c.engine.Reconstruct(c.tenant, name, ids));
  c.out.Vector("vector", v, binary);
  return Status::Ok();
}

Status ReconstructN(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(bool binary, c.req.OptionalBool("binary", false));
  ASSIGN_OR_RETURN(int64_t start, c.req.OptionalInt("start_idx", 0, 0, INT64_MAX));
  ASSIGN_OR_RETURN(int64_t n, c.req.OptionalInt("num_vectors", 10, 0, c.limits.max_fetch_vectors));
  ASSIGN_OR_RETURN(FloatMatrix v, c.engine.ReconstructRange(c.tenant, name, start, n));
  c.out.Matrix("vectors", v, binary);
  c.out.Int("start_idx", start);
  c.out.Int("num_vectors", v.rows);
  return Status::Ok();
}

Status GetVectors(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(bool binary, c.req.OptionalBool("binary", false));
  ASSIGN_OR_RETURN(int64_t start, c.req.OptionalInt("start_idx", 0, 0, INT64_MAX));
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Describe(c.tenant, name));
  const int64_t remaining = std::max<int64_t>(0, info.backend.ntotal - start);
  ASSIGN_OR_RETURN(int64_t limit, c.req.OptionalInt("limit", remaining, 0, INT64_MAX));
  if (std::min(limit, remaining) > c.limits.max_fetch_vectors) {
    return InvalidArgument("limit: " + std::to_string(std::min(limit, remaining)) +
                           " vectors, above the limit of " +
                           std::to_string(c.limits.max_fetch_vectors) +
                           " per call; page with "
                           "start_idx and limit");
  }
  std::vector<int64_t> ids;
  ASSIGN_OR_RETURN(FloatMatrix v, c.engine.ReconstructRange(c.tenant, name, start, limit, &ids));
  c.out.Matrix("vectors", v, binary);
  c.out.Ints("ids", ids.data(), ids.size());
  c.out.Int("count", v.rows);
  c.out.Int("start_idx", start);
  c.out.Int("ntotal", info.backend.ntotal);
  return Status::Ok();
}

Status RemoveIds(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, c.req.Ids("ids", c.limits.max_add_vectors));
  ASSIGN_OR_RETURN(int64_t removed, c.engine.Remove(c.tenant, name, ids));
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Describe(c.tenant, name));
  c.out.Int("count", removed);
  c.out.Int("ntotal", info.backend.ntotal);
  return Status::Ok();
}

Status ReplaceVector(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(int64_t id, c.req.Int("id", 0, INT64_MAX));
  ASSIGN_OR_RETURN(FloatMatrix v, CollectionVectors(c, name, "vector", 1));
  RETURN_IF_ERROR(c.engine.Replace(c.tenant, name, id, v));
  c.out.Str("index_id", name);
  c.out.Int("id", id);
  return Status::Ok();
}

Status GetIndexStats(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Describe(c.tenant, name));
  auto write = [&](MapWriter& w) {
    w.Str("index_id", info.name);
    w.Int("dimension", info.spec.dim);
    w.Int("vector_count", info.backend.ntotal);
    w.Int("ntotal", info.backend.ntotal);
    w.Str("type", info.spec.index_type);
    w.Bool("is_trained", info.backend.is_trained);
    WriteDevice(w, info.backend);
  };
  MapWriter stats;
  write(stats);
  c.out.Raw("stats", stats.Finish());
  write(c.out);
  return Status::Ok();
}

Status GetIndexStatus(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Describe(c.tenant, name));
  c.out.Str("index_id", name);
  c.out.Raw("status", StatusMap(info));
  return Status::Ok();
}

Status GetIndexInfo(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Describe(c.tenant, name));
  c.out.Str("index_id", name);
  c.out.Raw("status", StatusMap(info));
  MapWriter m;
  m.Int("vectors_count", info.backend.ntotal);
  m.Int("dimension", info.spec.dim);
  m.Int("searches", info.searches);
  m.Int("queries", info.queries);
  m.Int("adds", info.adds);
  m.Int("vectors_added", info.vectors_added);
  m.Int("removals", info.removals);
  m.Double("search_time_ms", info.search_micros / 1000.0);
  c.out.Raw("metrics", m.Finish());
  MapWriter cfg;
  cfg.Str("metric", MetricName(info.spec.metric));
  cfg.Str("factory", info.spec.factory);
  if (info.spec.nlist) cfg.Int("nlist", info.spec.nlist);
  if (info.spec.nlist) cfg.Int("nprobe", info.backend.nprobe);
  if (info.spec.hnsw_m) cfg.Int("M", info.spec.hnsw_m);
  if (info.spec.hnsw_m) cfg.Int("efSearch", info.backend.ef_search);
  if (info.spec.hnsw_m) cfg.Int("efConstruction", info.backend.ef_construction);
  if (info.spec.pq_nbits) cfg.Int("nbits", info.spec.pq_nbits);
  if (info.spec.id_map != IdMapKind::kNone) {
    cfg.Str("idmap_type", info.spec.id_map == IdMapKind::kIdMap2 ? "IDMap2" : "IDMap");
  }
  if (!info.spec.base_index_id.empty()) cfg.Str("base_index_id", info.spec.base_index_id);
  c.out.Raw("configuration", cfg.Finish());
  MapWriter st;
  st.Int("estimated_memory_bytes", info.backend.memory_bytes);
  st.Bool("persistent", false);
  WriteDevice(st, info.backend);
  c.out.Raw("storage", st.Finish());
  return Status::Ok();
}

Status ListIndexes(ActionContext& c) {
  std::vector<CollectionInfo> all = c.engine.List(c.tenant);
  auto& p = c.out.Key("indexes");
  p.pack_array(static_cast<uint32_t>(all.size()));
  for (const auto& info : all) {
    p.pack_map(5);
    p.pack("index_id");
    p.pack(info.name);
    p.pack("dimension");
    p.pack_int64(info.spec.dim);
    p.pack("vector_count");
    p.pack_int64(info.backend.ntotal);
    p.pack("type");
    p.pack(info.spec.index_type);
    p.pack("is_trained");
    p.pack(info.backend.is_trained);
  }
  c.out.Int("count", static_cast<int64_t>(all.size()));
  return Status::Ok();
}

Status DeleteIndex(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  RETURN_IF_ERROR(c.engine.Drop(c.tenant, name));
  c.out.Str("index_id", name);
  c.out.Str("message", "Index " + name + " deleted");
  return Status::Ok();
}

Status ResetIndex(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  RETURN_IF_ERROR(c.engine.Reset(c.tenant, name));
  c.out.Str("index_id", name);
  c.out.Str("message", "Index " + name + " has been reset");
  return Status::Ok();
}

Status SetParameter(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(std::string param, c.req.String("parameter", 64));
  ASSIGN_OR_RETURN(double value, c.req.Number("value"));
  RETURN_IF_ERROR(c.engine.SetParameter(c.tenant, name, param, value));
  c.out.Str("param_name", param);
  c.out.Double("param_value", value);
  c.out.Str("message", "Parameter " + param + " set");
  return Status::Ok();
}

Status GetParameter(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(std::string param, c.req.String("parameter", 64));
  ASSIGN_OR_RETURN(double value, c.engine.GetParameter(c.tenant, name, param));
  c.out.Str("param_name", param);
  if (value == static_cast<double>(static_cast<int64_t>(value))) {
    c.out.Int("param_value", static_cast<int64_t>(value));
  } else {
    c.out.Double("param_value", value);
  }
  return Status::Ok();
}

Status MergeIndices(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string target, IndexId(c, "target_index_id"));
  ASSIGN_OR_RETURN(std::vector<std::string> sources,
                   c.req.Strings("source_index_ids", 1024, c.limits.max_index_id_length));
  if (sources.empty()) return InvalidArgument("source_index_ids: no source indexes given");
  ASSIGN_OR_RETURN(int64_t ntotal, c.engine.Merge(c.tenant, target, sources));
  c.out.Str("index_id", target);
  c.out.Int("ntotal", ntotal);
  c.out.Str("message", "Merged " + std::to_string(sources.size()) + " indexes into " + target);
  return Status::Ok();
}

Status ComputeClustering(ActionContext& c) {
  ASSIGN_OR_RETURN(int64_t dim, c.req.OptionalInt("dimension", 0, 0, c.limits.max_dimension));
  ASSIGN_OR_RETURN(FloatMatrix x, c.req.Vectors("vectors", VectorShape{static_cast<int>(dim)},
                                                c.limits.max_train_vectors));
  ASSIGN_OR_RETURN(int64_t n_clusters, c.req.Int("n_clusters", 1, 1'000'000));
  ASSIGN_OR_RETURN(std::string metric, c.req.OptionalString("metric_type", "L2", 32));
  ASSIGN_OR_RETURN(int64_t niter, c.req.OptionalInt("niter", 25, 1, 1000));
  Metric m;
  if (metric == "L2" || metric == "l2") {
    m = Metric::kL2;
  } else if (metric == "IP" || metric == "ip" || metric == "INNER_PRODUCT") {
    m = Metric::kInnerProduct;
  } else {
    return InvalidArgument("metric_type: unknown metric '" + metric + "' (expected L2 or IP)");
  }
  ASSIGN_OR_RETURN(ClusteringResult r,
                   c.engine.Cluster(x, static_cast<int>(n_clusters), m, static_cast<int>(niter)));
  c.out.Matrix("centroids", r.centroids, false);
  c.out.Ints("assignments", r.assignments.data(), r.assignments.size());
  c.out.Ints("cluster_sizes", r.cluster_sizes.data(), r.cluster_sizes.size());
  c.out.Double("obj", r.objective);
  c.out.Int("n_clusters", n_clusters);
  return Status::Ok();
}

// FAISSx's optimize_index: tunes the search parameters of IVF and HNSW indexes by level.
Status OptimizeIndex(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(int64_t level, c.req.OptionalInt("optimization_level", 1, 1, 3));
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Describe(c.tenant, name));
  std::vector<std::string> done;
  if (info.spec.nlist > 0 && !info.spec.binary) {
    const int nlist = info.spec.nlist;
    const int nprobe = level == 1   ? std::max(1, std::min(10, nlist / 10))
                       : level == 2 ? std::max(1, std::min(50, nlist / 5))
                                    : std::max(1, std::min(100, nlist / 2));
    RETURN_IF_ERROR(c.engine.SetParameter(c.tenant, name, "nprobe", nprobe));
    done.push_back("set_nprobe_" + std::to_string(nprobe));
  } else if (info.spec.hnsw_m > 0) {
    const int ef = level == 1 ? 40 : level == 2 ? 80 : 120;
    RETURN_IF_ERROR(c.engine.SetParameter(c.tenant, name, "efSearch", ef));
    done.push_back("set_efSearch_" + std::to_string(ef));
  } else {
    done.push_back("no_optimization_needed");
  }
  c.out.Str("message",
            "Applied " + std::to_string(done.size()) + " optimizations to index " + name);
  c.out.Str("index_type", info.spec.index_type);
  auto& p = c.out.Key("optimizations");
  p.pack(done);
  c.out.Int("optimization_level", level);
  return Status::Ok();
}

Status GetTransformInfo(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(std::vector<TransformStep> steps, c.engine.Transforms(c.tenant, name));
  if (steps.empty()) {
    return InvalidArgument("index_id: index '" + name +
                           "' has no vector transform (create it "
                           "with a factory string such as 'PCA64,IVF256,Flat')");
  }
  ASSIGN_OR_RETURN(CollectionInfo info, c.engine.Describe(c.tenant, name));
  bool trained = info.backend.is_trained;
  auto& p = c.out.Key("transforms");
  p.pack_array(static_cast<uint32_t>(steps.size()));
  for (const auto& t : steps) {
    trained = trained && t.is_trained;
    p.pack_map(4);
    p.pack("type"), p.pack(t.type);
    p.pack("input_dim"), p.pack(t.d_in);
    p.pack("output_dim"), p.pack(t.d_out);
    p.pack("is_trained"), p.pack(t.is_trained);
  }
  c.out.Str("index_id", name);
  c.out.Str("type", "IndexPreTransform");
  c.out.Int("input_dimension", info.spec.dim);
  c.out.Int("output_dimension", steps.back().d_out);
  c.out.Int("chain_size", static_cast<int64_t>(steps.size()));
  c.out.Bool("is_trained", trained);
  return Status::Ok();
}

Status ApplyTransform(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(bool binary, c.req.OptionalBool("binary", false));
  ASSIGN_OR_RETURN(FloatMatrix x, CollectionVectors(c, name, "vectors", c.limits.max_add_vectors));
  ASSIGN_OR_RETURN(FloatMatrix y, c.engine.ApplyTransform(c.tenant, name, x));
  c.out.Str("index_id", name);
  c.out.Int("input_vectors", x.rows);
  c.out.Int("input_dimension", x.cols);
  c.out.Int("output_dimension", y.cols);
  c.out.Matrix("transformed_vectors", y, binary);
  return Status::Ok();
}

// FAISSx's recluster_index: new coarse clusters for an IVF index, vectors and ids kept.
Status ReclusterIndex(ActionContext& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(int64_t n_clusters, c.req.OptionalInt("n_clusters", 0, 1, 1 << 20));
  ASSIGN_OR_RETURN(double ratio, c.req.OptionalNumber("sample_ratio", 0.5));
  ASSIGN_OR_RETURN(ReclusterResult r,
                   c.engine.Recluster(c.tenant, name, static_cast<int>(n_clusters), ratio));
  c.out.Str("index_id", name);
  c.out.Int("previous_nlist", r.previous_nlist);
  c.out.Int("new_nlist", r.new_nlist);
  c.out.Int("ntotal", r.ntotal);
  c.out.Str("message",
            "Index " + name + " reclustered into " + std::to_string(r.new_nlist) + " lists");
  return Status::Ok();
}

// vecgpu's `snapshot` (an extension): a snapshot now, so that the next start replays no log
// for it. A tenant's key snapshots that tenant's indexes; an admin key (or any caller without
// auth) the whole directory. Indexes unchanged since the last snapshot cost nothing; an index
// being written keeps its last snapshot and the log after it.
Status TakeSnapshot(ActionContext& c) {
  if (!c.snapshot || !*c.snapshot) {
    return Unimplemented("snapshot: this server keeps no data directory (--data-dir)");
  }
  ASSIGN_OR_RETURN(store::SnapshotReport r, (*c.snapshot)(c.admin ? "" : c.tenant));
  c.out.Str("scope", c.admin ? "all" : "tenant");
  c.out.Int("busy", r.busy);
  c.out.Int("seq", static_cast<int64_t>(r.cut));
  c.out.Int("written", r.written);
  c.out.Int("unchanged", r.unchanged);
  c.out.Int("bytes", r.bytes);
  c.out.Double("seconds", r.seconds);
  c.out.Double("max_write_pause_seconds", r.max_pause_seconds);
  return Status::Ok();
}

// vecgpu's `usage` (an extension): the caller's tenant's use of what its quotas bound, and the
// quotas (0: no limit), as "usage"; an admin key also gets every tenant's, as "tenants".
Status TenantUsage(ActionContext& c) {
  auto write = [&c](msgpack::packer<msgpack::sbuffer>& p, const std::string& tenant) {
    const TenantUse use = c.engine.UseOf(tenant);
    const Quota q = c.quotas ? c.quotas->Of(tenant) : Quota{};
    p.pack_map(6);
    p.pack("tenant");
    p.pack(tenant);
    p.pack("collections");
    p.pack(use.collections);
    p.pack("vectors");
    p.pack(use.vectors);
    p.pack("bytes");
    p.pack(use.bytes);
    p.pack("inflight");
    p.pack(c.quotas ? c.quotas->inflight(tenant) : int64_t{0});
    p.pack("quota");
    p.pack_map(5);
    p.pack("max_vectors");
    p.pack(q.max_vectors);
    p.pack("max_bytes");
    p.pack(q.max_bytes);
    p.pack("max_collections");
    p.pack(q.max_collections > 0 ? q.max_collections
                                 : int64_t{c.limits.max_collections_per_tenant});
    p.pack("requests_per_second");
    p.pack(q.requests_per_second);
    p.pack("max_inflight");
    p.pack(q.max_inflight);
  };
  write(c.out.Key("usage"), c.tenant);
  if (c.admin) {
    const auto all = c.engine.Usage();
    auto& p = c.out.Key("tenants");
    p.pack_array(static_cast<uint32_t>(all.size()));
    for (const auto& u : all) write(p, u.tenant);
  }
  return Status::Ok();
}

// Every FAISSx action: handler, worker class, placement and the field naming its index.
const std::unordered_map<std::string_view, Action>& Table() {
  constexpr WorkClass kS = WorkClass::kShort, kL = WorkClass::kLong;
  constexpr Placement kIn = Placement::kInline, kC = Placement::kCollection,
                      kU = Placement::kUnbound, kSe = Placement::kSearch, kA = Placement::kAdd;
  static const auto* table = new std::unordered_map<std::string_view, Action>{
      {"ping", {Ping, kS, kIn, nullptr}},
      // A queue of its own (it logs, waiting for an fsync); an IDMap view: its base's queue.
      {"create_index", {CreateIndex, kS, kU, nullptr}},
      // Adds and searches have no handler: the service decodes them (DecodeAdd,
      // DecodeSearch) and the engine queues, merges or batches them.
      {"add_vectors", {nullptr, kS, kA, "index_id"}},
      {"add_with_ids", {nullptr, kS, kA, "index_id"}},
      {"batch_add_with_ids", {nullptr, kS, kA, "index_id"}},
      {"search", {nullptr, kS, kSe, "index_id"}},
      {"hybrid_search", {nullptr, kS, kSe, "index_id"}},
      {"search_and_reconstruct", {SearchAndReconstruct, kS, kC, "index_id"}},
      {"range_search", {RangeSearch, kS, kC, "index_id"}},
      {"train_index", {TrainIndex, kL, kC, "index_id"}},
      {"reconstruct", {Reconstruct, kS, kC, "index_id"}},
      {"reconstruct_n", {ReconstructN, kS, kC, "index_id"}},
      {"get_vectors", {GetVectors, kS, kC, "index_id"}},
      {"remove_ids", {RemoveIds, kS, kC, "index_id"}},
      {"replace_vector", {ReplaceVector, kS, kC, "index_id"}},
      {"get_index_stats", {GetIndexStats, kS, kC, "index_id"}},
      {"get_index_status", {GetIndexStatus, kS, kC, "index_id"}},
      {"get_index_info", {GetIndexInfo, kS, kC, "index_id"}},
      {"list_indexes", {ListIndexes, kS, kIn, nullptr}},
      {"list_indices", {ListIndexes, kS, kIn, nullptr}},
      {"delete_index", {DeleteIndex, kS, kC, "index_id"}},
      {"reset", {ResetIndex, kS, kC, "index_id"}},
      {"clear", {ResetIndex, kS, kC, "index_id"}},
      {"set_parameter", {SetParameter, kS, kC, "index_id"}},
      {"get_parameter", {GetParameter, kS, kC, "index_id"}},
      {"merge_indices", {MergeIndices, kL, kC, "target_index_id"}},
      {"compute_clustering", {ComputeClustering, kL, kU, nullptr}},
      {"optimize_index", {OptimizeIndex, kS, kC, "index_id"}},
      {"recluster_index", {ReclusterIndex, kL, kC, "index_id"}},
      {"apply_transform", {ApplyTransform, kS, kC, "index_id"}},
      {"get_transform_info", {GetTransformInfo, kS, kC, "index_id"}},
      {"snapshot", {TakeSnapshot, kL, kU, nullptr}},
      {"usage", {TenantUsage, kS, kIn, nullptr}},
  };
  return *table;
}

}  // namespace

const Action* FindAction(std::string_view action) {
  auto it = Table().find(action);
  return it == Table().end() ? nullptr : &it->second;
}

StatusOr<SearchCall> DecodeSearch(ActionContext& c) {
  if (c.req.action() == "hybrid_search" && c.req.Has("metadata_filter")) {
    return Unimplemented(
        "hybrid_search: metadata filters are not supported; send it without "
        "metadata_filter for a plain vector search");
  }
  SearchCall call;
  ASSIGN_OR_RETURN(call.binary, c.req.OptionalBool("binary", false));
  ASSIGN_OR_RETURN(call.name, IndexId(c));
  ASSIGN_OR_RETURN(call.queries,
                   CollectionVectors(c, call.name, "query_vectors", c.limits.max_query_vectors));
  ASSIGN_OR_RETURN(int64_t k, c.req.OptionalInt("k", 10, 1, c.limits.max_k));
  call.k = static_cast<int>(k);
  ASSIGN_OR_RETURN(call.params, c.req.Params());
  return call;
}

StatusOr<AddCall> DecodeAdd(ActionContext& c) {
  const bool ids_required = c.req.action() != "add_vectors";
  AddCall call;
  ASSIGN_OR_RETURN(call.name, IndexId(c));
  ASSIGN_OR_RETURN(call.x, CollectionVectors(c, call.name, "vectors", c.limits.max_add_vectors));
  if (ids_required || c.req.Has("ids")) {
    ASSIGN_OR_RETURN(call.ids, c.req.Ids("ids", c.limits.max_add_vectors));
  }
  if (c.req.Has("batch_size")) {
    ASSIGN_OR_RETURN(int64_t batch, c.req.Int("batch_size", 1, INT32_MAX));
    (void)batch;  // one request is applied as one add
  }
  return call;
}

void WriteAddReply(MapWriter& out, const AddResult& r) {
  out.Int("count", r.count);
  out.Int("total", r.ntotal);
  out.Int("ntotal", r.ntotal);
}

void WriteSearchReply(MapWriter& out, SearchResult& r, bool binary) {
  WriteSearchResult(out, r, binary, nullptr);
}

}  // namespace vecgpu::server
