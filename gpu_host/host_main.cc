#include "gpu_host/host_main.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>

#include "core/util/mutex.h"
#include "core/util/worker_pool.h"
#include "gpu_host/wire.h"

namespace vecgpu::gpu_host {
namespace {

// Whether an error of a device copy means the device (its CUDA context) cannot be trusted.
bool DeviceError(const Status& st) {
  switch (st.code()) {
    case StatusCode::kInternal:
    case StatusCode::kUnknown:
    case StatusCode::kDataLoss:
    case StatusCode::kAborted:
      return true;
    default:
      return false;
  }
}

class Host {
 public:
  Host(const GpuHostMainOptions& o, DeviceProvider& inner, BackendFactory& cpu)
      : o_(o),
        inner_(inner),
        cpu_(cpu),
        builds_("gpu-host-build", 1, 1 << 16, o.on_worker_start),
        work_("gpu-host", o.workers, 1 << 20, o.on_worker_start) {}

  int Serve() {
    for (;;) {
      StatusOr<Frame> f = ReadFrame(o_.fd);
      if (!f.ok()) break;  // the server closed the socket (or went away)
      Dispatch(std::move(*f));
    }
    builds_.Shutdown();
    work_.Shutdown();
    return 0;
  }

 private:
  void Reply(const Frame& request, const StatusOr<std::string>& result, bool device_op) {
    Frame r{request.op, StatusCode::kOk, request.id, {}};
    if (result.ok()) {
      r.body = *result;
    } else {
      r.code = result.status().code();
      r.body = result.status().message();
    }
    {
      MutexLock lock(write_mu_);
      (void)WriteFrame(o_.fd, r);
    }
    if (device_op && !result.ok() && DeviceError(result.status())) {
      std::fprintf(stderr, "gpu-host[%d]: device error in %s: %s; exiting\n", o_.device,
                   std::string(OpName(request.op)).c_str(), result.status().message().c_str());
      std::fflush(stderr);
      ::_exit(3);
    }
  }

  void Dispatch(Frame f) {
    switch (f.op) {
      case Op::kHello:
        return Reply(f, Writer().I64(::getpid()).Take(), false);
      case Op::kCount: {
        StatusOr<int> n = inner_.Count();
        if (!n.ok()) return Reply(f, n.status(), false);
        return Reply(f, Writer().I64(*n).Take(), false);
      }
      case Op::kProperties:
        return Reply(f, Properties(f.body), false);
      case Op::kFreeBytes:
        return Reply(f, FreeBytes(f.body), false);
      case Op::kCrash:
        if (o_.fake) ::abort();
        return Reply(f, Unimplemented("only a fake GPU host crashes on request"), false);
      case Op::kBuild: {
        auto job = std::make_shared<Frame>(std::move(f));
        if (!builds_.Submit([this, job] { Reply(*job, Build(job->body), true); }).ok()) {
          Reply(*job, Unavailable("GPU host: too many builds queued"), false);
        }
        return;
      }
      case Op::kSearch:
      case Op::kAdd:
      case Op::kReserve:
      case Op::kDrop: {
        auto job = std::make_shared<Frame>(std::move(f));
        Status queued = work_.Submit([this, job] {
          switch (job->op) {
            case Op::kSearch: return Reply(*job, Search(job->body), true);
            case Op::kAdd: return Reply(*job, Add(job->body), true);
            case Op::kDrop: return Reply(*job, Drop(job->body), false);
            default: return Reply(*job, Reserve(job->body), true);
          }
        });
        if (!queued.ok()) Reply(*job, queued, false);
        return;
      }
    }
    Reply(f, InvalidArgument("GPU host: unknown operation " +
                             std::to_string(static_cast<uint32_t>(f.op))),
          false);
  }

  StatusOr<std::string> Properties(const std::string& body) {
    Reader r(body);
    const int device = r.I32();
    if (!r.done()) return InvalidArgument("GPU host: malformed properties request");
    ASSIGN_OR_RETURN(GpuProperties p, inner_.Properties(device));
    return Writer().Str(p.name).I64(p.total_bytes).I32(p.compute_major).I32(p.compute_minor)
        .Take();
  }

  StatusOr<std::string> FreeBytes(const std::string& body) {
    Reader r(body);
    const int device = r.I32();
    if (!r.done()) return InvalidArgument("GPU host: malformed free-bytes request");
    ASSIGN_OR_RETURN(int64_t free_bytes, inner_.FreeBytes(device));
    if (o_.fake) {  // the fake's copies live in host memory: count them as the device's
      MutexLock lock(mu_);
      for (const auto& [id, copy] : copies_) free_bytes -= copy->Info().memory_bytes;
      if (free_bytes < 0) free_bytes = 0;
    }
    return Writer().I64(free_bytes).Take();
  }

  std::shared_ptr<Backend> Find(uint64_t id) {
    MutexLock lock(mu_);
    auto it = copies_.find(id);
    return it == copies_.end() ? nullptr : it->second;
  }

  StatusOr<std::string> Build(const std::string& body) {
    Reader r(body);
    const auto id = static_cast<uint64_t>(r.I64());
    const std::vector<int> devices = r.Array<int>();
    const IndexSpec spec = r.Spec();
    const int64_t next_label = r.I64();
    r.I32();  // labels shift on remove: the loaded host copy knows
    const std::string_view bytes = r.Bytes(1);
    if (!r.done() || devices.empty()) return InvalidArgument("GPU host: malformed build request");
    std::shared_ptr<Backend> copy;
    {
      // The host copy lives only while the device copy is built from it.
      ASSIGN_OR_RETURN(std::unique_ptr<Backend> host, cpu_.Load(spec, bytes, next_label));
      ASSIGN_OR_RETURN(std::unique_ptr<Backend> built, inner_.BuildReplica(*host, devices));
      copy = std::move(built);
    }
    const BackendInfo info = copy->Info();
    {
      MutexLock lock(mu_);
      copies_[id] = copy;
    }
    return Writer().I64(copy->ntotal()).I64(copy->next_label()).I64(info.memory_bytes).Take();
  }

  StatusOr<std::string> Search(const std::string& body) {
    Reader r(body);
    const auto id = static_cast<uint64_t>(r.I64());
    const int64_t n = r.I64();
    const int k = r.I32();
    const SearchParams params = r.Params();
    const std::string_view x = r.Bytes(sizeof(float));
    std::shared_ptr<Backend> copy = Find(id);
    if (!copy) return NotFound("GPU host: no copy " + std::to_string(id));
    if (!r.done() || n < 0 || k <= 0 || k > (1 << 20) ||
        x.size() != static_cast<size_t>(n) * copy->spec().dim * sizeof(float)) {
      return InvalidArgument("GPU host: malformed search request");
    }
    std::vector<float> distances(static_cast<size_t>(n) * k);
    std::vector<int64_t> labels(static_cast<size_t>(n) * k);
    RETURN_IF_ERROR(copy->Search(n, reinterpret_cast<const float*>(x.data()), k, params,
                                 distances.data(), labels.data()));
    Writer w;
    w.Array(distances.data(), static_cast<int64_t>(distances.size()));
    w.Array(labels.data(), static_cast<int64_t>(labels.size()));
    return w.Take();
  }

  StatusOr<std::string> Add(const std::string& body) {
    Reader r(body);
    const auto id = static_cast<uint64_t>(r.I64());
    const int64_t n = r.I64();
    const int64_t next_label = r.I64();
    const std::string_view labels = r.Bytes(sizeof(int64_t));
    const std::string_view x = r.Bytes(sizeof(float));
    std::shared_ptr<Backend> copy = Find(id);
    if (!copy) return NotFound("GPU host: no copy " + std::to_string(id));
    if (!r.done() || n < 0 || labels.size() != static_cast<size_t>(n) * sizeof(int64_t) ||
        x.size() != static_cast<size_t>(n) * copy->spec().dim * sizeof(float)) {
      return InvalidArgument("GPU host: malformed add request");
    }
    // Aligned copies: the body's fields sit at any offset.
    std::vector<int64_t> l(static_cast<size_t>(n));
    std::vector<float> v(x.size() / sizeof(float));
    std::memcpy(l.data(), labels.data(), labels.size());
    std::memcpy(v.data(), x.data(), x.size());
    RETURN_IF_ERROR(copy->AddLabeled(n, v.data(), l.data(), next_label));
    return Writer().I64(copy->ntotal()).I64(copy->Info().memory_bytes).Take();
  }

  StatusOr<std::string> Reserve(const std::string& body) {
    Reader r(body);
    const auto id = static_cast<uint64_t>(r.I64());
    const int64_t n = r.I64();
    if (!r.done() || n < 0) return InvalidArgument("GPU host: malformed reserve request");
    std::shared_ptr<Backend> copy = Find(id);
    if (!copy) return NotFound("GPU host: no copy " + std::to_string(id));
    RETURN_IF_ERROR(copy->ReserveCapacity(n));
    return Writer().I64(copy->Info().memory_bytes).Take();
  }

  StatusOr<std::string> Drop(const std::string& body) {
    Reader r(body);
    const auto id = static_cast<uint64_t>(r.I64());
    std::shared_ptr<Backend> dropped;
    {
      MutexLock lock(mu_);
      auto it = copies_.find(id);
      if (it != copies_.end()) {
        dropped = std::move(it->second);
        copies_.erase(it);
      }
    }
    return std::string();  // freed here, outside the lock
  }

  const GpuHostMainOptions o_;
  DeviceProvider& inner_;
  BackendFactory& cpu_;
  Mutex write_mu_;
  Mutex mu_;
  std::map<uint64_t, std::shared_ptr<Backend>> copies_ GUARDED_BY(mu_);
  WorkerPool builds_;
  WorkerPool work_;
};

}  // namespace

int RunGpuHost(const GpuHostMainOptions& options, DeviceProvider& inner, BackendFactory& cpu) {
  // No PR_SET_PDEATHSIG: it fires when the server's thread that started this process ends
  // (a restart runs on the device manager's thread), not the server. The server's end closes
  // the socket, and the read loop ends with it.
  ::signal(SIGPIPE, SIG_IGN);
  Host host(options, inner, cpu);
  return host.Serve();
}

}  // namespace vecgpu::gpu_host
