#pragma once

#include <cstdint>

#include "core/store/wal_record.h"
#include "core/util/status.h"

namespace vecgpu {

// Where the Engine records each mutation before applying it (the write-ahead log, through
// core/store). The Engine appends under the write order of the storage it changes, so records
// about one storage come in the order their mutations apply, and waits for durability before
// applying; a record the log refuses (or fails to make durable) refuses its mutation, which
// then changes nothing. Thread-safe.
class MutationLog {
 public:
  // Where Append put a record.
  struct Ticket {
    uint64_t seq = 0;         // its sequence number
    uint64_t generation = 0;  // the log's generation then (a failure starts a new one)
  };

  virtual ~MutationLog() = default;
  // Appends `record` (not yet durable).
  virtual StatusOr<Ticket> Append(const store::WalRecord& record) = 0;
  // Returns once the record is durable under the configured durability; an error when the log
  // failed before it was (the record is then never acknowledged).
  virtual Status WaitDurable(const Ticket& ticket) = 0;
  // The sequence number of the last record appended.
  virtual uint64_t LastSeq() const = 0;

  // Append, then WaitDurable.
  StatusOr<uint64_t> Log(const store::WalRecord& record) {
    ASSIGN_OR_RETURN(Ticket t, Append(record));
    RETURN_IF_ERROR(WaitDurable(t));
    return t.seq;
  }
};

}  // namespace vecgpu
