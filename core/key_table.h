#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/label_table.h"
#include "core/util/status.h"

namespace vecgpu {

// The string ids of the Vald API, for the id-mapped collections (views) of one storage: per
// view, key -> (int64 id, timestamp) and back. The int64 id is the one the view's LabelTable
// maps to a label, so a key is an IDMap id with a name: searches, removals and resets through
// either protocol see the same vectors. The Engine gives new keys ids from NextId on, in
// order, skipping ids the view holds already, so replaying the same puts gives the same ids.
// Not thread-safe: guarded by the lock of its storage.
class KeyTable {
 public:
  struct Object {
    int64_t id = -1;
    int64_t timestamp = 0;  // Unix nanoseconds, as Vald stamps objects
  };

  // The object `key` names in `view`, or null.
  const Object* Find(LabelTable::View view, std::string_view key) const;
  // The key of `id` in `view`, or null (an id added without a key, through FAISSx).
  const std::string* KeyOf(LabelTable::View view, int64_t id) const;
  // Binds `key` to `id` (REQUIRES: its own id, or for a new key an id no key has) and stamps it.
  void Put(LabelTable::View view, const std::string& key, int64_t id, int64_t timestamp);
  // One past the largest id a key ever had in `view`: where new keys' ids start.
  int64_t NextId(LabelTable::View view) const;
  // Forgets `key`; false when it was not there.
  bool Erase(LabelTable::View view, std::string_view key);
  // Forgets the key of `id`, if it has one (a removal by id).
  void EraseId(LabelTable::View view, int64_t id);
  // Forgets every key of `view` (a reset), keeping its id counter.
  void Clear(LabelTable::View view);
  int64_t Count(LabelTable::View view) const;
  bool HasKeys(LabelTable::View view) const { return Count(view) > 0; }
  // Every (key, object) of `view`, by ascending id.
  std::vector<std::pair<std::string, Object>> Entries(LabelTable::View view) const;

  // For snapshots (core/store/FORMAT.md, "Key table"); empty when no view has a key.
  std::string Encode() const;
  // From Encode()'s bytes ("" is an empty table); DataLoss naming the problem otherwise.
  static StatusOr<KeyTable> Decode(std::string_view bytes);

 private:
  struct ViewKeys {
    std::unordered_map<std::string, Object> by_key;
    std::unordered_map<int64_t, std::string> by_id;
    int64_t next_id = 0;
  };
  std::map<LabelTable::View, ViewKeys> views_;
};

}  // namespace vecgpu
