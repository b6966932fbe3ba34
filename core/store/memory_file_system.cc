#include "core/store/memory_file_system.h"

#include <algorithm>
#include <utility>

namespace vecgpu::store {
namespace {

// `path` with runs of '/' made one and no trailing '/' ("/" is the root, "").
std::string Normalize(const std::string& path) {
  std::string p;
  for (char c : path) {
    if (c != '/' || p.empty() || p.back() != '/') p.push_back(c);
  }
  if (!p.empty() && p.back() == '/') p.pop_back();
  return p;
}

std::string Parent(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

std::string BaseName(const std::string& path) { return path.substr(path.rfind('/') + 1); }

Status Crashed() { return Unavailable("crashed"); }

const std::string& EntryName(const std::string& dir) { return dir; }
template <typename V>
const std::string& EntryName(const std::pair<const std::string, V>& file) {
  return file.first;
}

// Makes `durable`'s entries directly in `dir` those of `current`.
template <typename Container>
void SyncEntries(const std::string& dir, const Container& current, Container& durable) {
  std::erase_if(durable, [&](const auto& entry) { return Parent(EntryName(entry)) == dir; });
  for (const auto& entry : current) {
    if (Parent(EntryName(entry)) == dir) durable.insert(entry);
  }
}

}  // namespace

class MemoryFileSystem::MemoryWritableFile final : public WritableFile {
 public:
  MemoryWritableFile(MemoryFileSystem* fs, std::shared_ptr<Node> node, std::string path,
                     uint64_t epoch, int64_t size)
      : fs_(fs), node_(std::move(node)), path_(std::move(path)), epoch_(epoch), size_(size) {}

  Status Append(std::string_view data) override {
    return fs_->FileAppend(node_, path_, epoch_, closed_, data, size_);
  }
  Status Sync() override { return fs_->FileSync(node_, path_, epoch_, closed_); }
  Status Close() override {
    Status status = fs_->FileClose(epoch_);
    closed_ = true;
    return status;
  }
  int64_t size() const override { return size_; }

 private:
  MemoryFileSystem* const fs_;
  const std::shared_ptr<Node> node_;
  const std::string path_;
  const uint64_t epoch_;
  bool closed_ = false;
  int64_t size_;
};

class MemoryFileSystem::MemoryFileLock final : public FileLock {
 public:
  MemoryFileLock(MemoryFileSystem* fs, std::string path, uint64_t id)
      : fs_(fs), path_(std::move(path)), id_(id) {}
  ~MemoryFileLock() override { fs_->Unlock(path_, id_); }

 private:
  MemoryFileSystem* const fs_;
  const std::string path_;
  const uint64_t id_;
};

Status MemoryFileSystem::BeginStep() {
  if (crashed_) return Crashed();
  ++steps_;
  if (steps_ != fail_step_) return Status::Ok();
  Status error = fail_error_.ok() ? Internal("injected fault") : fail_error_;
  bool crash = fail_crash_;
  fail_step_ = 0;
  fail_error_ = Status::Ok();
  if (crash) {
    CrashLocked();
    crashed_ = true;
  }
  return error;
}

bool MemoryFileSystem::IsDir(const std::string& path) const {
  return path.empty() || dirs_.contains(path);
}

bool MemoryFileSystem::SurvivesCrash(const std::string& dir) const {
  for (std::string d = dir; !d.empty(); d = Parent(d)) {
    if (!durable_dirs_.contains(d)) return false;
  }
  return true;
}

Status MemoryFileSystem::CheckParent(std::string_view op, const std::string& path) const {
  std::string parent = Parent(path);
  if (IsDir(parent)) return Status::Ok();
  std::string prefix = std::string(op) + " " + path + ": ";
  if (files_.contains(parent)) return Internal(prefix + "Not a directory");
  return NotFound(prefix + "No such file or directory");
}

int64_t MemoryFileSystem::TotalBytes() const {
  std::set<const Node*> seen;
  int64_t total = 0;
  for (const auto& [path, node] : files_) {
    if (seen.insert(node.get()).second) total += static_cast<int64_t>(node->current.size());
  }
  return total;
}

void MemoryFileSystem::CrashLocked() {
  std::set<std::string> dirs;
  for (const std::string& d : durable_dirs_) {
    if (SurvivesCrash(d)) dirs.insert(d);
  }
  std::map<std::string, std::shared_ptr<Node>> files;
  for (const auto& [path, node] : durable_files_) {
    if (SurvivesCrash(Parent(path))) files.emplace(path, node);
  }
  for (auto& [path, node] : files) node->current = node->durable;
  dirs_ = dirs;
  durable_dirs_ = std::move(dirs);
  files_ = files;
  durable_files_ = std::move(files);
  locks_.clear();
  ++epoch_;
}

StatusOr<std::unique_ptr<WritableFile>> MemoryFileSystem::OpenForAppend(const std::string& path,
                                                                        bool truncate) {
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginStep());
  std::string p = Normalize(path);
  if (IsDir(p)) return Internal("open " + p + ": Is a directory");
  RETURN_IF_ERROR(CheckParent("open", p));
  std::shared_ptr<Node>& node = files_[p];
  if (node == nullptr) node = std::make_shared<Node>();
  if (truncate) node->current.clear();
  return std::unique_ptr<WritableFile>(
      new MemoryWritableFile(this, node, p, epoch_, static_cast<int64_t>(node->current.size())));
}

StatusOr<std::string> MemoryFileSystem::ReadFile(const std::string& path) {
  MutexLock lock(mu_);
  std::string p = Normalize(path);
  auto it = files_.find(p);
  if (it != files_.end()) return it->second->current;
  if (IsDir(p)) return Internal("read " + p + ": Is a directory");
  return NotFound("open " + p + ": No such file or directory");
}

Status MemoryFileSystem::Rename(const std::string& from, const std::string& to) {
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginStep());
  std::string f = Normalize(from), t = Normalize(to);
  std::string what = "rename " + f + " to " + t + ": ";
  if (IsDir(f)) return Unimplemented(what + "directories cannot be renamed");
  auto it = files_.find(f);
  if (it == files_.end()) return NotFound(what + "No such file or directory");
  if (IsDir(t)) return Internal(what + "Is a directory");
  RETURN_IF_ERROR(CheckParent("rename", t));
  if (f == t) return Status::Ok();
  std::shared_ptr<Node> node = it->second;
  files_.erase(it);
  files_[t] = std::move(node);
  return Status::Ok();
}

Status MemoryFileSystem::Remove(const std::string& path) {
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginStep());
  std::string p = Normalize(path);
  if (IsDir(p)) return Internal("remove " + p + ": Is a directory");
  if (files_.erase(p) == 0) return NotFound("remove " + p + ": No such file or directory");
  return Status::Ok();
}

Status MemoryFileSystem::CreateDirs(const std::string& path) {
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginStep());
  std::string p = Normalize(path);
  // Each prefix in turn ("/a", "/a/b", "/a/b/c"); one that exists is fine.
  for (size_t end = 0; end != std::string::npos;) {
    end = p.find('/', end + 1);
    std::string prefix = p.substr(0, end);
    if (prefix.empty() || dirs_.contains(prefix)) continue;
    if (files_.contains(prefix)) return Internal("mkdir " + prefix + ": Not a directory");
    dirs_.insert(prefix);
    if (Parent(prefix).empty()) durable_dirs_.insert(prefix);  // the data directory's parent
  }
  return Status::Ok();
}

Status MemoryFileSystem::SyncDir(const std::string& path) {
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginStep());
  std::string p = Normalize(path);
  if (!IsDir(p)) {
    if (files_.contains(p)) return Internal("open dir " + p + ": Not a directory");
    return NotFound("open dir " + p + ": No such file or directory");
  }
  if (!sync_error_.ok()) return sync_error_;
  SyncEntries(p, files_, durable_files_);
  SyncEntries(p, dirs_, durable_dirs_);
  return Status::Ok();
}

StatusOr<std::vector<std::string>> MemoryFileSystem::ListDir(const std::string& path) {
  MutexLock lock(mu_);
  std::string p = Normalize(path);
  if (!IsDir(p)) {
    if (files_.contains(p)) return Internal("list " + p + ": Not a directory");
    return NotFound("list " + p + ": No such file or directory");
  }
  std::vector<std::string> names;
  for (const auto& [file, node] : files_) {
    if (Parent(file) == p) names.push_back(BaseName(file));
  }
  for (const std::string& dir : dirs_) {
    if (Parent(dir) == p) names.push_back(BaseName(dir));
  }
  std::sort(names.begin(), names.end());
  return names;
}

StatusOr<bool> MemoryFileSystem::Exists(const std::string& path) {
  MutexLock lock(mu_);
  std::string p = Normalize(path);
  return IsDir(p) || files_.contains(p);
}

Status MemoryFileSystem::Truncate(const std::string& path, int64_t size) {
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginStep());
  std::string p = Normalize(path);
  if (size < 0) return InvalidArgument("truncate " + p + ": negative size");
  auto it = files_.find(p);
  if (it == files_.end()) {
    if (IsDir(p)) return Internal("open " + p + ": Is a directory");
    return NotFound("open " + p + ": No such file or directory");
  }
  Node& node = *it->second;
  int64_t growth = size - static_cast<int64_t>(node.current.size());
  if (growth > 0 && space_limit_ >= 0 && TotalBytes() + growth > space_limit_) {
    return ResourceExhausted("truncate " + p + ": No space left on device");
  }
  node.current.resize(static_cast<size_t>(size));
  if (!sync_error_.ok()) return sync_error_;
  node.durable = node.current;
  return Status::Ok();
}

StatusOr<std::unique_ptr<FileLock>> MemoryFileSystem::Lock(const std::string& path) {
  MutexLock lock(mu_);
  std::string p = Normalize(path);
  if (IsDir(p)) return Internal("open " + p + ": Is a directory");
  RETURN_IF_ERROR(CheckParent("open", p));
  if (locks_.contains(p)) {
    return Unavailable("data directory " + Parent(p) + " is in use by another process (lock " + p +
                       ")");
  }
  std::shared_ptr<Node>& node = files_[p];
  if (node == nullptr) node = std::make_shared<Node>();
  uint64_t id = next_lock_id_++;
  locks_[p] = id;
  return std::unique_ptr<FileLock>(new MemoryFileLock(this, p, id));
}

void MemoryFileSystem::Crash() {
  MutexLock lock(mu_);
  CrashLocked();
}

void MemoryFileSystem::Restart() {
  MutexLock lock(mu_);
  crashed_ = false;
  fail_step_ = 0;
  fail_error_ = Status::Ok();
}

int64_t MemoryFileSystem::steps() const {
  MutexLock lock(mu_);
  return steps_;
}

void MemoryFileSystem::FailAt(int64_t step, Status error, bool crash) {
  MutexLock lock(mu_);
  fail_step_ = step;
  fail_error_ = std::move(error);
  fail_crash_ = crash;
}

void MemoryFileSystem::SetSpaceLimit(int64_t bytes) {
  MutexLock lock(mu_);
  space_limit_ = bytes;
}

void MemoryFileSystem::FailSyncs(Status error) {
  MutexLock lock(mu_);
  sync_error_ = std::move(error);
}

Status MemoryFileSystem::FileAppend(const std::shared_ptr<Node>& node, const std::string& path,
                                    uint64_t epoch, bool closed, std::string_view data,
                                    int64_t& size) {
  MutexLock lock(mu_);
  if (epoch != epoch_) return Crashed();
  RETURN_IF_ERROR(BeginStep());
  if (closed) return Internal("append " + path + ": file is closed");
  if (space_limit_ >= 0) {
    int64_t room = std::max<int64_t>(0, space_limit_ - TotalBytes());
    if (static_cast<int64_t>(data.size()) > room) {
      node->current.append(data.substr(0, static_cast<size_t>(room)));
      size += room;
      return ResourceExhausted("append " + path + ": No space left on device");
    }
  }
  node->current.append(data);
  size += static_cast<int64_t>(data.size());
  return Status::Ok();
}

Status MemoryFileSystem::FileSync(const std::shared_ptr<Node>& node, const std::string& path,
                                  uint64_t epoch, bool closed) {
  MutexLock lock(mu_);
  if (epoch != epoch_) return Crashed();
  RETURN_IF_ERROR(BeginStep());
  if (closed) return Internal("sync " + path + ": file is closed");
  if (!sync_error_.ok()) return sync_error_;
  node->durable = node->current;
  return Status::Ok();
}

Status MemoryFileSystem::FileClose(uint64_t epoch) {
  MutexLock lock(mu_);
  if (epoch != epoch_) return Crashed();
  RETURN_IF_ERROR(BeginStep());
  return Status::Ok();
}

void MemoryFileSystem::Unlock(const std::string& path, uint64_t id) {
  MutexLock lock(mu_);
  auto it = locks_.find(path);
  if (it != locks_.end() && it->second == id) locks_.erase(it);
}

}  // namespace vecgpu::store
