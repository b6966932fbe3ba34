#pragma once

#include "core/store/wal_record.h"
#include "core/util/status.h"

namespace vecgpu {

// Where the Engine records each mutation before applying it (the write-ahead log, through
// core/store). Log returns once the record is durable; an error refuses the mutation, which
// then changes nothing. Called from the collection's queue, so records of one collection come
// in the order their mutations apply. Thread-safe.
class MutationLog {
 public:
  virtual ~MutationLog() = default;
  virtual Status Log(const store::WalRecord& record) = 0;
};

}  // namespace vecgpu
