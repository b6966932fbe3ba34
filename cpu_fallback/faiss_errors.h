#pragma once

#include <exception>
#include <new>
#include <string>
#include <string_view>

#include "core/util/status.h"

namespace vecgpu::cpu {

// FAISS messages read "Error in <function> at <file>:<line>: <message>"; keep the message.
inline std::string FaissMessage(const char* what) {
  std::string_view s(what);
  auto pos = s.find(": ");
  if (s.rfind("Error in ", 0) == 0 && pos != std::string_view::npos) {
    auto at = s.find(" at ");
    auto colon = s.find(": ", at == std::string_view::npos ? 0 : at);
    if (colon != std::string_view::npos) s = s.substr(colon + 2);
  }
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  return std::string(s);
}

// Runs `fn`, turning any exception FAISS throws into a Status prefixed with `what`.
template <typename F>
Status CallFaiss(std::string_view what, F&& fn) {
  try {
    fn();
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    std::string msg = FaissMessage(e.what());
    if (msg.find("computation interrupted") != std::string::npos) {
      // FAISS's InterruptCallback (cpu_fallback/cpu_threads.cc): the deadline, or shutdown.
      return DeadlineExceeded(std::string(what) +
                              ": stopped: the request's deadline passed or the server is stopping");
    }
    if (msg.find("not implemented") != std::string::npos ||
        msg.find("not supported") != std::string::npos) {
      return Unimplemented(std::string(what) + ": not supported by this index type (" + msg + ")");
    }
    return InvalidArgument(std::string(what) + ": " + msg);
  }
}

}  // namespace vecgpu::cpu
