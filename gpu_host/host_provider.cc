#include "gpu_host/host_provider.h"

#include <set>

#include "gpu_host/host_process.h"
#include "gpu_host/remote_replica.h"

namespace vecgpu::gpu_host {
namespace {
// Device number of the process that only counts the devices.
constexpr int kProbe = -1;
// The first answer of a new process (loading CUDA and FAISS may take a while).
constexpr std::chrono::seconds kHelloTimeout(60);
}  // namespace

GpuHostProvider::GpuHostProvider(GpuHostOptions options) : options_(std::move(options)) {}

GpuHostProvider::~GpuHostProvider() {
  Watch(nullptr);
  std::map<int, std::shared_ptr<HostProcess>> hosts;
  {
    MutexLock lock(mu_);
    hosts.swap(hosts_);
  }
  // Each process ends when its last copy's handle goes (copies may outlive the provider).
}

std::string GpuHostProvider::name() const {
  for (size_t i = 0; i + 1 < options_.provider_args.size(); ++i) {
    if (options_.provider_args[i] == "--provider") {
      return options_.provider_args[i + 1] + " (GPU host processes)";
    }
  }
  return "GPU host processes";
}

void GpuHostProvider::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

StatusOr<std::shared_ptr<HostProcess>> GpuHostProvider::Start(int device) {
  std::function<void(std::string)> on_exit;
  if (device != kProbe) on_exit = [this, device](std::string how) { Lost(device, how); };
  std::vector<std::string> args = options_.provider_args;
  if (const int64_t temp = temp_memory_.load(); temp >= 0) {
    args.insert(args.end(), {"--temp-memory-bytes", std::to_string(temp)});
  }
  ASSIGN_OR_RETURN(std::unique_ptr<HostProcess> started,
                   HostProcess::Start(options_.exe, device, args, std::move(on_exit)));
  std::shared_ptr<HostProcess> p(std::move(started));
  StatusOr<std::string> hello = p->Call(Op::kHello, std::string(), kHelloTimeout);
  if (!hello.ok()) {
    return Status(hello.status().code(), "the GPU host process did not start: " +
                                             hello.status().message());
  }
  if (device != kProbe) {
    Log("gpus: GPU " + std::to_string(device) + " served by its GPU host process (pid " +
        std::to_string(p->pid()) + ")");
  }
  return p;
}

StatusOr<std::shared_ptr<HostProcess>> GpuHostProvider::Host(int device) {
  MutexLock lock(mu_);
  auto it = hosts_.find(device);
  if (it == hosts_.end()) {  // first use: start it (under mu_: one start per device)
    ASSIGN_OR_RETURN(std::shared_ptr<HostProcess> p, Start(device));
    it = hosts_.emplace(device, std::move(p)).first;
  }
  if (!it->second || !it->second->alive()) {
    return Unavailable("the GPU host process of GPU " + std::to_string(device) +
                       " is not running (lost; restarted by the device manager)");
  }
  return it->second;
}

void GpuHostProvider::Lost(int device, const std::string& why) {
  Log("gpus: the GPU host process of GPU " + std::to_string(device) + " " + why);
  MutexLock lock(watch_mu_);
  if (watcher_) watcher_->DeviceLost(device, "its GPU host process " + why);
}

void GpuHostProvider::Watch(DeviceWatcher* watcher) {
  MutexLock lock(watch_mu_);
  watcher_ = watcher;
}

Status GpuHostProvider::Restart(int device) {
  std::shared_ptr<HostProcess> old;
  {
    MutexLock lock(mu_);
    old = std::move(hosts_[device]);
  }
  if (old) old->Retire();  // a hung process, or one already gone: start over
  old.reset();
  ASSIGN_OR_RETURN(std::shared_ptr<HostProcess> p, Start(device));
  MutexLock lock(mu_);
  hosts_[device] = std::move(p);
  return Status::Ok();
}

int GpuHostProvider::pid(int device) {
  MutexLock lock(mu_);
  auto it = hosts_.find(device);
  return it != hosts_.end() && it->second && it->second->alive() ? it->second->pid() : 0;
}

Status GpuHostProvider::Crash(int device) {
  ASSIGN_OR_RETURN(std::shared_ptr<HostProcess> p, Host(device));
  p->Send(Op::kCrash, std::string());
  return Status::Ok();
}

StatusOr<int> GpuHostProvider::Count() {
  MutexLock lock(mu_);
  if (counted_) return count_;
  StatusOr<std::shared_ptr<HostProcess>> probe = Start(kProbe);
  if (!probe.ok()) return probe.status();  // not cached: a later call may start it
  StatusOr<std::string> reply = (*probe)->Call(Op::kCount, std::string(), kHelloTimeout);
  counted_ = true;
  if (!reply.ok()) {
    count_ = reply.status();
  } else {
    Reader r(*reply);
    const int64_t n = r.I64();
    count_ = r.done() ? StatusOr<int>(static_cast<int>(n))
                      : StatusOr<int>(Internal("GPU host: malformed reply to count"));
  }
  return count_;
}

StatusOr<GpuProperties> GpuHostProvider::Properties(int device) {
  ASSIGN_OR_RETURN(std::shared_ptr<HostProcess> p, Host(device));
  ASSIGN_OR_RETURN(std::string reply, p->Call(Op::kProperties, Writer().I32(device).Take(),
                                              kHelloTimeout));
  Reader r(reply);
  GpuProperties props;
  props.id = device;
  props.name = r.Str();
  props.total_bytes = r.I64();
  props.compute_major = r.I32();
  props.compute_minor = r.I32();
  if (!r.done()) return Internal("GPU host: malformed reply to properties");
  return props;
}

StatusOr<int64_t> GpuHostProvider::FreeBytes(int device) {
  ASSIGN_OR_RETURN(std::shared_ptr<HostProcess> p, Host(device));
  ASSIGN_OR_RETURN(std::string reply,
                   p->Call(Op::kFreeBytes, Writer().I32(device).Take(),
                           std::chrono::duration<double>(options_.call_timeout_s)));
  Reader r(reply);
  const int64_t free_bytes = r.I64();
  if (!r.done()) return Internal("GPU host: malformed reply to free-bytes");
  return free_bytes;
}

StatusOr<std::unique_ptr<Backend>> GpuHostProvider::BuildReplica(const Backend& host,
                                                                 const std::vector<int>& devices) {
  if (devices.empty()) return InvalidArgument("no device to build the GPU copy on");
  std::set<int> seen(devices.begin(), devices.end());
  if (seen.size() != devices.size()) return InvalidArgument("a device is named twice");
  ASSIGN_OR_RETURN(std::shared_ptr<HostProcess> p, Host(devices[0]));
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, host.Serialize());
  static std::atomic<uint64_t> next_id{1};
  const uint64_t id = next_id.fetch_add(1);
  Writer w;
  w.I64(static_cast<int64_t>(id)).Array(devices.data(), static_cast<int64_t>(devices.size()));
  w.Spec(host.spec()).I64(host.next_label()).I32(host.labels_shift_on_remove() ? 1 : 0);
  w.Array(bytes.data(), static_cast<int64_t>(bytes.size()));
  bytes = {};
  // A build has no time limit: copying a large index takes as long as it takes.
  ASSIGN_OR_RETURN(std::string reply, p->Call(Op::kBuild, w.Take(), std::nullopt));
  Reader r(reply);
  const int64_t ntotal = r.I64();
  const int64_t next_label = r.I64();
  const int64_t memory = r.I64();
  if (!r.done()) return Internal("GPU host: malformed reply to build");
  return std::unique_ptr<Backend>(new RemoteReplica(std::move(p), id, host.spec(),
                                                    host.labels_shift_on_remove(), ntotal,
                                                    next_label, memory, options_.call_timeout_s));
}

}  // namespace vecgpu::gpu_host
