// The FAISSx actions that maintain an index or report on the server rather than read and
// write vectors: parameters, merging, clustering, optimisation, transforms, reclustering,
// snapshots and usage. The action table is in handlers.cc.
#include "server/faissx/handler_support.h"

#include <algorithm>

namespace vecgpu::server::faissx_handlers {

Status SetParameter(const Call& c) {
  MaintainRequest r;
  r.op = MaintainRequest::Op::kSetParameter;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  ASSIGN_OR_RETURN(r.parameter, c->req.String("parameter", 64));
  ASSIGN_OR_RETURN(r.value, c->req.Number("value"));
  const std::string param = r.parameter;
  const double value = r.value;
  c->service.Maintain(c->call, std::move(r),
                      Reply<MaintainReply>(c, [c, param, value](MaintainReply&) {
                        c->out.Str("param_name", param);
                        c->out.Double("param_value", value);
                        c->out.Str("message", "Parameter " + param + " set");
                        return Status::Ok();
                      }));
  return Status::Ok();
}

Status GetParameter(const Call& c) {
  ReadRequest r;
  r.op = ReadRequest::Op::kParameter;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  ASSIGN_OR_RETURN(r.parameter, c->req.String("parameter", 64));
  const std::string param = r.parameter;
  c->service.Read(c->call, std::move(r), Reply<ReadReply>(c, [c, param](ReadReply& v) {
                    c->out.Str("param_name", param);
                    if (v.value == static_cast<double>(static_cast<int64_t>(v.value))) {
                      c->out.Int("param_value", static_cast<int64_t>(v.value));
                    } else {
                      c->out.Double("param_value", v.value);
                    }
                    return Status::Ok();
                  }));
  return Status::Ok();
}

Status MergeIndices(const Call& c) {
  MaintainRequest r;
  r.op = MaintainRequest::Op::kMerge;
  ASSIGN_OR_RETURN(r.collection, IndexId(c, "target_index_id"));
  ASSIGN_OR_RETURN(r.sources,
                   c->req.Strings("source_index_ids", 1024, c->limits.max_index_id_length));
  if (r.sources.empty()) return InvalidArgument("source_index_ids: no source indexes given");
  const std::string target = r.collection;
  const size_t n = r.sources.size();
  c->service.Maintain(
      c->call, std::move(r), Reply<MaintainReply>(c, [c, target, n](MaintainReply& m) {
        c->out.Str("index_id", target);
        c->out.Int("ntotal", m.ntotal);
        c->out.Str("message", "Merged " + std::to_string(n) + " indexes into " + target);
        return Status::Ok();
      }));
  return Status::Ok();
}

Status ComputeClustering(const Call& c) {
  ClusterRequest r;
  ASSIGN_OR_RETURN(int64_t dim, c->req.OptionalInt("dimension", 0, 0, c->limits.max_dimension));
  ASSIGN_OR_RETURN(r.vectors, c->req.Vectors("vectors", VectorShape{static_cast<int>(dim)},
                                             c->limits.max_train_vectors));
  ASSIGN_OR_RETURN(int64_t n_clusters, c->req.Int("n_clusters", 1, 1'000'000));
  ASSIGN_OR_RETURN(std::string metric, c->req.OptionalString("metric_type", "L2", 32));
  ASSIGN_OR_RETURN(int64_t niter, c->req.OptionalInt("niter", 25, 1, 1000));
  if (metric == "L2" || metric == "l2") {
    r.metric = Metric::kL2;
  } else if (metric == "IP" || metric == "ip" || metric == "INNER_PRODUCT") {
    r.metric = Metric::kInnerProduct;
  } else {
    return InvalidArgument("metric_type: unknown metric '" + metric + "' (expected L2 or IP)");
  }
  r.n_clusters = static_cast<int>(n_clusters);
  r.niter = static_cast<int>(niter);
  c->service.Cluster(c->call, std::move(r),
                     Reply<ClusteringResult>(c, [c, n_clusters](ClusteringResult& k) {
                       c->out.Matrix("centroids", k.centroids, false);
                       c->out.Ints("assignments", k.assignments.data(), k.assignments.size());
                       c->out.Ints("cluster_sizes", k.cluster_sizes.data(), k.cluster_sizes.size());
                       c->out.Double("obj", k.objective);
                       c->out.Int("n_clusters", n_clusters);
                       return Status::Ok();
                     }));
  return Status::Ok();
}

// FAISSx's optimize_index: tunes the search parameters of IVF and HNSW indexes by level.
Status OptimizeIndex(const Call& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(int64_t level, c->req.OptionalInt("optimization_level", 1, 1, 3));
  c->service.Describe(c->call, name, [c, name, level](StatusOr<CollectionInfo> info) {
    if (!info.ok()) return c->finish(info.status());
    auto reply = [c, name, level, type = info->spec.index_type](const std::string& done) {
      c->out.Str("message", "Applied 1 optimizations to index " + name);
      c->out.Str("index_type", type);
      c->out.Key("optimizations").pack(std::vector<std::string>{done});
      c->out.Int("optimization_level", level);
      c->finish(Status::Ok());
    };
    MaintainRequest r;
    r.op = MaintainRequest::Op::kSetParameter;
    r.collection = name;
    if (info->spec.nlist > 0 && !info->spec.binary) {
      const int nlist = info->spec.nlist;
      r.parameter = "nprobe";
      r.value = level == 1   ? std::max(1, std::min(10, nlist / 10))
                : level == 2 ? std::max(1, std::min(50, nlist / 5))
                             : std::max(1, std::min(100, nlist / 2));
    } else if (info->spec.hnsw_m > 0) {
      r.parameter = "efSearch";
      r.value = level == 1 ? 40 : level == 2 ? 80 : 120;
    } else {
      return reply("no_optimization_needed");
    }
    const std::string done = "set_" + r.parameter + "_" + std::to_string(static_cast<int>(r.value));
    c->service.Maintain(c->call, std::move(r), [c, reply, done](StatusOr<MaintainReply> m) {
      if (!m.ok()) return c->finish(m.status());
      reply(done);
    });
  });
  return Status::Ok();
}

Status GetTransformInfo(const Call& c) {
  ReadRequest r;
  r.op = ReadRequest::Op::kTransforms;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  const std::string name = r.collection;
  c->service.Read(c->call, std::move(r), Reply<ReadReply>(c, [c, name](ReadReply& t) -> Status {
                    const std::vector<TransformStep>& steps = t.transforms;
                    if (steps.empty()) {
                      return InvalidArgument("index_id: index '" + name +
                                             "' has no vector transform (create it "
                                             "with a factory string such as 'PCA64,IVF256,Flat')");
                    }
                    bool trained = t.value != 0;
                    auto& p = c->out.Key("transforms");
                    p.pack_array(static_cast<uint32_t>(steps.size()));
                    for (const auto& s : steps) {
                      trained = trained && s.is_trained;
                      p.pack_map(4);
                      p.pack("type"), p.pack(s.type);
                      p.pack("input_dim"), p.pack(s.d_in);
                      p.pack("output_dim"), p.pack(s.d_out);
                      p.pack("is_trained"), p.pack(s.is_trained);
                    }
                    c->out.Str("index_id", name);
                    c->out.Str("type", "IndexPreTransform");
                    c->out.Int("input_dimension", t.layout.dim);
                    c->out.Int("output_dimension", steps.back().d_out);
                    c->out.Int("chain_size", static_cast<int64_t>(steps.size()));
                    c->out.Bool("is_trained", trained);
                    return Status::Ok();
                  }));
  return Status::Ok();
}

Status ApplyTransform(const Call& c) {
  ASSIGN_OR_RETURN(std::string name, IndexId(c));
  ASSIGN_OR_RETURN(bool binary, c->req.OptionalBool("binary", false));
  return WithVectors(
      c, name, "vectors", c->limits.max_add_vectors, [c, name, binary](FloatMatrix x) -> Status {
        ReadRequest r;
        r.op = ReadRequest::Op::kApplyTransform;
        r.collection = name;
        const int64_t rows = x.rows, cols = x.cols;
        r.vectors = std::move(x);
        c->service.Read(c->call, std::move(r),
                        Reply<ReadReply>(c, [c, name, binary, rows, cols](ReadReply& y) {
                          c->out.Str("index_id", name);
                          c->out.Int("input_vectors", rows);
                          c->out.Int("input_dimension", cols);
                          c->out.Int("output_dimension", y.vectors.cols);
                          c->out.Matrix("transformed_vectors", y.vectors, binary);
                          return Status::Ok();
                        }));
        return Status::Ok();
      });
}

// FAISSx's recluster_index: new coarse clusters for an IVF index, vectors and ids kept.
Status ReclusterIndex(const Call& c) {
  MaintainRequest r;
  r.op = MaintainRequest::Op::kRecluster;
  ASSIGN_OR_RETURN(r.collection, IndexId(c));
  ASSIGN_OR_RETURN(int64_t n_clusters, c->req.OptionalInt("n_clusters", 0, 1, 1 << 20));
  r.n_clusters = static_cast<int>(n_clusters);
  ASSIGN_OR_RETURN(r.sample_ratio, c->req.OptionalNumber("sample_ratio", 0.5));
  const std::string name = r.collection;
  c->service.Maintain(c->call, std::move(r), Reply<MaintainReply>(c, [c, name](MaintainReply& m) {
                        const ReclusterResult& k = m.recluster;
                        c->out.Str("index_id", name);
                        c->out.Int("previous_nlist", k.previous_nlist);
                        c->out.Int("new_nlist", k.new_nlist);
                        c->out.Int("ntotal", k.ntotal);
                        c->out.Str("message", "Index " + name + " reclustered into " +
                                                  std::to_string(k.new_nlist) + " lists");
                        return Status::Ok();
                      }));
  return Status::Ok();
}

// vecgpu's `snapshot` (an extension): a snapshot now, so that the next start replays no log
// for it. A tenant's key snapshots that tenant's indexes; an admin key (or any caller without
// auth) the whole directory. Indexes unchanged since the last snapshot cost nothing; an index
// being written keeps its last snapshot and the log after it.
Status TakeSnapshot(const Call& c) {
  c->service.Snapshot(c->call, Reply<SnapshotReport>(c, [c](SnapshotReport& r) {
                        c->out.Str("scope", c->call.admin ? "all" : "tenant");
                        c->out.Int("busy", r.busy);
                        c->out.Int("seq", static_cast<int64_t>(r.cut));
                        c->out.Int("written", r.written);
                        c->out.Int("unchanged", r.unchanged);
                        c->out.Int("bytes", r.bytes);
                        c->out.Double("seconds", r.seconds);
                        c->out.Double("max_write_pause_seconds", r.max_pause_seconds);
                        return Status::Ok();
                      }));
  return Status::Ok();
}

// vecgpu's `usage` (an extension): the caller's tenant's use of what its quotas bound, and the
// quotas (0: no limit), as "usage"; an admin key also gets every tenant's, as "tenants".
Status TenantUsage(const Call& c) {
  auto write = [](msgpack::packer<msgpack::sbuffer>& p, const TenantUsageReport& u) {
    p.pack_map(6);
    p.pack("tenant");
    p.pack(u.tenant);
    p.pack("collections");
    p.pack(u.use.collections);
    p.pack("vectors");
    p.pack(u.use.vectors);
    p.pack("bytes");
    p.pack(u.use.bytes);
    p.pack("inflight");
    p.pack(u.use.inflight);
    p.pack("quota");
    p.pack_map(5);
    p.pack("max_vectors");
    p.pack(u.quota.max_vectors);
    p.pack("max_bytes");
    p.pack(u.quota.max_bytes);
    p.pack("max_collections");
    p.pack(u.quota.max_collections);
    p.pack("requests_per_second");
    p.pack(u.quota.requests_per_second);
    p.pack("max_inflight");
    p.pack(u.quota.max_inflight);
  };
  c->service.Usage(c->call, Reply<UsageReply>(c, [c, write](UsageReply& u) {
                     write(c->out.Key("usage"), u.caller);
                     if (c->call.admin) {
                       auto& p = c->out.Key("tenants");
                       p.pack_array(static_cast<uint32_t>(u.tenants.size()));
                       for (const auto& t : u.tenants) write(p, t);
                     }
                     return Status::Ok();
                   }));
  return Status::Ok();
}

}  // namespace vecgpu::server::faissx_handlers
