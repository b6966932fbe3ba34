#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "core/util/status.h"

namespace vecgpu::server::faissx_import {

// The most inverted lists an IVF file may declare: vecgpu serves no more (index_spec.cc), and
// FAISS allocates an entry for each list before reading any (a sparse size table can declare
// millions in a few bytes).
constexpr uint64_t kMaxNlist = uint64_t{1} << 20;

// The most buckets a search of an imported IndexBinaryHash may probe (its nflip bounds them).
constexpr uint64_t kMaxHashProbes = uint64_t{1} << 20;

// What vecgpu imports, for the messages that refuse the rest.
constexpr char kFloatKinds[] =
    "it imports flat, IVF-Flat, IVF-PQ, IVF-SQ, HNSW-Flat, PQ and SQ indexes, under IndexIDMap / "
    "IndexIDMap2 too, and binary flat, IVF and hash indexes";
constexpr char kBinaryKinds[] = "binary: flat, IVF and hash indexes, without an IDMap";

inline Status Bad(const std::string& what) { return InvalidArgument(what); }

inline Status NotImported(const std::string& type, const char* kinds) {
  return Unimplemented("FAISS's " + type + " is not a kind vecgpu imports (" + kinds + ")");
}

// Checks, before FAISS reads them, that `bytes` hold one FAISS index of the kinds vecgpu
// imports (`binary`: a binary one) and nothing after it, and that every size it declares fits
// in the bytes that follow, so that FAISS reading the same bytes never allocates much more than
// the file holds (server/faiss_file_check.cc says why). InvalidArgument / Unimplemented name
// offsets and kinds, never the file's bytes.
Status CheckFaissFile(std::span<const uint8_t> bytes, bool binary);

}  // namespace vecgpu::server::faissx_import
