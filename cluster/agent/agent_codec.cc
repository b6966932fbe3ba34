#include "cluster/agent/agent_codec.h"

#include <chrono>

namespace vecgpu::cluster {
namespace {

template <typename E>
StatusOr<E> EnumOf(int v, int last, const char* field) {
  if (v < 0 || v > last) {
    return InvalidArgument(std::string(field) + ": unknown value " + std::to_string(v));
  }
  return static_cast<E>(v);
}

template <typename T, typename R>
std::vector<T> Vec(const R& repeated) {
  return std::vector<T>(repeated.begin(), repeated.end());
}

void ToPb(const KeyedObject& o, apb::KeyedObject* out) {
  out->set_key(o.key);
  out->mutable_vector()->Assign(o.vector.begin(), o.vector.end());
  out->set_timestamp(o.timestamp);
  out->set_skip_strict(o.skip_strict);
}

KeyedObject FromPb(const apb::KeyedObject& o) {
  return {o.key(), Vec<float>(o.vector()), o.timestamp(), o.skip_strict()};
}

void ToPb(const TenantUsageReport& u, apb::TenantUsage* out) {
  out->set_tenant(u.tenant);
  out->set_collections(u.use.collections);
  out->set_vectors(u.use.vectors);
  out->set_bytes(u.use.bytes);
  out->set_inflight(u.use.inflight);
  out->set_max_vectors(u.quota.max_vectors);
  out->set_max_bytes(u.quota.max_bytes);
  out->set_max_collections(u.quota.max_collections);
  out->set_requests_per_second(u.quota.requests_per_second);
  out->set_max_inflight(u.quota.max_inflight);
}

TenantUsageReport FromPb(const apb::TenantUsage& u) {
  TenantUsageReport r;
  r.tenant = u.tenant();
  r.use = {u.collections(), u.vectors(), u.bytes(), u.inflight()};
  r.quota.max_vectors = u.max_vectors();
  r.quota.max_bytes = u.max_bytes();
  r.quota.max_collections = u.max_collections();
  r.quota.requests_per_second = u.requests_per_second();
  r.quota.max_inflight = u.max_inflight();
  return r;
}

}  // namespace

void ToPb(const CallContext& c, apb::Context* out) {
  out->set_tenant(c.tenant);
  out->set_admin(c.admin);
  out->set_api_version(kAgentApiVersion);
  out->set_shard_epoch(c.shard_epoch);
  if (c.deadline != Clock::time_point::max()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - Clock::now()).count();
    out->set_deadline_ms(std::max<int64_t>(left, 1));  // passed: the least, still a deadline
  }
}

StatusOr<CallContext> FromPb(const apb::Context& c) {
  if (c.api_version() != kAgentApiVersion) {
    return FailedPrecondition("agent API version " + std::to_string(c.api_version()) +
                              " is not this agent's (" + std::to_string(kAgentApiVersion) + ")");
  }
  CallContext out;
  out.tenant = c.tenant();
  out.admin = c.admin();
  out.shard_epoch = c.shard_epoch();
  if (c.deadline_ms() > 0) out.deadline = Clock::now() + std::chrono::milliseconds(c.deadline_ms());
  out.cancelled = std::make_shared<std::atomic<bool>>(false);
  return out;
}

void ToPb(const FloatMatrix& m, apb::Matrix* out) {
  out->set_rows(m.rows);
  out->set_cols(m.cols);
  out->mutable_data()->Assign(m.data.begin(), m.data.end());
}

StatusOr<FloatMatrix> FromPb(const apb::Matrix& m, const char* field) {
  if (m.rows() < 0 || m.cols() < 0 ||
      (m.cols() > 0 && m.rows() > static_cast<int64_t>(m.data_size()) / m.cols()) ||
      m.rows() * m.cols() != m.data_size()) {
    return InvalidArgument(std::string(field) + ": " + std::to_string(m.rows()) + " x " +
                           std::to_string(m.cols()) + " does not match its " +
                           std::to_string(m.data_size()) + " values");
  }
  FloatMatrix out;
  out.rows = m.rows();
  out.cols = m.cols();
  out.data = Vec<float>(m.data());
  return out;
}

void ToPb(const CollectionInfo& i, apb::CollectionInfo* out) {
  out->set_name(i.name);
  apb::IndexSpec* s = out->mutable_spec();
  s->set_index_type(i.spec.index_type);
  s->set_factory(i.spec.factory);
  s->set_metric(static_cast<int>(i.spec.metric));
  s->set_dim(i.spec.dim);
  s->set_binary(i.spec.binary);
  s->set_id_map(static_cast<int>(i.spec.id_map));
  s->set_base_index_id(i.spec.base_index_id);
  s->set_nlist(i.spec.nlist);
  s->set_hnsw_m(i.spec.hnsw_m);
  s->set_pq_m(i.spec.pq_m);
  s->set_pq_nbits(i.spec.pq_nbits);
  s->set_sq_bits(i.spec.sq_bits);
  apb::BackendInfo* b = out->mutable_backend();
  b->set_ntotal(i.backend.ntotal);
  b->set_is_trained(i.backend.is_trained);
  b->set_device(i.backend.device);
  b->set_placement(i.backend.placement);
  b->set_replica(i.backend.replica);
  b->set_gpu_memory_bytes(i.backend.gpu_memory_bytes);
  b->set_memory_bytes(i.backend.memory_bytes);
  b->set_nprobe(i.backend.nprobe);
  b->set_ef_search(i.backend.ef_search);
  b->set_ef_construction(i.backend.ef_construction);
  out->set_searches(i.searches);
  out->set_queries(i.queries);
  out->set_adds(i.adds);
  out->set_vectors_added(i.vectors_added);
  out->set_removals(i.removals);
  out->set_search_micros(i.search_micros);
}

CollectionInfo FromPb(const apb::CollectionInfo& i) {
  CollectionInfo out;
  out.name = i.name();
  const apb::IndexSpec& s = i.spec();
  out.spec.index_type = s.index_type();
  out.spec.factory = s.factory();
  out.spec.metric = s.metric() == 1 ? Metric::kInnerProduct : Metric::kL2;
  out.spec.dim = s.dim();
  out.spec.binary = s.binary();
  out.spec.id_map = s.id_map() == 1   ? IdMapKind::kIdMap
                    : s.id_map() == 2 ? IdMapKind::kIdMap2
                                      : IdMapKind::kNone;
  out.spec.base_index_id = s.base_index_id();
  out.spec.nlist = s.nlist();
  out.spec.hnsw_m = s.hnsw_m();
  out.spec.pq_m = s.pq_m();
  out.spec.pq_nbits = s.pq_nbits();
  out.spec.sq_bits = s.sq_bits();
  const apb::BackendInfo& b = i.backend();
  out.backend.ntotal = b.ntotal();
  out.backend.is_trained = b.is_trained();
  out.backend.device = b.device();
  out.backend.placement = b.placement();
  out.backend.replica = b.replica();
  out.backend.gpu_memory_bytes = b.gpu_memory_bytes();
  out.backend.memory_bytes = b.memory_bytes();
  out.backend.nprobe = b.nprobe();
  out.backend.ef_search = b.ef_search();
  out.backend.ef_construction = b.ef_construction();
  out.searches = i.searches();
  out.queries = i.queries();
  out.adds = i.adds();
  out.vectors_added = i.vectors_added();
  out.removals = i.removals();
  out.search_micros = i.search_micros();
  return out;
}

void ToPb(const CreateCollectionRequest& r, apb::CreateRequest* out) {
  out->set_name(r.name);
  out->set_index_type(r.index_type);
  out->set_dim(r.dim);
  out->set_metric(r.metric);
  out->set_device(r.device);
  out->set_keyed(r.keyed);
}

CreateCollectionRequest FromPb(const apb::CreateRequest& r) {
  CreateCollectionRequest out{r.name(), r.index_type(), r.dim(), r.metric(), r.device()};
  out.keyed = r.keyed();
  return out;
}

void ToPb(const SearchRequest& r, apb::SearchRequest* out) {
  out->set_kind(static_cast<int>(r.kind));
  out->set_collection(r.collection);
  ToPb(r.queries, out->mutable_queries());
  out->set_k(r.k);
  out->set_radius(r.radius);
  if (r.params.nprobe) out->mutable_params()->set_nprobe(*r.params.nprobe);
  if (r.params.ef_search) out->mutable_params()->set_ef_search(*r.params.ef_search);
  out->set_with_keys(r.with_keys);
}

StatusOr<SearchRequest> FromPb(const apb::SearchRequest& r) {
  SearchRequest out;
  ASSIGN_OR_RETURN(out.kind, EnumOf<SearchRequest::Kind>(r.kind(), 2, "kind"));
  out.collection = r.collection();
  ASSIGN_OR_RETURN(out.queries, FromPb(r.queries(), "queries"));
  out.k = r.k();
  out.radius = r.radius();
  if (r.params().has_nprobe()) out.params.nprobe = r.params().nprobe();
  if (r.params().has_ef_search()) out.params.ef_search = r.params().ef_search();
  out.with_keys = r.with_keys();
  return out;
}

void ToPb(const SearchReply& r, apb::SearchReply* out) {
  out->set_nq(r.knn.nq);
  out->set_k(r.knn.k);
  out->mutable_distances()->Assign(r.knn.distances.begin(), r.knn.distances.end());
  out->mutable_labels()->Assign(r.knn.labels.begin(), r.knn.labels.end());
  for (const FloatMatrix& m : r.vectors) ToPb(m, out->add_vectors());
  out->mutable_range_lims()->Assign(r.range.lims.begin(), r.range.lims.end());
  out->mutable_range_distances()->Assign(r.range.distances.begin(), r.range.distances.end());
  out->mutable_range_labels()->Assign(r.range.labels.begin(), r.range.labels.end());
  for (const std::string& k : r.keys) out->add_keys(k);
}

StatusOr<SearchReply> FromPb(const apb::SearchReply& r) {
  SearchReply out;
  out.knn.nq = r.nq();
  out.knn.k = r.k();
  out.knn.distances = Vec<float>(r.distances());
  out.knn.labels = Vec<int64_t>(r.labels());
  if (static_cast<int64_t>(out.knn.labels.size()) != out.knn.nq * out.knn.k ||
      out.knn.distances.size() != out.knn.labels.size()) {
    return InvalidArgument("search reply: " + std::to_string(out.knn.labels.size()) +
                           " results for " + std::to_string(out.knn.nq) + " x " +
                           std::to_string(out.knn.k));
  }
  for (const apb::Matrix& m : r.vectors()) {
    ASSIGN_OR_RETURN(FloatMatrix v, FromPb(m, "vectors"));
    out.vectors.push_back(std::move(v));
  }
  out.range.lims = Vec<int64_t>(r.range_lims());
  out.range.distances = Vec<float>(r.range_distances());
  out.range.labels = Vec<int64_t>(r.range_labels());
  out.keys = Vec<std::string>(r.keys());
  return out;
}

void ToPb(const WriteRequest& r, apb::WriteRequest* out) {
  out->set_op(static_cast<int>(r.op));
  out->set_collection(r.collection);
  ToPb(r.vectors, out->mutable_vectors());
  out->mutable_ids()->Assign(r.ids.begin(), r.ids.end());
  for (const KeyedObject& o : r.objects) ToPb(o, out->add_objects());
  out->set_mode(static_cast<int>(r.mode));
  out->set_skip_strict(r.skip_strict);
  for (const std::string& k : r.keys) out->add_keys(k);
  for (const TimestampCondition& c : r.conditions) {
    auto* pc = out->add_conditions();
    pc->set_op(static_cast<int>(c.op));
    pc->set_timestamp(c.timestamp);
  }
  out->set_timestamp(r.timestamp);
  out->set_force(r.force);
}

StatusOr<WriteRequest> FromPb(const apb::WriteRequest& r) {
  WriteRequest out;
  ASSIGN_OR_RETURN(out.op, EnumOf<WriteRequest::Op>(r.op(), 7, "op"));
  out.collection = r.collection();
  ASSIGN_OR_RETURN(out.vectors, FromPb(r.vectors(), "vectors"));
  out.ids = Vec<int64_t>(r.ids());
  for (const auto& o : r.objects()) out.objects.push_back(FromPb(o));
  ASSIGN_OR_RETURN(out.mode, EnumOf<PutMode>(r.mode(), 2, "mode"));
  out.skip_strict = r.skip_strict();
  out.keys = Vec<std::string>(r.keys());
  for (const auto& c : r.conditions()) {
    ASSIGN_OR_RETURN(auto op, EnumOf<TimestampCondition::Op>(c.op(), 5, "conditions.op"));
    out.conditions.push_back({op, c.timestamp()});
  }
  out.timestamp = r.timestamp();
  out.force = r.force();
  return out;
}

void ToPb(const WriteReply& r, apb::WriteReply* out) {
  out->set_count(r.count);
  out->set_ntotal(r.ntotal);
  for (const std::string& k : r.keys) out->add_keys(k);
}

WriteReply FromPb(const apb::WriteReply& r) {
  return {r.count(), r.ntotal(), Vec<std::string>(r.keys())};
}

void ToPb(const ReadRequest& r, apb::ReadRequest* out) {
  out->set_op(static_cast<int>(r.op));
  out->set_collection(r.collection);
  out->mutable_ids()->Assign(r.ids.begin(), r.ids.end());
  out->set_start(r.start);
  out->set_count(r.count);
  out->set_parameter(r.parameter);
  ToPb(r.vectors, out->mutable_vectors());
  for (const std::string& k : r.keys) out->add_keys(k);
}

StatusOr<ReadRequest> FromPb(const apb::ReadRequest& r) {
  ReadRequest out;
  ASSIGN_OR_RETURN(out.op, EnumOf<ReadRequest::Op>(r.op(), 10, "op"));
  out.collection = r.collection();
  out.ids = Vec<int64_t>(r.ids());
  out.start = r.start();
  out.count = r.count();
  out.parameter = r.parameter();
  ASSIGN_OR_RETURN(out.vectors, FromPb(r.vectors(), "vectors"));
  out.keys = Vec<std::string>(r.keys());
  return out;
}

void ToPb(const ReadReply& r, apb::ReadReply* out) {
  out->set_dim(r.layout.dim);
  out->set_binary(r.layout.binary);
  out->set_metric(static_cast<int>(r.layout.metric));
  ToPb(r.vectors, out->mutable_vectors());
  out->mutable_ids()->Assign(r.ids.begin(), r.ids.end());
  out->set_ntotal(r.ntotal);
  out->set_value(r.value);
  for (const TransformStep& t : r.transforms) {
    auto* pt = out->add_transforms();
    pt->set_type(t.type);
    pt->set_d_in(t.d_in);
    pt->set_d_out(t.d_out);
    pt->set_is_trained(t.is_trained);
  }
  for (const KeyedObject& o : r.objects) ToPb(o, out->add_objects());
  out->set_last_id(r.last_id);
  out->set_timestamp(r.timestamp);
  out->set_count(r.count);
  for (const std::string& k : r.keys) out->add_keys(k);
}

StatusOr<ReadReply> FromPb(const apb::ReadReply& r) {
  ReadReply out;
  out.layout.dim = r.dim();
  out.layout.binary = r.binary();
  out.layout.metric = r.metric() == 1 ? Metric::kInnerProduct : Metric::kL2;
  ASSIGN_OR_RETURN(out.vectors, FromPb(r.vectors(), "vectors"));
  out.ids = Vec<int64_t>(r.ids());
  out.ntotal = r.ntotal();
  out.value = r.value();
  for (const auto& t : r.transforms()) {
    out.transforms.push_back({t.type(), t.d_in(), t.d_out(), t.is_trained()});
  }
  for (const auto& o : r.objects()) out.objects.push_back(FromPb(o));
  out.last_id = r.last_id();
  out.timestamp = r.timestamp();
  out.count = r.count();
  out.keys = Vec<std::string>(r.keys());
  return out;
}

void ToPb(const MaintainRequest& r, apb::MaintainRequest* out) {
  out->set_op(static_cast<int>(r.op));
  out->set_collection(r.collection);
  ToPb(r.vectors, out->mutable_vectors());
  out->set_n_clusters(r.n_clusters);
  out->set_sample_ratio(r.sample_ratio);
  for (const std::string& s : r.sources) out->add_sources(s);
  out->set_parameter(r.parameter);
  out->set_value(r.value);
}

StatusOr<MaintainRequest> FromPb(const apb::MaintainRequest& r) {
  MaintainRequest out;
  ASSIGN_OR_RETURN(out.op, EnumOf<MaintainRequest::Op>(r.op(), 3, "op"));
  out.collection = r.collection();
  ASSIGN_OR_RETURN(out.vectors, FromPb(r.vectors(), "vectors"));
  out.n_clusters = r.n_clusters();
  out.sample_ratio = r.sample_ratio();
  out.sources = Vec<std::string>(r.sources());
  out.parameter = r.parameter();
  out.value = r.value();
  return out;
}

void ToPb(const MaintainReply& r, apb::MaintainReply* out) {
  ToPb(r.info, out->mutable_info());
  out->set_previous_nlist(r.recluster.previous_nlist);
  out->set_new_nlist(r.recluster.new_nlist);
  out->set_recluster_ntotal(r.recluster.ntotal);
  out->set_ntotal(r.ntotal);
}

MaintainReply FromPb(const apb::MaintainReply& r) {
  MaintainReply out;
  out.info = FromPb(r.info());
  out.recluster = {r.previous_nlist(), r.new_nlist(), r.recluster_ntotal()};
  out.ntotal = r.ntotal();
  return out;
}

void ToPb(const ClusterRequest& r, apb::ClusterRequest* out) {
  ToPb(r.vectors, out->mutable_vectors());
  out->set_n_clusters(r.n_clusters);
  out->set_metric(static_cast<int>(r.metric));
  out->set_niter(r.niter);
}

StatusOr<ClusterRequest> FromPb(const apb::ClusterRequest& r) {
  ClusterRequest out;
  ASSIGN_OR_RETURN(out.vectors, FromPb(r.vectors(), "vectors"));
  out.n_clusters = r.n_clusters();
  ASSIGN_OR_RETURN(out.metric, EnumOf<Metric>(r.metric(), 1, "metric"));
  out.niter = r.niter();
  return out;
}

void ToPb(const ClusteringResult& r, apb::ClusterReply* out) {
  ToPb(r.centroids, out->mutable_centroids());
  out->mutable_assignments()->Assign(r.assignments.begin(), r.assignments.end());
  out->mutable_cluster_sizes()->Assign(r.cluster_sizes.begin(), r.cluster_sizes.end());
  out->set_objective(r.objective);
}

StatusOr<ClusteringResult> FromPb(const apb::ClusterReply& r) {
  ClusteringResult out;
  ASSIGN_OR_RETURN(out.centroids, FromPb(r.centroids(), "centroids"));
  out.assignments = Vec<int64_t>(r.assignments());
  out.cluster_sizes = Vec<int64_t>(r.cluster_sizes());
  out.objective = r.objective();
  return out;
}

void ToPb(const SnapshotReport& r, apb::SnapshotReply* out) {
  out->set_cut(r.cut);
  out->set_written(r.written);
  out->set_unchanged(r.unchanged);
  out->set_bytes(r.bytes);
  out->set_removed(r.removed);
  out->set_busy(r.busy);
  out->set_out_of_scope(r.out_of_scope);
  out->set_seconds(r.seconds);
  out->set_max_pause_seconds(r.max_pause_seconds);
}

SnapshotReport FromPb(const apb::SnapshotReply& r) {
  SnapshotReport out;
  out.cut = r.cut();
  out.written = r.written();
  out.unchanged = r.unchanged();
  out.bytes = r.bytes();
  out.removed = r.removed();
  out.busy = r.busy();
  out.out_of_scope = r.out_of_scope();
  out.seconds = r.seconds();
  out.max_pause_seconds = r.max_pause_seconds();
  return out;
}

void ToPb(const UsageReply& r, apb::UsageReply* out) {
  ToPb(r.caller, out->mutable_caller());
  for (const TenantUsageReport& t : r.tenants) ToPb(t, out->add_tenants());
}

UsageReply FromPb(const apb::UsageReply& r) {
  UsageReply out;
  out.caller = FromPb(r.caller());
  for (const auto& t : r.tenants()) out.tenants.push_back(FromPb(t));
  return out;
}

}  // namespace vecgpu::cluster
