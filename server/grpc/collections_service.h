#pragma once

#include "server/grpc/call_scope.h"
#include "vecgpu/v1/collections.grpc.pb.h"

namespace vecgpu::server {

// vecgpu.v1.Collections: the FAISSx protocol's create_index / delete_index / list_indexes /
// get_index_info and snapshot, for the caller's tenant (collections are named in the request,
// not by x-vecgpu-collection). Stateless beyond its GrpcEnv; thread-safe.
class CollectionsService final : public ::vecgpu::v1::Collections::Service {
 public:
  explicit CollectionsService(const GrpcEnv& env) : env_(env) {}
  grpc::Status Create(grpc::ServerContext* c, const ::vecgpu::v1::CreateRequest* req,
                      ::vecgpu::v1::Collection* out) override;
  grpc::Status Delete(grpc::ServerContext* c, const ::vecgpu::v1::NameRequest* req,
                      ::vecgpu::v1::DeleteResponse* out) override;
  grpc::Status List(grpc::ServerContext* c, const ::vecgpu::v1::ListRequest* req,
                    ::vecgpu::v1::ListResponse* out) override;
  grpc::Status Describe(grpc::ServerContext* c, const ::vecgpu::v1::NameRequest* req,
                        ::vecgpu::v1::Collection* out) override;
  grpc::Status Snapshot(grpc::ServerContext* c, const ::vecgpu::v1::SnapshotRequest* req,
                        ::vecgpu::v1::SnapshotResponse* out) override;

 private:
  const GrpcEnv& env_;
};

}  // namespace vecgpu::server
