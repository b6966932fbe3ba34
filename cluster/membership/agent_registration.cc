#include "cluster/membership/agent_registration.h"

#include <nlohmann/json.hpp>

namespace vecgpu::cluster {
namespace {

using Clock = std::chrono::steady_clock;

int64_t Nanos(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

std::string EncodeAgentInfo(const AgentInfo& info) {
  nlohmann::json j;
  j["id"] = info.id;
  j["address"] = info.address;
  j["devices"] = info.devices;
  j["free_memory_bytes"] = info.free_memory_bytes;
  j["load"] = info.load;
  j["version"] = info.version;
  j["api_version"] = info.api_version;
  return j.dump();
}

StatusOr<AgentInfo> DecodeAgentInfo(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument("agent info: not a JSON object");
  }
  AgentInfo a;
  try {
    a.id = j.at("id").get<std::string>();
    a.address = j.at("address").get<std::string>();
    a.devices = j.value("devices", std::vector<std::string>{});
    a.free_memory_bytes = j.value("free_memory_bytes", int64_t{0});
    a.load = j.value("load", 0.0);
    a.version = j.value("version", std::string());
    a.api_version = j.value("api_version", 0);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("agent info: ") + e.what());
  }
  if (a.id.empty() || a.address.empty()) {
    return InvalidArgument("agent info: id and address must not be empty");
  }
  return a;
}

AgentRegistration::AgentRegistration(EtcdClient& etcd, RegistrationOptions options,
                                     std::function<AgentInfo()> describe)
    : etcd_(etcd), options_(std::move(options)), describe_(std::move(describe)) {
  thread_ = std::thread([this] { Loop(); });
}

AgentRegistration::~AgentRegistration() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  // A graceful leave: the key goes now, not a TTL later.
  if (const int64_t l = lease_.exchange(0); l != 0) (void)etcd_.RevokeLease(l);
}

Status AgentRegistration::WriteAdmission() const {
  if (lease_.load() == 0) {
    return Unavailable("this agent is not registered in etcd (no live lease): it accepts no "
                       "writes until it is");
  }
  const auto since = Clock::now().time_since_epoch() - std::chrono::nanoseconds(renewed_sent_.load());
  const auto fence_after = std::chrono::seconds(options_.ttl_seconds) - options_.margin;
  if (since >= fence_after) {
    return Unavailable("this agent could not renew its etcd lease for " +
                       std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(since)
                                          .count()) +
                       " ms (TTL " + std::to_string(options_.ttl_seconds) +
                       " s): it fenced itself and accepts no writes until it registers again");
  }
  return Status::Ok();
}

Status AgentRegistration::Register() {
  const auto sent = Clock::now();
  ASSIGN_OR_RETURN(Lease l, etcd_.GrantLease(options_.ttl_seconds));
  AgentInfo info = describe_();
  const std::string value = EncodeAgentInfo(info);
  auto put = etcd_.Put(options_.prefix + info.id, value, l.id);
  if (!put.ok()) {
    (void)etcd_.RevokeLease(l.id);
    return put.status();
  }
  published_ = value;
  published_at_ = Clock::now();
  renewed_sent_.store(Nanos(sent));
  lease_.store(l.id);
  registrations_.fetch_add(1);
  return Status::Ok();
}

void AgentRegistration::Loop() {
  const auto period = std::chrono::milliseconds(options_.ttl_seconds * 1000 / 4);
  // A renewal tries one member for at most this long, then the next: a member cut off (its
  // connection open, no answer) must not cost a whole TTL, and a slow link (a round trip of
  // a few hundred ms) must still renew.
  const auto try_timeout = std::max(std::chrono::milliseconds(500),
                                    std::chrono::milliseconds(options_.ttl_seconds * 1000 / 3));
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    std::chrono::milliseconds wait = period;
    const int64_t lease = lease_.load();
    if (lease == 0) {
      // Not registered: a fresh lease (writes stay refused until this succeeds).
      if (!Register().ok()) wait = std::chrono::milliseconds(500);
    } else {
      // Renewed, or fenced (no renewal for a TTL): the same lease is renewed again. It may
      // well be alive in etcd (3.4 gives every lease a full TTL at a change of leader, and a
      // member that was cut off may hold it for us), and while it is, the agent's key never
      // went away: no gateway saw the agent leave, no shard changed primary, and the agent
      // may take writes again as soon as a renewal proves the lease alive. Only an expired
      // lease (NOT_FOUND) means registering anew.
      const auto sent = Clock::now();
      auto ttl = etcd_.KeepAliveOnce(lease, try_timeout);
      if (ttl.ok()) {
        renewed_sent_.store(Nanos(sent));
        // What the agent says of itself, when it changed (not more often than `refresh`).
        AgentInfo info = describe_();
        const std::string value = EncodeAgentInfo(info);
        if (value != published_ && Clock::now() - published_at_ >= options_.refresh) {
          if (etcd_.Put(options_.prefix + info.id, value, lease).ok()) {
            published_ = value;
            published_at_ = Clock::now();
          }
        }
      } else if (ttl.status().code() == StatusCode::kNotFound) {
        lease_.store(0);  // expired: its key is gone; register anew at once
        wait = std::chrono::milliseconds(0);
      } else {
        // etcd unreachable, or a member without a leader: again soon (the client has moved
        // on to the next member).
        wait = std::chrono::milliseconds(100);
      }
    }
    lock.lock();
    cv_.wait_for(lock, wait, [&] { return stopping_; });
  }
}

}  // namespace vecgpu::cluster
