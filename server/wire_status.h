#pragma once

#include <string_view>

#include "core/util/status.h"

namespace vecgpu::server {

// The FAISSx `error_code` for a Status: the one table that maps inside errors to the wire.
// FAISSx clients know AUTH_ERROR, TIMEOUT, NOT_TRAINED and TRAINING_ERROR; the other codes
// are vecgpu's and name the gRPC-style category.
std::string_view WireErrorCode(StatusCode code);

}  // namespace vecgpu::server
