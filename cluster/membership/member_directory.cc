#include "cluster/membership/member_directory.h"

#include <vector>

namespace vecgpu::cluster {

MemberDirectory::MemberDirectory(EtcdClient& etcd, std::string prefix,
                                 std::function<void(const Members&)> on_change, int api_version,
                                 std::function<void(const std::string&)> log)
    : on_change_(std::move(on_change)), api_version_(api_version), log_(std::move(log)) {
  mirror_ = std::make_unique<PrefixMirror>(
      etcd, std::move(prefix), [this](const PrefixMirror::Entries& e) { Decode(e); });
}

MemberDirectory::Members MemberDirectory::members() const {
  std::lock_guard lock(mu_);
  return members_;
}

MemberDirectory::Members MemberDirectory::refused() const {
  std::lock_guard lock(mu_);
  return refused_;
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
  Members fresh, refused;
  int64_t bad = 0;
  for (const auto& [id, kv] : entries) {
    auto info = DecodeAgentInfo(kv.value);
    if (!info.ok() || info->id != id) {
      ++bad;
      continue;
    }
    if (api_version_ != 0 && info->api_version != api_version_) {
      refused[id] = std::move(*info);
    } else {
      fresh[id] = std::move(*info);
    }
  }
  std::vector<std::string> lines;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, info] : refused) {
      auto was = refused_.find(id);
      if (was != refused_.end() && was->second.api_version == info.api_version) continue;
      lines.push_back("agent '" + id + "' at " + info.address + " (" +
                      (info.version.empty() ? std::string("version unknown") : info.version) +
                      ") speaks agent API version " + std::to_string(info.api_version) +
                      ", this process speaks version " + std::to_string(api_version_) +
                      ": not used until it is upgraded (or this process is)");
    }
    members_ = fresh;
    refused_ = refused;
    malformed_ = bad;  // of what is there now
  }
  if (log_) {
    for (const std::string& line : lines) log_(line);
  }
  cv_.notify_all();
  if (on_change_) on_change_(fresh);
}

}  // namespace vecgpu::cluster
