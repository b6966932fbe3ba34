#include "server/wire_status.h"

namespace vecgpu::server {

std::string_view WireErrorCode(StatusCode code) {
  switch (code) {
    case StatusCode::kUnauthenticated:
    case StatusCode::kPermissionDenied:
      return "AUTH_ERROR";
    case StatusCode::kFailedPrecondition:
      return "NOT_TRAINED";
    case StatusCode::kDeadlineExceeded:
      return "TIMEOUT";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";  // a limit or out of memory: retrying does not help
    case StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented:
      return "UNSUPPORTED";
    case StatusCode::kUnavailable:
      return "BUSY";  // queues full or shutting down: retry later
    case StatusCode::kCancelled:
      return "CANCELLED";  // the caller took the request back
    default:
      return "INTERNAL";
  }
}

}  // namespace vecgpu::server
