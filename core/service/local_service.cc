#include "core/service/local_service.h"

#include <memory>
#include <new>
#include <utility>

#include "core/index_spec.h"
#include "core/util/interrupt.h"

namespace vecgpu {
namespace {

Status CancelledCall() { return Cancelled("the call was cancelled by its caller"); }

// Runs fn, turning an escaped allocation failure or exception into a Status.
template <typename T>
StatusOr<T> Guarded(const std::function<StatusOr<T>()>& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("out of memory while serving the request");
  } catch (const std::exception& e) {
    return Internal(std::string("internal error: ") + e.what());
  }
}

}  // namespace

LocalCollectionService::LocalCollectionService(Engine& engine, LocalServiceOptions options)
    : engine_(engine), options_(std::move(options)) {}

Status LocalCollectionService::AdmitWrite() const {
  return options_.admit_writes ? options_.admit_writes() : Status::Ok();
}

template <typename T>
void LocalCollectionService::Queue(const CallContext& call, const std::string* collection,
                                   WorkClass cls, std::function<StatusOr<T>()> fn,
                                   Completion<T> done) {
  if (call.Cancelled()) return done(CancelledCall());
  // Shared by the run and the expiry: the scheduler calls exactly one of them.
  auto finish = std::make_shared<Completion<T>>(std::move(done));
  auto run = [fn = std::move(fn), finish, cancelled = call.cancelled] {
    if (cancelled && cancelled->load()) return (*finish)(CancelledCall());
    StatusOr<T> r = [&] {
      CancelScope scope(cancelled.get());
      return Guarded<T>(fn);
    }();
    if (!r.ok() && cancelled && cancelled->load()) r = CancelledCall();
    (*finish)(std::move(r));
  };
  auto expire = [finish](const Status& st) { (*finish)(st); };
  const Status queued =
      collection ? engine_.Submit(call.tenant, *collection, cls, call.deadline, run, expire)
                 : engine_.SubmitUnbound(call.tenant, cls, call.deadline, run, expire);
  if (!queued.ok()) (*finish)(queued);  // refused before anything was queued
}

void LocalCollectionService::Create(const CallContext& call, CreateCollectionRequest request,
                                    Completion<CollectionInfo> done) {
  if (Status st = AdmitWrite(); !st.ok()) return done(st);
  if (request.keyed) {
    auto spec = ParseIndexType(request.index_type, request.dim, request.metric);
    if (!spec.ok()) return done(spec.status());
    // FAISSx names ("HNSW32", "IVF100") become their factory string under an id map.
    if (spec->id_map == IdMapKind::kNone) request.index_type = "IDMap2," + spec->factory;
    request.metric = std::string(MetricName(spec->metric));
    request.keyed = false;
  }
  const std::string tenant = call.tenant;
  auto fn = [this, tenant, request]() -> StatusOr<CollectionInfo> {
    RETURN_IF_ERROR(AdmitWrite());  // fenced while it waited
    return engine_.Create(tenant, request);
  };
  // An IDMap view is made on its base's queue (it takes the base's storage); any other index
  // on a queue of its own (it logs, waiting for an fsync), so a create never waits for
  // another index's work.
  const std::string base = ViewBaseOf(request.index_type);
  if (!base.empty() && engine_.Layout(tenant, base).ok()) {
    return Queue<CollectionInfo>(call, &base, WorkClass::kShort, fn, std::move(done));
  }
  Queue<CollectionInfo>(call, nullptr, WorkClass::kShort, fn, std::move(done));
}

void LocalCollectionService::Drop(const CallContext& call, std::string collection,
                                  Completion<Empty> done) {
  if (Status st = AdmitWrite(); !st.ok()) return done(st);
  const std::string tenant = call.tenant;
  Queue<Empty>(
      call, &collection, WorkClass::kShort,
      [this, tenant, collection]() -> StatusOr<Empty> {
        RETURN_IF_ERROR(AdmitWrite());
        RETURN_IF_ERROR(engine_.Drop(tenant, collection));
        return Empty{};
      },
      std::move(done));
}

void LocalCollectionService::List(const CallContext& call,
                                  Completion<std::vector<CollectionInfo>> done) {
  if (call.Cancelled()) return done(CancelledCall());
  done(engine_.List(call.tenant));  // from the storages' caches: never waits on a lock
}

void LocalCollectionService::Describe(const CallContext& call, std::string collection,
                                      Completion<CollectionInfo> done) {
  // On the collection's queue: it reflects every write called before it.
  const std::string tenant = call.tenant;
  Queue<CollectionInfo>(
      call, &collection, WorkClass::kShort,
      [this, tenant, collection]() { return engine_.Describe(tenant, collection); },
      std::move(done));
}

void LocalCollectionService::Search(const CallContext& call, SearchRequest request,
                                    Completion<SearchReply> done) {
  if (call.Cancelled()) return done(CancelledCall());
  const std::string tenant = call.tenant;
  const std::string name = request.collection;
  if (request.kind == SearchRequest::Kind::kKnn) {
    auto finish = std::make_shared<Completion<SearchReply>>(std::move(done));
    const bool with_keys = request.with_keys;
    const Status queued = engine_.SubmitSearch(
        tenant, name, std::move(request.queries), request.k, request.params, call.deadline,
        [this, tenant, name, with_keys, finish](StatusOr<SearchResult> r) {
          if (!r.ok()) return (*finish)(r.status());
          SearchReply reply;
          reply.knn = std::move(*r);
          if (with_keys) {
            // On the worker, while the collection's queue still holds this search: no write
            // comes between the search and its keys.
            auto keys = engine_.KeysOf(tenant, name, reply.knn.labels);
            if (!keys.ok()) return (*finish)(keys.status());
            reply.keys = std::move(*keys);
          }
          (*finish)(std::move(reply));
        });
    if (!queued.ok()) (*finish)(queued);
    return;
  }
  auto req = std::make_shared<SearchRequest>(std::move(request));
  Queue<SearchReply>(
      call, &name, WorkClass::kShort,
      [this, tenant, req]() -> StatusOr<SearchReply> {
        SearchReply reply;
        if (req->kind == SearchRequest::Kind::kRange) {
          ASSIGN_OR_RETURN(reply.range, engine_.RangeSearch(tenant, req->collection, req->queries,
                                                            req->radius, req->params));
          return reply;
        }
        ASSIGN_OR_RETURN(SearchAndReconstructResult r,
                         engine_.SearchAndReconstruct(tenant, req->collection, req->queries, req->k,
                                                      req->params));
        reply.knn = std::move(r.result);
        reply.vectors = std::move(r.vectors);
        return reply;
      },
      std::move(done));
}

void LocalCollectionService::Write(const CallContext& call, WriteRequest request,
                                   Completion<WriteReply> done) {
  if (call.Cancelled()) return done(CancelledCall());
  if (Status st = AdmitWrite(); !st.ok()) return done(st);
  const std::string tenant = call.tenant;
  const std::string name = request.collection;
  const int64_t rows =
      std::max<int64_t>(request.vectors.rows, static_cast<int64_t>(request.objects.size()));
  const WorkClass cls = rows >= options_.long_add_rows ? WorkClass::kLong : WorkClass::kShort;
  using Op = WriteRequest::Op;
  if (request.op == Op::kAdd) {
    // Merged with the adds queued right behind it into one backend add.
    auto finish = std::make_shared<Completion<WriteReply>>(std::move(done));
    const Status queued =
        engine_.SubmitAdd(tenant, name, std::move(request.vectors), std::move(request.ids), cls,
                          call.deadline, [finish](StatusOr<AddResult> r) {
                            if (!r.ok()) return (*finish)(r.status());
                            (*finish)(WriteReply{r->count, r->ntotal, {}});
                          });
    if (!queued.ok()) (*finish)(queued);
    return;
  }
  if ((request.op == Op::kReplace && request.ids.size() != 1) ||
      (request.op == Op::kStampKey && request.keys.size() != 1)) {
    return done(InvalidArgument("a replace or restamp names exactly one id"));
  }
  auto req = std::make_shared<WriteRequest>(std::move(request));
  Queue<WriteReply>(
      call, &name, cls,
      [this, tenant, req]() -> StatusOr<WriteReply> {
        RETURN_IF_ERROR(AdmitWrite());
        WriteRequest& r = *req;
        WriteReply reply;
        switch (r.op) {
          case Op::kAdd: {
            break;  // above
          }
          case Op::kRemove: {
            ASSIGN_OR_RETURN(reply.count, engine_.Remove(tenant, r.collection, r.ids));
            ASSIGN_OR_RETURN(CollectionInfo info, engine_.Describe(tenant, r.collection));
            reply.ntotal = info.backend.ntotal;
            return reply;
          }
          case Op::kReplace: {
            RETURN_IF_ERROR(engine_.Replace(tenant, r.collection, r.ids[0], r.vectors));
            reply.count = 1;
            return reply;
          }
          case Op::kReset: {
            RETURN_IF_ERROR(engine_.Reset(tenant, r.collection));
            return reply;
          }
          case Op::kPutKeyed: {
            reply.count = static_cast<int64_t>(r.objects.size());
            RETURN_IF_ERROR(engine_.PutKeyed(tenant, r.collection, std::move(r.objects), r.mode,
                                             r.skip_strict));
            return reply;
          }
          case Op::kRemoveKeyed: {
            RETURN_IF_ERROR(engine_.RemoveKeyed(tenant, r.collection, r.keys));
            reply.count = static_cast<int64_t>(r.keys.size());
            return reply;
          }
          case Op::kRemoveKeyedWhere: {
            ASSIGN_OR_RETURN(reply.keys,
                             engine_.RemoveKeyedWhere(tenant, r.collection, r.conditions));
            reply.count = static_cast<int64_t>(reply.keys.size());
            return reply;
          }
          case Op::kStampKey: {
            RETURN_IF_ERROR(
                engine_.StampKey(tenant, r.collection, r.keys[0], r.timestamp, r.force));
            return reply;
          }
        }
        return InvalidArgument("write: unknown operation");
      },
      std::move(done));
}

void LocalCollectionService::Read(const CallContext& call, ReadRequest request,
                                  Completion<ReadReply> done) {
  if (call.Cancelled()) return done(CancelledCall());
  const std::string tenant = call.tenant;
  using Op = ReadRequest::Op;
  if (request.op == Op::kLayout) {  // cached: no index lock
    auto layout = engine_.Layout(tenant, request.collection);
    if (!layout.ok()) return done(layout.status());
    ReadReply reply;
    reply.layout = *layout;
    return done(std::move(reply));
  }
  const std::string name = request.collection;
  auto req = std::make_shared<ReadRequest>(std::move(request));
  Queue<ReadReply>(
      call, &name, WorkClass::kShort,
      [this, tenant, req]() -> StatusOr<ReadReply> {
        const ReadRequest& r = *req;
        const std::string& n = r.collection;
        ReadReply reply;
        switch (r.op) {
          case Op::kLayout: {
            ASSIGN_OR_RETURN(reply.layout, engine_.Layout(tenant, n));
            return reply;
          }
          case Op::kReconstruct: {
            ASSIGN_OR_RETURN(reply.vectors, engine_.Reconstruct(tenant, n, r.ids));
            return reply;
          }
          case Op::kRange: {
            ASSIGN_OR_RETURN(CollectionInfo info, engine_.Describe(tenant, n));
            reply.ntotal = info.backend.ntotal;
            const int64_t remaining = std::max<int64_t>(0, reply.ntotal - r.start);
            const int64_t count = r.count >= 0 ? std::min(r.count, remaining) : remaining;
            if (count > engine_.limits().max_fetch_vectors) {
              return InvalidArgument("limit: " + std::to_string(count) +
                                     " vectors, above the limit of " +
                                     std::to_string(engine_.limits().max_fetch_vectors) +
                                     " per call; page with start_idx and limit");
            }
            ASSIGN_OR_RETURN(reply.vectors,
                             engine_.ReconstructRange(tenant, n, r.start, count, &reply.ids));
            return reply;
          }
          case Op::kParameter: {
            ASSIGN_OR_RETURN(reply.value, engine_.GetParameter(tenant, n, r.parameter));
            return reply;
          }
          case Op::kTransforms: {
            ASSIGN_OR_RETURN(reply.transforms, engine_.Transforms(tenant, n));
            ASSIGN_OR_RETURN(CollectionInfo info, engine_.Describe(tenant, n));
            reply.ntotal = info.backend.ntotal;
            reply.layout.dim = info.spec.dim;
            reply.value = info.backend.is_trained ? 1 : 0;
            return reply;
          }
          case Op::kApplyTransform: {
            ASSIGN_OR_RETURN(reply.vectors, engine_.ApplyTransform(tenant, n, r.vectors));
            return reply;
          }
          case Op::kGetKeyed: {
            if (r.keys.size() != 1) return InvalidArgument("get: name exactly one id");
            ASSIGN_OR_RETURN(KeyedObject o, engine_.GetKeyed(tenant, n, r.keys[0]));
            reply.objects.push_back(std::move(o));
            return reply;
          }
          case Op::kKeyTimestamp: {
            if (r.keys.size() != 1) return InvalidArgument("exists: name exactly one id");
            ASSIGN_OR_RETURN(reply.timestamp, engine_.KeyTimestamp(tenant, n, r.keys[0]));
            return reply;
          }
          case Op::kListKeyed: {
            ASSIGN_OR_RETURN(reply.objects,
                             engine_.ListKeyed(tenant, n, r.start, r.count, &reply.last_id,
                                               &reply.ids));
            return reply;
          }
          case Op::kCountKeyed: {
            ASSIGN_OR_RETURN(reply.count, engine_.CountKeyed(tenant, n));
            return reply;
          }
          case Op::kKeysOf: {
            ASSIGN_OR_RETURN(reply.keys, engine_.KeysOf(tenant, n, r.ids));
            return reply;
          }
        }
        return InvalidArgument("read: unknown operation");
      },
      std::move(done));
}

void LocalCollectionService::Maintain(const CallContext& call, MaintainRequest request,
                                      Completion<MaintainReply> done) {
  if (Status st = AdmitWrite(); !st.ok()) return done(st);
  const std::string tenant = call.tenant;
  const std::string name = request.collection;
  using Op = MaintainRequest::Op;
  const WorkClass cls = request.op == Op::kSetParameter ? WorkClass::kShort : WorkClass::kLong;
  auto req = std::make_shared<MaintainRequest>(std::move(request));
  Queue<MaintainReply>(
      call, &name, cls,
      [this, tenant, req]() -> StatusOr<MaintainReply> {
        RETURN_IF_ERROR(AdmitWrite());
        const MaintainRequest& r = *req;
        MaintainReply reply;
        switch (r.op) {
          case Op::kTrain: {
            ASSIGN_OR_RETURN(reply.info, engine_.Train(tenant, r.collection, r.vectors));
            return reply;
          }
          case Op::kRecluster: {
            ASSIGN_OR_RETURN(reply.recluster,
                             engine_.Recluster(tenant, r.collection, r.n_clusters, r.sample_ratio));
            return reply;
          }
          case Op::kMerge: {
            if (r.sources.empty()) {
              return InvalidArgument("source_index_ids: no source indexes given");
            }
            ASSIGN_OR_RETURN(reply.ntotal, engine_.Merge(tenant, r.collection, r.sources));
            return reply;
          }
          case Op::kSetParameter: {
            RETURN_IF_ERROR(engine_.SetParameter(tenant, r.collection, r.parameter, r.value));
            return reply;
          }
        }
        return InvalidArgument("maintain: unknown operation");
      },
      std::move(done));
}

void LocalCollectionService::Cluster(const CallContext& call, ClusterRequest request,
                                     Completion<ClusteringResult> done) {
  auto req = std::make_shared<ClusterRequest>(std::move(request));
  Queue<ClusteringResult>(
      call, nullptr, WorkClass::kLong,
      [this, req]() {
        return engine_.Cluster(req->vectors, req->n_clusters, req->metric, req->niter);
      },
      std::move(done));
}

void LocalCollectionService::Snapshot(const CallContext& call, Completion<SnapshotReport> done) {
  if (!options_.snapshot) {
    return done(Unimplemented("snapshot: this server keeps no data directory (--data-dir)"));
  }
  // A tenant's snapshot covers its own collections; an admin's every tenant's.
  const std::string scope = call.admin ? "" : call.tenant;
  Queue<SnapshotReport>(
      call, nullptr, WorkClass::kLong, [this, scope]() { return options_.snapshot(scope); },
      std::move(done));
}

TenantUsageReport LocalCollectionService::UsageOf(const std::string& tenant) const {
  TenantUsageReport r;
  r.tenant = tenant;
  r.use = engine_.UseOf(tenant);
  if (options_.quotas) {
    r.quota = options_.quotas->Of(tenant);
    r.use.inflight = options_.quotas->inflight(tenant);
  }
  if (r.quota.max_collections == 0)
    r.quota.max_collections = engine_.limits().max_collections_per_tenant;
  return r;
}

void LocalCollectionService::Usage(const CallContext& call, Completion<UsageReply> done) {
  if (call.Cancelled()) return done(CancelledCall());
  UsageReply reply;  // from the storages' caches: never waits on a lock
  reply.caller = UsageOf(call.tenant);
  if (call.admin) {
    for (const auto& u : engine_.Usage()) reply.tenants.push_back(UsageOf(u.tenant));
  }
  done(std::move(reply));
}

}  // namespace vecgpu
