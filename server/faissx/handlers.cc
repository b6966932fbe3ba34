#include "server/faissx/handlers.h"

#include "server/faissx/handler_support.h"
#include "server/faissx/search_reply.h"

#include <chrono>
#include <unordered_map>

namespace vecgpu::server::faissx_handlers {

// Reads the vector field `key` of the collection `name` and continues with it. Nested lists
// carry their own shape (the engine checks it against the index); a bin needs the index's
// layout, asked of the service first (a cached read).
Status WithVectors(const Call& c, const std::string& name, std::string_view key, int64_t max_rows,
                   VectorsNext next) {
  const msgpack::object* o = c->req.Find(key);
  if (!o || o->type != msgpack::type::BIN) {
    ASSIGN_OR_RETURN(FloatMatrix x, c->req.Vectors(key, VectorShape{}, max_rows));
    return next(std::move(x));
  }
  ReadRequest layout;
  layout.op = ReadRequest::Op::kLayout;
  layout.collection = name;
  c->service.Read(
      c->call, std::move(layout),
      [c, key = std::string(key), max_rows, next](StatusOr<ReadReply> l) {
        if (!l.ok()) return c->finish(l.status());
        auto x = c->req.Vectors(key, VectorShape{l->layout.dim, l->layout.binary}, max_rows);
        if (!x.ok()) return c->finish(x.status());
        if (Status st = next(std::move(*x)); !st.ok()) c->finish(st);
      });
  return Status::Ok();
}

namespace {

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

// A partial answer (allow_partial): which shards it lacks.
void WriteMissingShards(MapWriter& w, const std::vector<std::string>& missing) {
  if (missing.empty()) return;
  w.Bool("partial", true);
  auto& p = w.Key("missing_shards");
  p.pack_array(static_cast<uint32_t>(missing.size()));
  for (const std::string& m : missing) p.pack(m);
}

Status Ping(const Call& c) {
  c->out.Str("message", "pong");
  c->out.Double(
      "time",
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  c->finish(Status::Ok());
  return Status::Ok();
}

Status CreateIndex(const Call& c) {
  CreateCollectionRequest r;
  ASSIGN_OR_RETURN(r.name, IndexId(c));
  ASSIGN_OR_RETURN(int64_t dim, c->req.Int("dimension", 1, c->limits.max_dimension));
  r.dim = static_cast<int>(dim);
  ASSIGN_OR_RETURN(r.index_type, c->req.OptionalString("index_type", "L2", 256));
  for (const char* key : {"metric", "metric_type"}) {
    if (c->req.Has(key)) {
      ASSIGN_OR_RETURN(r.metric, c->req.String(key, 32));
    }
  }
  // vecgpu extension: a placement hint, "cpu", "gpu" or "gpu:N".
  ASSIGN_OR_RETURN(r.device, c->req.OptionalString("device", "", 16));
  // vecgpu extension, for a cluster (`vecgpu gateway`): shards by id and copies of each.
  ASSIGN_OR_RETURN(int64_t shards, c->req.OptionalInt("shards", 0, 0, 64));
  ASSIGN_OR_RETURN(int64_t replicas, c->req.OptionalInt("replicas", 0, 0, 64));
  r.shards = static_cast<int>(shards);
  r.replicas = static_cast<int>(replicas);
  c->service.Create(c->call, std::move(r), Reply<CollectionInfo>(c, [c](CollectionInfo& info) {
                      c->out.Str("index_id", info.name);
                      c->out.Int("dimension", info.spec.dim);
                      c->out.Str("type", info.spec.index_type);
                      c->out.Bool("is_trained", info.backend.is_trained);
                      WriteDevice(c->out, info.backend);
                      WriteTypeDetails(c->out, info.spec);
                      if (const msgpack::object* meta = c->req.Find("metadata")) {
                        c->out.Key("metadata").pack(*meta);
                      }
                      return Status::Ok();
                    }));
  return Status::Ok();
}

// search and hybrid_search: batched by the service with the searches behind them.
Status Search(const Call& c) {
  if (c->req.action() == "hybrid_search" && c->req.Has("metadata_filter")) {
    return Unimplemented(
        "hybrid_search: metadata filters are not supported; send it without "
        "metadata_filter for a plain vector search");
  }
  ASSIGN_OR_RETURN(bool binary, c->req.OptionalBool("binary", false));
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  return WithVectors(c, name, "query_vectors", c->limits.max_query_vectors,
                     [c, name, binary](FloatMatrix q) -> Status {
                       SearchRequest r;
                       r.collection = name;
                       r.queries = std::move(q);
                       ASSIGN_OR_RETURN(int64_t k, c->req.OptionalInt("k", 10, 1, c->limits.max_k));
                       r.k = static_cast<int>(k);
                       ASSIGN_OR_RETURN(r.params, c->req.Params());
                       // vecgpu extension: a cluster may answer from the shards it reaches.
                       for (const char* key : {"allow_partial", "allow_partial_results",
                                               "partial_results"}) {
                         ASSIGN_OR_RETURN(bool partial, c->req.OptionalBool(key, false));
                         r.allow_partial = r.allow_partial || partial;
                       }
                       c->service.Search(c->call, std::move(r),
                                         Reply<SearchReply>(c, [c, binary](SearchReply& s) {
                                           WriteSearchResult(c->out, s.knn, binary, nullptr);
                                           WriteMissingShards(c->out, s.missing_shards);
                                           return Status::Ok();
                                         }));
                       return Status::Ok();
                     });
}

Status SearchAndReconstruct(const Call& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  return WithVectors(
      c, name, "query_vectors", c->limits.max_query_vectors, [c, name](FloatMatrix q) -> Status {
        SearchRequest r;
        r.kind = SearchRequest::Kind::kKnnWithVectors;
        r.collection = name;
        r.queries = std::move(q);
        ASSIGN_OR_RETURN(int64_t k, c->req.OptionalInt("k", 10, 1, c->limits.max_k));
        r.k = static_cast<int>(k);
        ASSIGN_OR_RETURN(r.params, c->req.Params());
        c->service.Search(c->call, std::move(r), Reply<SearchReply>(c, [c](SearchReply& s) {
                            WriteSearchResult(c->out, s.knn, false, &s.vectors);
                            return Status::Ok();
                          }));
        return Status::Ok();
      });
}

Status RangeSearch(const Call& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  return WithVectors(
      c, name, "query_vectors", c->limits.max_query_vectors, [c, name](FloatMatrix q) -> Status {
        SearchRequest r;
        r.kind = SearchRequest::Kind::kRange;
        r.collection = name;
        const int64_t nq = q.rows;
        r.queries = std::move(q);
        ASSIGN_OR_RETURN(double radius, c->req.Number("radius"));
        r.radius = static_cast<float>(radius);
        ASSIGN_OR_RETURN(r.params, c->req.Params());
        ASSIGN_OR_RETURN(bool binary, c->req.OptionalBool("binary", false));
        c->service.Search(c->call, std::move(r),
                          Reply<SearchReply>(c, [c, nq, radius, binary](SearchReply& s) {
                            const RangeResult& r = s.range;
                            MapWriter& out = c->out;
                            if (binary) {
                              out.Key("lims");
                              out.Bin(r.lims.data(), r.lims.size() * sizeof(int64_t));
                              out.Key("distances");
                              out.Bin(r.distances.data(), r.distances.size() * sizeof(float));
                              out.Key("indices");
                              out.Bin(r.labels.data(), r.labels.size() * sizeof(int64_t));
                            } else {
                              auto& p = out.Key("results");
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
                                out.FloatArray(r.distances.data() + begin, n);
                                p.pack("indices");
                                out.IntArray(r.labels.data() + begin, n);
                              }
                              out.Ints("lims", r.lims.data(), r.lims.size());
                              out.Floats("distances", r.distances.data(), r.distances.size());
                              out.Ints("indices", r.labels.data(), r.labels.size());
                            }
                            out.Int("num_queries", nq);
                            out.Double("radius", radius);
                            return Status::Ok();
                          }));
        return Status::Ok();
      });
}

// add_vectors, add_with_ids, batch_add_with_ids: merged by the service with the adds behind.
Status AddVectors(const Call& c) {
  const bool ids_required = c->req.action() != "add_vectors";
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  return WithVectors(c, name, "vectors", c->limits.max_add_vectors,
                     [c, name, ids_required](FloatMatrix x) -> Status {
                       WriteRequest r;
                       r.op = WriteRequest::Op::kAdd;
                       r.collection = name;
                       r.vectors = std::move(x);
                       if (ids_required || c->req.Has("ids")) {
                         ASSIGN_OR_RETURN(r.ids, c->req.Ids("ids", c->limits.max_add_vectors));
                       }
                       if (c->req.Has("batch_size")) {
                         ASSIGN_OR_RETURN(int64_t batch, c->req.Int("batch_size", 1, INT32_MAX));
                         (void)batch;  // one request is applied as one add
                       }
                       c->service.Write(c->call, std::move(r),
                                        Reply<WriteReply>(c, [c](WriteReply& w) {
                                          c->out.Int("count", w.count);
                                          c->out.Int("total", w.ntotal);
                                          c->out.Int("ntotal", w.ntotal);
                                          return Status::Ok();
                                        }));
                       return Status::Ok();
                     });
}

Status TrainIndex(const Call& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  return WithVectors(
      c, name, "training_vectors", c->limits.max_train_vectors, [c, name](FloatMatrix x) -> Status {
        MaintainRequest r;
        r.op = MaintainRequest::Op::kTrain;
        r.collection = name;
        const int64_t rows = x.rows;
        r.vectors = std::move(x);
        c->service.Maintain(c->call, std::move(r),
                            Reply<MaintainReply>(c, [c, name, rows](MaintainReply& m) {
                              c->out.Str("index_id", name);
                              c->out.Bool("is_trained", m.info.backend.is_trained);
                              c->out.Int("trained_with", rows);
                              c->out.Int("ntotal", m.info.backend.ntotal);
                              return Status::Ok();
                            }));
        return Status::Ok();
      });
}

Status Reconstruct(const Call& c) {
  ReadRequest r;
  r.op = ReadRequest::Op::kReconstruct;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  ASSIGN_OR_RETURN(bool binary, c->req.OptionalBool("binary", false));
  // The faissx client sends "id"; the FAISSx server reads "idx".
  const char* key = c->req.Has("id") ? "id" : "idx";
  ASSIGN_OR_RETURN(int64_t id, c->req.Int(key, 0, INT64_MAX));
  r.ids = {id};
  c->service.Read(c->call, std::move(r), Reply<ReadReply>(c, [c, binary](ReadReply& v) {
                    c->out.Vector("vector", v.vectors, binary);
                    return Status::Ok();
                  }));
  return Status::Ok();
}

Status ReconstructN(const Call& c) {
  ReadRequest r;
  r.op = ReadRequest::Op::kRange;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  ASSIGN_OR_RETURN(bool binary, c->req.OptionalBool("binary", false));
  ASSIGN_OR_RETURN(r.start, c->req.OptionalInt("start_idx", 0, 0, INT64_MAX));
  ASSIGN_OR_RETURN(r.count, c->req.OptionalInt("num_vectors", 10, 0, c->limits.max_fetch_vectors));
  const int64_t start = r.start;
  c->service.Read(c->call, std::move(r), Reply<ReadReply>(c, [c, binary, start](ReadReply& v) {
                    c->out.Matrix("vectors", v.vectors, binary);
                    c->out.Int("start_idx", start);
                    c->out.Int("num_vectors", v.vectors.rows);
                    return Status::Ok();
                  }));
  return Status::Ok();
}

Status GetVectors(const Call& c) {
  ReadRequest r;
  r.op = ReadRequest::Op::kRange;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  ASSIGN_OR_RETURN(bool binary, c->req.OptionalBool("binary", false));
  ASSIGN_OR_RETURN(r.start, c->req.OptionalInt("start_idx", 0, 0, INT64_MAX));
  ASSIGN_OR_RETURN(r.count, c->req.OptionalInt("limit", -1, 0, INT64_MAX));  // -1: the rest
  const int64_t start = r.start;
  c->service.Read(c->call, std::move(r), Reply<ReadReply>(c, [c, binary, start](ReadReply& v) {
                    c->out.Matrix("vectors", v.vectors, binary);
                    c->out.Ints("ids", v.ids.data(), v.ids.size());
                    c->out.Int("count", v.vectors.rows);
                    c->out.Int("start_idx", start);
                    c->out.Int("ntotal", v.ntotal);
                    return Status::Ok();
                  }));
  return Status::Ok();
}

Status RemoveIds(const Call& c) {
  WriteRequest r;
  r.op = WriteRequest::Op::kRemove;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  ASSIGN_OR_RETURN(r.ids, c->req.Ids("ids", c->limits.max_add_vectors));
  c->service.Write(c->call, std::move(r), Reply<WriteReply>(c, [c](WriteReply& w) {
                     c->out.Int("count", w.count);
                     c->out.Int("ntotal", w.ntotal);
                     return Status::Ok();
                   }));
  return Status::Ok();
}

Status ReplaceVector(const Call& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(int64_t id, c->req.Int("id", 0, INT64_MAX));
  return WithVectors(c, name, "vector", 1, [c, name, id](FloatMatrix v) -> Status {
    WriteRequest r;
    r.op = WriteRequest::Op::kReplace;
    r.collection = name;
    r.ids = {id};
    r.vectors = std::move(v);
    c->service.Write(c->call, std::move(r), Reply<WriteReply>(c, [c, name, id](WriteReply&) {
                       c->out.Str("index_id", name);
                       c->out.Int("id", id);
                       return Status::Ok();
                     }));
    return Status::Ok();
  });
}

// The describing actions: one Describe, written by `write`.
template <typename W>
Status Describe(const Call& c, W write) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  c->service.Describe(c->call, name, Reply<CollectionInfo>(c, [c, name, write](CollectionInfo& i) {
                        write(c->out, name, i);
                        return Status::Ok();
                      }));
  return Status::Ok();
}

Status GetIndexStats(const Call& c) {
  return Describe(c, [](MapWriter& out, const std::string&, const CollectionInfo& info) {
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
    out.Raw("stats", stats.Finish());
    write(out);
  });
}

Status GetIndexStatus(const Call& c) {
  return Describe(c, [](MapWriter& out, const std::string& name, const CollectionInfo& info) {
    out.Str("index_id", name);
    out.Raw("status", StatusMap(info));
  });
}

Status GetIndexInfo(const Call& c) {
  return Describe(c, [](MapWriter& out, const std::string& name, const CollectionInfo& info) {
    out.Str("index_id", name);
    out.Raw("status", StatusMap(info));
    MapWriter m;
    m.Int("vectors_count", info.backend.ntotal);
    m.Int("dimension", info.spec.dim);
    m.Int("searches", info.searches);
    m.Int("queries", info.queries);
    m.Int("adds", info.adds);
    m.Int("vectors_added", info.vectors_added);
    m.Int("removals", info.removals);
    m.Double("search_time_ms", info.search_micros / 1000.0);
    out.Raw("metrics", m.Finish());
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
    out.Raw("configuration", cfg.Finish());
    MapWriter st;
    st.Int("estimated_memory_bytes", info.backend.memory_bytes);
    st.Bool("persistent", false);
    WriteDevice(st, info.backend);
    out.Raw("storage", st.Finish());
  });
}

Status ListIndexes(const Call& c) {
  c->service.List(c->call,
                  Reply<std::vector<CollectionInfo>>(c, [c](std::vector<CollectionInfo>& all) {
                    auto& p = c->out.Key("indexes");
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
                    c->out.Int("count", static_cast<int64_t>(all.size()));
                    return Status::Ok();
                  }));
  return Status::Ok();
}

Status DeleteIndex(const Call& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  c->service.Drop(c->call, name, Reply<Empty>(c, [c, name](Empty&) {
                    c->out.Str("index_id", name);
                    c->out.Str("message", "Index " + name + " deleted");
                    return Status::Ok();
                  }));
  return Status::Ok();
}

Status ResetIndex(const Call& c) {
  WriteRequest r;
  r.op = WriteRequest::Op::kReset;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  const std::string name = r.collection;
  c->service.Write(c->call, std::move(r), Reply<WriteReply>(c, [c, name](WriteReply&) {
                     c->out.Str("index_id", name);
                     c->out.Str("message", "Index " + name + " has been reset");
                     return Status::Ok();
                   }));
  return Status::Ok();
}

// Every FAISSx action and its handler.
const std::unordered_map<std::string_view, Action>& Table() {
  static const auto* table = new std::unordered_map<std::string_view, Action>{
      {"ping", {Ping}},
      {"create_index", {CreateIndex}},
      {"add_vectors", {AddVectors}},
      {"add_with_ids", {AddVectors}},
      {"batch_add_with_ids", {AddVectors}},
      {"search", {Search}},
      {"hybrid_search", {Search}},
      {"search_and_reconstruct", {SearchAndReconstruct}},
      {"range_search", {RangeSearch}},
      {"train_index", {TrainIndex}},
      {"reconstruct", {Reconstruct}},
      {"reconstruct_n", {ReconstructN}},
      {"get_vectors", {GetVectors}},
      {"remove_ids", {RemoveIds}},
      {"replace_vector", {ReplaceVector}},
      {"get_index_stats", {GetIndexStats}},
      {"get_index_status", {GetIndexStatus}},
      {"get_index_info", {GetIndexInfo}},
      {"list_indexes", {ListIndexes}},
      {"list_indices", {ListIndexes}},
      {"delete_index", {DeleteIndex}},
      {"reset", {ResetIndex}},
      {"clear", {ResetIndex}},
      {"set_parameter", {SetParameter}},
      {"get_parameter", {GetParameter}},
      {"merge_indices", {MergeIndices}},
      {"compute_clustering", {ComputeClustering}},
      {"optimize_index", {OptimizeIndex}},
      {"recluster_index", {ReclusterIndex}},
      {"apply_transform", {ApplyTransform}},
      {"get_transform_info", {GetTransformInfo}},
      {"snapshot", {TakeSnapshot}},
      {"usage", {TenantUsage}},
  };
  return *table;
}

}  // namespace
}  // namespace vecgpu::server::faissx_handlers

namespace vecgpu::server {

const Action* FindAction(std::string_view action) {
  using faissx_handlers::Table;
  auto it = Table().find(action);
  return it == Table().end() ? nullptr : &it->second;
}

}  // namespace vecgpu::server
