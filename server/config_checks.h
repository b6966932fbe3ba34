#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/util/status.h"
#include "server/config.h"

namespace vecgpu::server {

// The checks and derived settings of a parsed `serve` (ParseCommandLine calls it): every
// value in range, files readable, flags that go together given together. InvalidArgument
// names the flag.
Status FinishOptions(ServeOptions& o, const std::string& auth_keys, const std::string& auth_file);

// etcd's TLS flags against its URLs: https:// for all of them or none, the flags only with
// https://, a client certificate with its key.
Status CheckEtcdTls(const std::vector<std::string>& urls, const std::string& cacert,
                    const std::string& cert, const std::string& key);

// `--fake-gpus` ("1024,1024": MiB per fake GPU) as bytes per GPU; InvalidArgument otherwise.
StatusOr<std::vector<int64_t>> ParseFakeGpus(const std::string& spec);

}  // namespace vecgpu::server
