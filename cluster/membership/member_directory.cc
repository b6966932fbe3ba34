#include "cluster/membership/member_directory.h"

namespace vecgpu::cluster {

MemberDirectory::MemberDirectory(EtcdClient& etcd, std::string prefix,
                                 std::function<void(const Members&)> on_change)
    : on_change_(std::move(on_change)) {
  mirror_ = std::make_unique<PrefixMirror>(
      etcd, std::move(prefix), [this](const PrefixMirror::Entries& e) { Decode(e); });
}

MemberDirectory::Members MemberDirectory::members() const {
  std::lock_guard lock(mu_);
  return members_;
}

int64_t MemberDirectory::malformed() const {
  std::lock_guard lock(mu_);
  return malformed_;
}

bool MemberDirectory::WaitFor(const std::function<bool(const Members&)>& pred,
                              std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return pred(members_); });
}

void MemberDirectory::Decode(const PrefixMirror::Entries& entries) {
  Members fresh;
  int64_t bad = 0;
  for (const auto& [id, kv] : entries) {
    auto info = DecodeAgentInfo(kv.value);
    if (!info.ok() || info->id != id) {
      ++bad;
      continue;
    }
    fresh[id] = std::move(*info);
  }
  {
    std::lock_guard lock(mu_);
    members_ = fresh;
    malformed_ = bad;  // of what is there now
  }
  cv_.notify_all();
  if (on_change_) on_change_(fresh);
}

}  // namespace vecgpu::cluster
