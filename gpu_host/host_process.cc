#include "gpu_host/host_process.h"

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace vecgpu::gpu_host {

StatusOr<std::unique_ptr<HostProcess>> HostProcess::Start(const std::string& exe, int device,
                                                          const std::vector<std::string>& args,
                                                          std::function<void(std::string)> on_exit) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return Unavailable(std::string("socketpair: ") + std::strerror(errno));
  }
  std::vector<std::string> argv_s = {exe, "gpu-host", "--device", std::to_string(device)};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 3);  // dup2 clears close-on-exec
  posix_spawn_file_actions_addclosefrom_np(&actions, 4);  // nothing else of the server's
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return Unavailable("cannot start the GPU host process (" + exe + "): " + std::strerror(rc));
  }
  return std::unique_ptr<HostProcess>(new HostProcess(device, fds[0], pid, std::move(on_exit)));
}

HostProcess::HostProcess(int device, int fd, pid_t pid, std::function<void(std::string)> on_exit)
    : device_(device), fd_(fd), pid_(pid), on_exit_(std::move(on_exit)) {
  reader_ = std::thread([this] { ReadLoop(); });
}

HostProcess::~HostProcess() {
  stopping_.store(true);
  ::shutdown(fd_, SHUT_RDWR);  // the process reads the end of its requests and exits
  {
    MutexLock lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    if (!mu_.AwaitUntil(cv_, deadline, [this]() REQUIRES(mu_) { return reaped_; })) {
      ::kill(pid_, SIGKILL);  // a device stuck in a kernel does not read its socket
    }
  }
  reader_.join();
  ::close(fd_);
}

void HostProcess::Kill() const { ::kill(pid_, SIGKILL); }

std::string HostProcess::HowItEnded(int st) {
  if (WIFEXITED(st)) {
    const int code = WEXITSTATUS(st);
    if (code == 3) return "exited after a device error (status 3)";
    return "exited with status " + std::to_string(code);
  }
  if (WIFSIGNALED(st)) {
    const int sig = WTERMSIG(st);
    return "killed by signal " + std::to_string(sig) + " (" + ::strsignal(sig) + ")";
  }
  return "ended (wait status " + std::to_string(st) + ")";
}

void HostProcess::ReadLoop() {
  std::string why;
  for (;;) {
    StatusOr<Frame> f = ReadFrame(fd_);
    if (!f.ok()) {
      if (f.status().code() == StatusCode::kDataLoss) Kill();  // not ours to trust any more
      why = f.status().message();
      break;
    }
    std::shared_ptr<Pending> p;
    {
      MutexLock lock(mu_);
      auto it = pending_.find(f->id);
      if (it == pending_.end()) continue;  // a reply nobody waits for (a drop, a timed-out call)
      p = it->second;
      pending_.erase(it);
      p->done = true;
      if (f->code == StatusCode::kOk) {
        p->reply = std::move(f->body);
      } else {
        p->reply = Status(f->code, std::move(f->body));
      }
    }
    cv_.notify_all();
  }
  // The socket ended: the process ended, or is ending (a device error, a kill, our close).
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  const std::string how = HowItEnded(st);
  dead_.store(true, std::memory_order_release);
  {
    MutexLock lock(mu_);
    death_ = "the GPU host process of GPU " + std::to_string(device_) + " (pid " +
             std::to_string(pid_) + ") " + how;
    for (auto& [id, p] : pending_) {
      p->done = true;
      p->reply = Unavailable(death_);
    }
    pending_.clear();
    reaped_ = true;
  }
  cv_.notify_all();
  if (!stopping_.load() && on_exit_) on_exit_(how);
}

StatusOr<std::string> HostProcess::Call(Op op, std::string body,
                                        std::optional<std::chrono::duration<double>> timeout) {
  auto p = std::make_shared<Pending>();
  const uint64_t id = next_id_.fetch_add(1);
  {
    MutexLock lock(mu_);
    if (reaped_) return Unavailable(death_);
    pending_[id] = p;
  }
  Status sent;
  {
    MutexLock lock(write_mu_);
    sent = WriteFrame(fd_, Frame{op, StatusCode::kOk, id, std::move(body)});
  }
  MutexLock lock(mu_);
  if (!sent.ok()) {
    // The process is gone (or going): the reader reports how it ended.
    mu_.Await(cv_, [&]() REQUIRES(mu_) { return p->done || reaped_; });
    pending_.erase(id);
    return Unavailable(reaped_ ? death_ : sent.message());
  }
  if (!timeout) {
    mu_.Await(cv_, [&]() REQUIRES(mu_) { return p->done; });
    return std::move(p->reply);
  }
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(*timeout);
  if (mu_.AwaitUntil(cv_, deadline, [&]() REQUIRES(mu_) { return p->done; })) {
    return std::move(p->reply);
  }
  pending_.erase(id);
  Kill();  // the device stopped answering: its process is stopped, the device is lost
  return Unavailable("GPU " + std::to_string(device_) + " did not answer a " +
                     std::string(OpName(op)) + " within " +
                     std::to_string(static_cast<int>(timeout->count())) +
                     " s; its GPU host process (pid " + std::to_string(pid_) + ") was killed");
}

void HostProcess::Send(Op op, std::string body) {
  if (!alive()) return;
  const uint64_t id = next_id_.fetch_add(1);
  MutexLock lock(write_mu_);
  (void)WriteFrame(fd_, Frame{op, StatusCode::kOk, id, std::move(body)});
}

}  // namespace vecgpu::gpu_host
