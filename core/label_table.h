#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/util/status.h"

namespace vecgpu {

// Which collection owns each vector of one index storage, and under which user id.
//
// One table belongs to each IndexStorage and is shared by every collection over that storage:
// the collection that created it (view 0, which names vectors by their backend labels and
// sees every vector of the storage, as FAISS's base index does) and each "IDMap:{base}" view
// (views 1, 2, ...), which sees only the vectors added through it, under the int64 ids given
// then. Because there is one table, a removal, reset or relabelling made through any view is
// seen by all of them (a per-wrapper map went stale when another wrapper shifted the labels).
//
// Labels follow the backend's contract (core/backend.h): flat-storage kinds renumber densely
// on removal (Erase with shift), IVF kinds never reuse a label.
// Not thread-safe: guarded by the lock of the storage it describes.
class LabelTable {
 public:
  using View = uint32_t;
  static constexpr View kBaseView = 0;

  // A new id namespace over this storage; never reused, even after its collection is dropped.
  View NewView() { return next_view_++; }
  // One past the last view made.
  View next_view() const { return next_view_; }

  // Records that labels first_label .. first_label + n - 1 were added through `view`: under
  // ids[i] for an IDMap view (ids.size() == n), or under their labels for the base view (ids
  // empty).
  void Append(int64_t first_label, int64_t n, View view, std::span<const int64_t> ids);
  // Forgets labels already removed from the backend. With `shift` the backend renumbered the
  // remaining labels densely in their old order, and so does the table.
  void Erase(std::span<const int64_t> labels, bool shift);
  void Clear();

  // The label of `id` in `view`, or -1. For the base view an id is a label.
  int64_t LabelOf(View view, int64_t id) const;
  // The id `label` has in `view`, or -1 when the label is unknown or owned by another view
  // (the base view sees every label under itself).
  int64_t IdOf(View view, int64_t label) const;
  // The view that added `label` and the id it has there (-1 for the base view); false when
  // the label is unknown or removed.
  bool OwnerOf(int64_t label, View* view, int64_t* id) const;
  // The labels `view` sees, ascending (the storage order of every backend).
  std::vector<int64_t> LabelsOf(View view) const;
  // How many vectors `view` sees.
  int64_t CountOf(View view) const;
  // Vectors in the storage.
  int64_t size() const { return live_; }

  // The table's bytes, for snapshots (core/store/FORMAT.md, "Label table").
  std::string Encode() const;
  // From Encode()'s bytes; DataLoss naming the problem for bytes that are not a table.
  static StatusOr<LabelTable> Decode(std::string_view bytes);

 private:
  struct Entry {
    int64_t id = -1;    // user id (IDMap views) or -1
    View view = kDead;  // owner, kDead for a removed label (IVF kinds leave holes)
  };
  static constexpr View kDead = UINT32_MAX;

  std::vector<Entry> by_label_;
  // Per IDMap view: id -> label.
  std::unordered_map<View, std::unordered_map<int64_t, int64_t>> ids_;
  int64_t live_ = 0;
  View next_view_ = 1;
};

}  // namespace vecgpu
