#pragma once

#include <memory>
#include <string>

namespace vecgpu::model {

// Where the model test's requests go: one FAISSx request payload in, one reply payload out.
class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::string Call(const std::string& request) = 0;
  // Starts over from no indexes; returns the tenant prefix to use from now on.
  virtual std::string Fresh() = 0;
  virtual std::string name() const = 0;
};

// The FAISSx service and Engine in this process, over the CPU backends.
std::unique_ptr<Driver> MakeInProcessDriver();
// The same, with every index placed by a DeviceManager on fake GPUs whose copies are CPU
// indexes loaded from the host's serialization (searches of GPU kinds run on the copies).
std::unique_ptr<Driver> MakePlacedInProcessDriver();

// The real `vecgpu` binary, started on 127.0.0.1 with a free port and spoken to over ZeroMQ.
// Fresh() switches to new tenants rather than restarting the server.
std::unique_ptr<Driver> MakeWireDriver(const std::string& binary);

}  // namespace vecgpu::model
