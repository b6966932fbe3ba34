#pragma once

// The service contract's values (core/service/collection_service.h) to and from the agent
// API's messages (proto/vecgpu/agent/v1/agent.proto), one function pair per value. Decoding
// checks what a peer could get wrong (matrix sizes, enum ranges) and refuses it with
// INVALID_ARGUMENT naming the field.

#include "core/service/collection_service.h"

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too.
#include "vecgpu/agent/v1/agent.pb.h"

namespace vecgpu::cluster {

namespace apb = ::vecgpu::agent::v1;

// The agent API version this build speaks; an agent refuses a call of another.
constexpr int kAgentApiVersion = 3;  // 3: chunked Install; agents say theirs in etcd

void ToPb(const CallContext& c, apb::Context* out);
// The context of a call received: its deadline from the milliseconds left when it was sent.
StatusOr<CallContext> FromPb(const apb::Context& c);

void ToPb(const FloatMatrix& m, apb::Matrix* out);
StatusOr<FloatMatrix> FromPb(const apb::Matrix& m, const char* field);

void ToPb(const CollectionInfo& i, apb::CollectionInfo* out);
CollectionInfo FromPb(const apb::CollectionInfo& i);

void ToPb(const CreateCollectionRequest& r, apb::CreateRequest* out);
CreateCollectionRequest FromPb(const apb::CreateRequest& r);

void ToPb(const SearchRequest& r, apb::SearchRequest* out);
StatusOr<SearchRequest> FromPb(const apb::SearchRequest& r);
void ToPb(const SearchReply& r, apb::SearchReply* out);
StatusOr<SearchReply> FromPb(const apb::SearchReply& r);

void ToPb(const WriteRequest& r, apb::WriteRequest* out);
StatusOr<WriteRequest> FromPb(const apb::WriteRequest& r);
void ToPb(const WriteReply& r, apb::WriteReply* out);
WriteReply FromPb(const apb::WriteReply& r);

void ToPb(const ReadRequest& r, apb::ReadRequest* out);
StatusOr<ReadRequest> FromPb(const apb::ReadRequest& r);
void ToPb(const ReadReply& r, apb::ReadReply* out);
StatusOr<ReadReply> FromPb(const apb::ReadReply& r);

void ToPb(const MaintainRequest& r, apb::MaintainRequest* out);
StatusOr<MaintainRequest> FromPb(const apb::MaintainRequest& r);
void ToPb(const MaintainReply& r, apb::MaintainReply* out);
MaintainReply FromPb(const apb::MaintainReply& r);

void ToPb(const ClusterRequest& r, apb::ClusterRequest* out);
StatusOr<ClusterRequest> FromPb(const apb::ClusterRequest& r);
void ToPb(const ClusteringResult& r, apb::ClusterReply* out);
StatusOr<ClusteringResult> FromPb(const apb::ClusterReply& r);

void ToPb(const SnapshotReport& r, apb::SnapshotReply* out);
SnapshotReport FromPb(const apb::SnapshotReply& r);

void ToPb(const UsageReply& r, apb::UsageReply* out);
UsageReply FromPb(const apb::UsageReply& r);

}  // namespace vecgpu::cluster
