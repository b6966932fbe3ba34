#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/types.h"
#include "server/faissx/map_writer.h"

namespace vecgpu::server {

// What every reply names as the server's version.
inline constexpr std::string_view kServerVersion = "vecgpu-0.1.0";

// Writes k-NN results: per-query "results" plus top-level nq x k "distances"/"indices" (FAISSx's
// IVFPQ client reads those), or with binary=true, float32 / int64 bins; then "num_queries" and
// "k". Missing results (label -1) get FAISSx's distance for them (FLT_MAX) in `r`.
// vectors: optional, nq matrices (search_and_reconstruct's "vectors" per query).
void WriteSearchResult(MapWriter& w, SearchResult& r, bool binary,
                       const std::vector<FloatMatrix>* vectors);

// The fields every reply ends with: "timestamp" (now, seconds since the epoch) and "version".
void WriteReplyTrailer(MapWriter& w);

// A whole successful search reply ("success", the results, the trailer; no request_id), as the
// server sends it: the bench's echo target answers with these bytes.
std::string EncodeSearchReply(SearchResult r, bool binary);

}  // namespace vecgpu::server
