#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace vecgpu {

// Maps the user ids of an IDMap collection onto the labels its backend assigns (see Backend).
// Each id names one vector; adding an existing id replaces it (the Engine removes the old
// vector first). Not thread-safe: guarded by the lock of the storage it maps.
class IdMap {
 public:
  bool Contains(int64_t id) const { return id_to_label_.count(id) != 0; }
  // -1 when the id is unknown.
  int64_t LabelOf(int64_t id) const;
  // -1 when the label carries no id (removed, or added around the map).
  int64_t IdOf(int64_t label) const;
  // Records ids[i] -> first_label + i.
  void Append(int64_t first_label, std::span<const int64_t> ids);
  // Forgets the given labels, already removed from the backend. With `shift`, the backend
  // renumbered the remaining labels densely in their old order, and so does the map.
  void Erase(std::span<const int64_t> labels, bool shift);
  void Clear();
  int64_t size() const { return static_cast<int64_t>(id_to_label_.size()); }

 private:
  std::vector<int64_t> label_to_id_;  // index: label; -1 where no id
  std::unordered_map<int64_t, int64_t> id_to_label_;
};

}  // namespace vecgpu
