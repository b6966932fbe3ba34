#pragma once

// Test support: a real etcd member (Debian's etcd-server) as a child process on free loopback
// ports in a temporary directory, killed and removed at the end.

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace vecgpu::cluster::testing {

inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

// One etcd member as a child process.
class EtcdProcess {
 public:
  EtcdProcess() {
    char tmpl[] = "/tmp/vecgpu-etcd-XXXXXX";
    dir_ = mkdtemp(tmpl);
    client_ = "127.0.0.1:" + std::to_string(FreePort());
    peer_ = "http://127.0.0.1:" + std::to_string(FreePort());
    Start();
  }
  ~EtcdProcess() {
    Stop();
    std::filesystem::remove_all(dir_);
  }
  // Starts the member (again, on the same ports and data).
  void Start() {
    if (pid_ > 0) return;
    const std::string url = "http://" + client_, data = dir_ + "/data",
                      log = dir_ + "/etcd.log", cluster = "m=" + peer_;
    std::vector<std::string> args = {"etcd",
                                      "--name", "m",
                                      "--data-dir", data,
                                      "--listen-client-urls", url,
                                      "--advertise-client-urls", url,
                                      "--listen-peer-urls", peer_,
                                      "--initial-advertise-peer-urls", peer_,
                                      "--initial-cluster", cluster,
                                      "--unsafe-no-fsync"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&files, 1, 2);
    if (posix_spawnp(&pid_, "etcd", &files, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&files);
  }
  // Kills the member (SIGKILL); its data stays for Start.
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  void Kill() { Stop(); }
  const std::string& endpoint() const { return client_; }
  std::string Log() const {
    std::ifstream in(dir_ + "/etcd.log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string dir_;
  std::string client_;
  std::string peer_;
  pid_t pid_ = -1;
};

inline bool EtcdInstalled() { return std::system("command -v etcd > /dev/null 2>&1") == 0; }

}  // namespace vecgpu::cluster::testing
