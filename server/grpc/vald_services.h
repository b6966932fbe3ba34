#pragma once

// The Vald v1 API (package vald.v1, and core.v1.Agent) over the service contract: every service here is
// a few lines per RPC around one shared function. Semantics: README "gRPC and the Vald API".
// Each class is stateless beyond its GrpcEnv and thread-safe (gRPC calls them from many
// threads).

#include "server/grpc/call_scope.h"
#include "server/grpc/stream_reactor.h"
#include "vald/v1/agent/core/agent.grpc.pb.h"
#include "vald/v1/vald/flush.grpc.pb.h"
#include "vald/v1/vald/index.grpc.pb.h"
#include "vald/v1/vald/insert.grpc.pb.h"
#include "vald/v1/vald/object.grpc.pb.h"
#include "vald/v1/vald/remove.grpc.pb.h"
#include "vald/v1/vald/search.grpc.pb.h"
#include "vald/v1/vald/update.grpc.pb.h"
#include "vald/v1/vald/upsert.grpc.pb.h"

namespace vecgpu::server {

namespace pb = ::payload::v1;
using grpc::ServerContext;
template <typename Request, typename Response>
using Stream = grpc::ServerBidiReactor<Request, Response>;
using grpc::CallbackServerContext;

// Insert, Update, Upsert and Remove (server/grpc/vald_write_service.cc).
// Unary calls run on gRPC's synchronous threads while they work (bounded by
// --grpc-max-threads); streams run on its callback API (server/grpc/stream_reactor.h), so an
// open stream holds no thread while it waits for its client.
class ValdInsertService final
    : public ::vald::v1::Insert::WithCallbackMethod_StreamInsert<::vald::v1::Insert::Service> {
 public:
  explicit ValdInsertService(const GrpcEnv& env) : env_(env) {}
  grpc::Status Insert(ServerContext* c, const pb::Insert::Request* req,
                      pb::Object::Location* out) override;
  Stream<pb::Insert::Request, pb::Object::StreamLocation>* StreamInsert(
      CallbackServerContext* c) override;
  grpc::Status MultiInsert(ServerContext* c, const pb::Insert::MultiRequest* req,
                           pb::Object::Locations* out) override;

 private:
  const GrpcEnv& env_;
};

class ValdUpdateService final
    : public ::vald::v1::Update::WithCallbackMethod_StreamUpdate<::vald::v1::Update::Service> {
 public:
  explicit ValdUpdateService(const GrpcEnv& env) : env_(env) {}
  grpc::Status Update(ServerContext* c, const pb::Update::Request* req,
                      pb::Object::Location* out) override;
  Stream<pb::Update::Request, pb::Object::StreamLocation>* StreamUpdate(
      CallbackServerContext* c) override;
  grpc::Status MultiUpdate(ServerContext* c, const pb::Update::MultiRequest* req,
                           pb::Object::Locations* out) override;
  grpc::Status UpdateTimestamp(ServerContext* c, const pb::Update::TimestampRequest* req,
                               pb::Object::Location* out) override;

 private:
  const GrpcEnv& env_;
};

class ValdUpsertService final
    : public ::vald::v1::Upsert::WithCallbackMethod_StreamUpsert<::vald::v1::Upsert::Service> {
 public:
  explicit ValdUpsertService(const GrpcEnv& env) : env_(env) {}
  grpc::Status Upsert(ServerContext* c, const pb::Upsert::Request* req,
                      pb::Object::Location* out) override;
  Stream<pb::Upsert::Request, pb::Object::StreamLocation>* StreamUpsert(
      CallbackServerContext* c) override;
  grpc::Status MultiUpsert(ServerContext* c, const pb::Upsert::MultiRequest* req,
                           pb::Object::Locations* out) override;

 private:
  const GrpcEnv& env_;
};

class ValdRemoveService final
    : public ::vald::v1::Remove::WithCallbackMethod_StreamRemove<::vald::v1::Remove::Service> {
 public:
  explicit ValdRemoveService(const GrpcEnv& env) : env_(env) {}
  grpc::Status Remove(ServerContext* c, const pb::Remove::Request* req,
                      pb::Object::Location* out) override;
  grpc::Status RemoveByTimestamp(ServerContext* c, const pb::Remove::TimestampRequest* req,
                                 pb::Object::Locations* out) override;
  Stream<pb::Remove::Request, pb::Object::StreamLocation>* StreamRemove(
      CallbackServerContext* c) override;
  grpc::Status MultiRemove(ServerContext* c, const pb::Remove::MultiRequest* req,
                           pb::Object::Locations* out) override;

 private:
  const GrpcEnv& env_;
};

// Search (server/grpc/vald_search_service.cc): every search goes through the service's
// Search, so it is batched with the collection's other searches, ZeroMQ's too.
using VS = ::vald::v1::Search;
using ValdSearchBase = VS::WithCallbackMethod_StreamSearch<VS::WithCallbackMethod_StreamSearchByID<
    VS::WithCallbackMethod_StreamLinearSearch<
        VS::WithCallbackMethod_StreamLinearSearchByID<VS::Service>>>>;

class ValdSearchService final : public ValdSearchBase {
 public:
  explicit ValdSearchService(const GrpcEnv& env) : env_(env) {}
  grpc::Status Search(ServerContext* c, const pb::Search::Request* req,
                      pb::Search::Response* out) override;
  grpc::Status SearchByID(ServerContext* c, const pb::Search::IDRequest* req,
                          pb::Search::Response* out) override;
  Stream<pb::Search::Request, pb::Search::StreamResponse>* StreamSearch(
      CallbackServerContext* c) override;
  Stream<pb::Search::IDRequest, pb::Search::StreamResponse>* StreamSearchByID(
      CallbackServerContext* c) override;
  grpc::Status MultiSearch(ServerContext* c, const pb::Search::MultiRequest* req,
                           pb::Search::Responses* out) override;
  grpc::Status MultiSearchByID(ServerContext* c, const pb::Search::MultiIDRequest* req,
                               pb::Search::Responses* out) override;
  grpc::Status LinearSearch(ServerContext* c, const pb::Search::Request* req,
                            pb::Search::Response* out) override;
  grpc::Status LinearSearchByID(ServerContext* c, const pb::Search::IDRequest* req,
                                pb::Search::Response* out) override;
  Stream<pb::Search::Request, pb::Search::StreamResponse>* StreamLinearSearch(
      CallbackServerContext* c) override;
  Stream<pb::Search::IDRequest, pb::Search::StreamResponse>* StreamLinearSearchByID(
      CallbackServerContext* c) override;
  grpc::Status MultiLinearSearch(ServerContext* c, const pb::Search::MultiRequest* req,
                                 pb::Search::Responses* out) override;
  grpc::Status MultiLinearSearchByID(ServerContext* c, const pb::Search::MultiIDRequest* req,
                                     pb::Search::Responses* out) override;

 private:
  const GrpcEnv& env_;
};

// Object, Flush, Index and core.v1.Agent (server/grpc/vald_object_service.cc).
using VO = ::vald::v1::Object;
using ValdObjectBase =
    VO::WithCallbackMethod_StreamGetObject<VO::WithCallbackMethod_StreamListObject<VO::Service>>;

class ValdObjectService final : public ValdObjectBase {
 public:
  explicit ValdObjectService(const GrpcEnv& env) : env_(env) {}
  grpc::Status Exists(ServerContext* c, const pb::Object::ID* req, pb::Object::ID* out) override;
  grpc::Status GetObject(ServerContext* c, const pb::Object::VectorRequest* req,
                         pb::Object::Vector* out) override;
  Stream<pb::Object::VectorRequest, pb::Object::StreamVector>* StreamGetObject(
      CallbackServerContext* c) override;
  grpc::ServerWriteReactor<pb::Object::List::Response>* StreamListObject(
      CallbackServerContext* c, const pb::Object::List::Request* req) override;
  grpc::Status GetTimestamp(ServerContext* c, const pb::Object::TimestampRequest* req,
                            pb::Object::Timestamp* out) override;

 private:
  const GrpcEnv& env_;
};

class ValdFlushService final : public ::vald::v1::Flush::Service {
 public:
  explicit ValdFlushService(const GrpcEnv& env) : env_(env) {}
  grpc::Status Flush(ServerContext* c, const pb::Flush::Request* req,
                     pb::Info::Index::Count* out) override;

 private:
  const GrpcEnv& env_;
};

class ValdIndexService final : public ::vald::v1::Index::Service {
 public:
  explicit ValdIndexService(const GrpcEnv& env) : env_(env) {}
  grpc::Status IndexInfo(ServerContext* c, const pb::Empty* req,
                         pb::Info::Index::Count* out) override;
  grpc::Status IndexDetail(ServerContext* c, const pb::Empty* req,
                           pb::Info::Index::Detail* out) override;
  grpc::Status IndexStatistics(ServerContext* c, const pb::Empty* req,
                               pb::Info::Index::Statistics* out) override;
  grpc::Status IndexStatisticsDetail(ServerContext* c, const pb::Empty* req,
                                     pb::Info::Index::StatisticsDetail* out) override;
  grpc::Status IndexProperty(ServerContext* c, const pb::Empty* req,
                             pb::Info::Index::PropertyDetail* out) override;

 private:
  const GrpcEnv& env_;
};

class AgentService final : public ::core::v1::Agent::Service {
 public:
  explicit AgentService(const GrpcEnv& env) : env_(env) {}
  grpc::Status CreateIndex(ServerContext* c, const pb::Control::CreateIndexRequest* req,
                           pb::Empty* out) override;
  grpc::Status SaveIndex(ServerContext* c, const pb::Empty* req, pb::Empty* out) override;
  grpc::Status CreateAndSaveIndex(ServerContext* c, const pb::Control::CreateIndexRequest* req,
                                  pb::Empty* out) override;
  grpc::Status IndexInfo(ServerContext* c, const pb::Empty* req,
                         pb::Info::Index::Count* out) override;

 private:
  const GrpcEnv& env_;
};

// The collection's object count for IndexInfo (Vald's Info.Index.Count): stored = its keyed
// objects (id-mapped collections) or its vectors; nothing is ever uncommitted. A missing
// collection counts zero.
Status CountOf(ServiceCall& call, const CallScope& scope, pb::Info::Index::Count* out);

}  // namespace vecgpu::server
