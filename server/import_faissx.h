#pragma once

// `vecgpu import-faissx DIR --tenant T --data-dir D`: loads the indexes a FAISSx server
// persisted (its --data-dir: `<id>.faiss` from faiss.write_index, `<id>.json` with index_id,
// dimension and base_index_id) into vecgpu's data directory, one collection per file.

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "core/store/snapshot.h"
#include "core/util/status.h"
#include "server/config.h"

namespace vecgpu::server {

// Turns the bytes of a FAISS index file into the snapshot Engine::Import takes, as collection
// `name` (dimension `dimension`, or the file's when -1). An IndexIDMap / IndexIDMap2 becomes
// an id-mapped collection ("IDMap,<factory>", "IDMap2,<factory>") over its unwrapped base,
// with the same ids; every other index keeps its labels, as FAISS numbered them. Fails naming
// why for a file FAISS cannot read, a kind vecgpu does not serve, or an index whose parts
// disagree (a damaged file), so that nothing that could not be served is imported. The bytes
// are checked against FAISS's format for the kinds vecgpu imports before FAISS reads them: no
// size they declare makes FAISS allocate much more than they hold, and no other kind's reader
// runs. Messages say what is wrong without quoting the bytes (at most a count or an id of an
// index FAISS could read).
StatusOr<store::StorageSnapshot> ConvertFaissxIndex(std::vector<uint8_t> bytes,
                                                    const std::string& name, int64_t dimension);

// Runs the command: one line per index to `out` ("loaded <id>: <index_type>, <n> vectors" or
// "refused <id>: <reason>", the reason naming the file at fault) and a summary; errors that
// stop it to `err`. Files in the directory are read only when they are regular files (not
// through symbolic links, nor FIFOs, devices or directories), each once, from the descriptor
// checked. Returns the exit code: 0 when every index loaded, 1 when any was refused, 2 when
// the import could not run (no such directory, the data directory in use by a server or
// unreadable).
int RunImportFaissx(const ImportFaissxOptions& options, std::ostream& out, std::ostream& err);

}  // namespace vecgpu::server
