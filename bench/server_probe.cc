#include "bench/server_probe.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "server/faissx/map_writer.h"

namespace vecgpu::bench {
namespace {

using server::MapWriter;

const msgpack::object* Find(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR &&
        std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key) {
      return &kv.val;
    }
  }
  return nullptr;
}

std::string StrField(const msgpack::object& map, std::string_view key) {
  const msgpack::object* v = Find(map, key);
  if (!v || v->type != msgpack::type::STR) return "";
  return std::string(v->via.str.ptr, v->via.str.size);
}

int64_t IntField(const msgpack::object& map, std::string_view key) {
  const msgpack::object* v = Find(map, key);
  if (!v) return -1;
  if (v->type == msgpack::type::POSITIVE_INTEGER) return static_cast<int64_t>(v->via.u64);
  if (v->type == msgpack::type::NEGATIVE_INTEGER) return v->via.i64;
  return -1;
}

Status Send(FaissxClient& client, const MapWriter& request) {
  msgpack::object_handle reply;
  return client.Call(request.Finish(), &reply);
}

// splitmix64: a well-mixed 64-bit value of `x`.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

StatusOr<ServedFrom> GetServedFrom(FaissxClient& client, const std::string& index) {
  MapWriter w;
  w.Str("action", "get_index_info");
  w.Str("index_id", index);
  msgpack::object_handle reply;
  RETURN_IF_ERROR(client.Call(w.Finish(), &reply));
  const msgpack::object* status = Find(reply.get(), "status");
  if (!status || status->type != msgpack::type::MAP) {
    return Internal("PROTOCOL: get_index_info has no status map");
  }
  ServedFrom s;
  s.device = StrField(*status, "device");
  s.gpu_copy = StrField(*status, "gpu_copy");
  s.placement = StrField(*status, "placement");
  s.ntotal = IntField(*status, "ntotal");
  if (s.device.empty()) return Internal("PROTOCOL: get_index_info names no device");
  return s;
}

Status Ping(FaissxClient& client) {
  MapWriter w;
  w.Str("action", "ping");
  return Send(client, w);
}

Status CreateIndexOn(FaissxClient& client, const std::string& index, int dim,
                     const std::string& index_type, const std::string& device) {
  MapWriter w;
  w.Str("action", "create_index");
  w.Str("index_id", index);
  w.Int("dimension", dim);
  w.Str("index_type", index_type);
  if (!device.empty()) w.Str("device", device);
  return Send(client, w);
}

Status RemoveIds(FaissxClient& client, const std::string& index, const std::vector<int64_t>& ids) {
  MapWriter w;
  w.Str("action", "remove_ids");
  w.Str("index_id", index);
  w.Ints("ids", ids.data(), ids.size());
  return Send(client, w);
}

std::vector<float> Row(int64_t row, int dim) {
  std::vector<float> v(dim);
  for (int j = 0; j < dim; ++j) {
    v[j] = static_cast<float>(Mix(static_cast<uint64_t>(row) * dim + j) >> 40) / (1 << 24);
  }
  return v;
}

std::vector<float> Rows(int64_t first, int64_t n, int dim) {
  std::vector<float> x;
  x.reserve(static_cast<size_t>(n) * dim);
  for (int64_t r = first; r < first + n; ++r) {
    const std::vector<float> v = Row(r, dim);
    x.insert(x.end(), v.begin(), v.end());
  }
  return x;
}

StatusOr<std::string> HttpGet(int port, const std::string& path, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unavailable(std::string("socket: ") + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Unavailable("connect 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return Unavailable(std::string("send: ") + std::strerror(errno));
  }
  std::string response;
  char buf[16384];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return DeadlineExceeded("GET " + path + ": no full reply in time");
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t got = recv(fd, buf, sizeof buf, 0);
    if (got < 0) return Unavailable(std::string("recv: ") + std::strerror(errno));
    if (got == 0) break;
    response.append(buf, static_cast<size_t>(got));
  }
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) {
    return Internal("GET " + path + ": not an HTTP reply");
  }
  const std::string status_line = response.substr(0, response.find("\r\n"));
  if (status_line.find(" 200") == std::string::npos) {
    return Unavailable("GET " + path + ": " + status_line);
  }
  return response.substr(body + 4);
}

std::optional<double> MetricValue(const std::string& page, const std::string& series) {
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      try {
        return std::stod(line.substr(series.size() + 1));
      } catch (const std::exception&) {
        return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

std::vector<int> ChildProcesses(int parent, const std::string& word) {
  std::vector<int> found;
  DIR* proc = opendir("/proc");
  if (!proc) return found;
  while (dirent* e = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const size_t close_paren = text.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(text.substr(close_paren + 1));
    std::string state;
    long ppid = -1;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream cmdline("/proc/" + std::string(e->d_name) + "/cmdline");
    std::string arg;
    while (std::getline(cmdline, arg, '\0')) {
      if (arg == word) {
        found.push_back(static_cast<int>(pid));
        break;
      }
    }
  }
  closedir(proc);
  return found;
}

}  // namespace vecgpu::bench
