#include "server/grpc/collections_service.h"

#include "server/grpc/service_call.h"

namespace vecgpu::server {
namespace {

namespace v1 = ::vecgpu::v1;

void Fill(const CollectionInfo& info, v1::Collection* out) {
  out->set_name(info.name);
  out->set_index_type(info.spec.index_type);
  out->set_dimension(info.spec.dim);
  out->set_metric(std::string(MetricName(info.spec.metric)));
  out->set_kind(info.spec.kind());
  out->set_ntotal(info.backend.ntotal);
  out->set_is_trained(info.backend.is_trained);
  out->set_device(info.backend.device);
  out->set_placement(info.backend.placement);
  out->set_nlist(info.spec.nlist);
  if (info.spec.nlist) out->set_nprobe(info.backend.nprobe);
  out->set_memory_bytes(info.backend.memory_bytes);
}

}  // namespace

grpc::Status CollectionsService::Create(grpc::ServerContext* c, const v1::CreateRequest* req,
                                        v1::Collection* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  if (req->dimension() < 1 || req->dimension() > env_.limits.max_dimension) {
    return ToGrpc(InvalidArgument("dimension: " + std::to_string(req->dimension()) +
                                  " is not within 1.." +
                                  std::to_string(env_.limits.max_dimension)));
  }
  CreateCollectionRequest r;
  r.name = req->name();
  r.index_type = req->index_type().empty() ? "L2" : req->index_type();
  r.dim = req->dimension();
  r.metric = req->metric();
  r.device = req->device();
  if (req->shards() < 0 || req->shards() > 64 || req->replicas() < 0 || req->replicas() > 64) {
    return ToGrpc(InvalidArgument("shards, replicas: must be within 0..64"));
  }
  r.shards = req->shards();
  r.replicas = req->replicas();
  auto info = ServiceCall(env_, *c, *scope).Create(std::move(r));
  if (!info.ok()) return ToGrpc(info.status());
  Fill(*info, out);
  return grpc::Status::OK;
}

grpc::Status CollectionsService::Delete(grpc::ServerContext* c, const v1::NameRequest* req,
                                        v1::DeleteResponse*) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  return ToGrpc(ServiceCall(env_, *c, *scope).Drop(req->name()));
}

grpc::Status CollectionsService::List(grpc::ServerContext* c, const v1::ListRequest*,
                                      v1::ListResponse* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  auto list = ServiceCall(env_, *c, *scope).List();
  if (!list.ok()) return ToGrpc(list.status());
  for (const CollectionInfo& info : *list) Fill(info, out->add_collections());
  return grpc::Status::OK;
}

grpc::Status CollectionsService::Describe(grpc::ServerContext* c, const v1::NameRequest* req,
                                          v1::Collection* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  auto info = ServiceCall(env_, *c, *scope).Describe(req->name());
  if (!info.ok()) return ToGrpc(info.status());
  Fill(*info, out);
  return grpc::Status::OK;
}

grpc::Status CollectionsService::Snapshot(grpc::ServerContext* c, const v1::SnapshotRequest*,
                                          v1::SnapshotResponse* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  auto r = ServiceCall(env_, *c, *scope).Snapshot();
  if (!r.ok()) return ToGrpc(r.status());
  out->set_seq(r->cut);
  out->set_written(r->written);
  out->set_unchanged(r->unchanged);
  out->set_bytes(r->bytes);
  out->set_seconds(r->seconds);
  out->set_max_write_pause_seconds(r->max_pause_seconds);
  return grpc::Status::OK;
}

}  // namespace vecgpu::server
