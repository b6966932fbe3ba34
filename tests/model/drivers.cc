#include "tests/model/drivers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>
#include <zmq.hpp>

#include "core/device/fake_device_provider.h"
#include "core/engine.h"
#include "core/service/local_service.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "server/auth.h"
#include "server/faissx/service.h"

namespace vecgpu::model {
namespace {

class InProcessDriver final : public Driver {
 public:
  // Threads as the server's request workers have them: one OpenBLAS thread, and one OpenMP
  // thread on the calling thread (spinning OpenMP teams made a run 60 times slower whenever
  // another process competed for the two cores). `placed`: every index goes through the
  // DeviceManager onto two fake GPUs whose copies are CPU indexes loaded from the host's
  // serialization, so searches of every GPU kind run on a copy kept current by adds and
  // rebuilt after other writes.
  explicit InProcessDriver(bool placed) : placed_(placed) {
    cpu::ConfigureCpuThreads();
    cpu::UseOneThreadHere();
    provider_.make_replica = [this](const Backend& host,
                                    const std::vector<int>&) -> StatusOr<std::unique_ptr<Backend>> {
      ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, host.Serialize());
      return factory_.Load(
          host.spec(), std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
          host.next_label());
    };
    Fresh();
  }
  std::string Call(const std::string& request) override { return service_->Handle(request); }
  std::string Fresh() override {
    service_.reset();
    collections_.reset();
    engine_.reset();
    Limits limits;
    (void)limits.Validate();
    limits_ = limits;
    devices_.reset();
    if (placed_) {
      DeviceOptions o;
      o.memory_fraction = 1.0;
      devices_ = std::make_unique<DeviceManager>(&provider_, o);
    }
    engine_ = std::make_unique<Engine>(limits_, factory_, nullptr, nullptr, devices_.get());
    collections_ = std::make_unique<LocalCollectionService>(*engine_, LocalServiceOptions{});
    service_ = std::make_unique<server::FaissxService>(*collections_, auth_, limits_);
    return "";
  }
  std::string name() const override { return placed_ ? "in-process, placed" : "in-process"; }

 private:
  const bool placed_;
  Limits limits_;
  cpu::CpuBackendFactory factory_;
  // Two fake GPUs of 64 MiB: large collections shard or fall back to the CPU.
  FakeDeviceProvider provider_{{int64_t{64} << 20, int64_t{64} << 20}};
  std::unique_ptr<DeviceManager> devices_;
  server::Authenticator auth_ = *server::Authenticator::Create(false, {});
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<LocalCollectionService> collections_;
  std::unique_ptr<server::FaissxService> service_;
};

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

class WireDriver final : public Driver {
 public:
  explicit WireDriver(const std::string& binary) : ctx_(1) {
    const int port = FreePort();
    endpoint_ = "tcp://127.0.0.1:" + std::to_string(port);
    pid_ = fork();
    if (pid_ == 0) {
      const std::string p = std::to_string(port);
      execl(binary.c_str(), binary.c_str(), "serve", "--port", p.c_str(), "--metrics-port", "0",
            "--grpc-port", "0", "--log-level", "warning", static_cast<char*>(nullptr));
      _exit(127);
    }
    // Wait for the server to answer a ping.
    for (int i = 0; i < 300; ++i) {
      if (Ping()) return;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("vecgpu exited at start-up: " + binary);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("vecgpu did not answer a ping");
  }
  ~WireDriver() override {
    socket_.reset();
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status;
      waitpid(pid_, &status, 0);
    }
  }

  std::string Call(const std::string& request) override {
    Connect();
    socket_->send(zmq::buffer(request), zmq::send_flags::none);
    zmq::message_t reply;
    if (!socket_->recv(reply)) {
      socket_.reset();
      throw std::runtime_error("no reply from vecgpu within 60 s (stalled or crashed)");
    }
    return reply.to_string();
  }
  std::string Fresh() override { return "run" + std::to_string(++runs_) + "-"; }
  std::string name() const override { return "wire"; }

 private:
  void Connect() {
    if (socket_) return;
    socket_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::req);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->set(zmq::sockopt::rcvtimeo, 60000);
    socket_->connect(endpoint_);
  }
  bool Ping() {
    zmq::socket_t s(ctx_, zmq::socket_type::req);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 300);
    s.connect(endpoint_);
    const char ping[] =
        "\x81\xa6"
        "action"
        "\xa4"
        "ping";
    s.send(zmq::buffer(ping, sizeof(ping) - 1), zmq::send_flags::none);
    zmq::message_t reply;
    return static_cast<bool>(s.recv(reply));
  }

  zmq::context_t ctx_;
  std::string endpoint_;
  std::unique_ptr<zmq::socket_t> socket_;
  pid_t pid_ = -1;
  int runs_ = 0;
};

}  // namespace

std::unique_ptr<Driver> MakePlacedInProcessDriver() {
  return std::make_unique<InProcessDriver>(true);
}

std::unique_ptr<Driver> MakeInProcessDriver() { return std::make_unique<InProcessDriver>(false); }

std::unique_ptr<Driver> MakeWireDriver(const std::string& binary) {
  return std::make_unique<WireDriver>(binary);
}

}  // namespace vecgpu::model
