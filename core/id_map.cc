#include "core/id_map.h"

#include <algorithm>

namespace vecgpu {

int64_t IdMap::LabelOf(int64_t id) const {
  auto it = id_to_label_.find(id);
  return it == id_to_label_.end() ? -1 : it->second;
}

int64_t IdMap::IdOf(int64_t label) const {
  if (label < 0 || label >= static_cast<int64_t>(label_to_id_.size())) return -1;
  return label_to_id_[label];
}

void IdMap::Append(int64_t first_label, std::span<const int64_t> ids) {
  const int64_t end = first_label + static_cast<int64_t>(ids.size());
  if (static_cast<int64_t>(label_to_id_.size()) < end) label_to_id_.resize(end, -1);
  for (size_t i = 0; i < ids.size(); ++i) {
    label_to_id_[first_label + i] = ids[i];
    id_to_label_[ids[i]] = first_label + static_cast<int64_t>(i);
  }
}

void IdMap::Erase(std::span<const int64_t> labels, bool shift) {
  for (int64_t label : labels) {
    int64_t id = IdOf(label);
    if (id >= 0) id_to_label_.erase(id);
    if (label >= 0 && label < static_cast<int64_t>(label_to_id_.size())) {
      label_to_id_[label] = shift ? -2 : -1;  // -2: slot disappears below
    }
  }
  if (!shift) return;
  auto removed = std::remove(label_to_id_.begin(), label_to_id_.end(), -2);
  label_to_id_.erase(removed, label_to_id_.end());
  for (size_t label = 0; label < label_to_id_.size(); ++label) {
    if (label_to_id_[label] >= 0) id_to_label_[label_to_id_[label]] = static_cast<int64_t>(label);
  }
}

void IdMap::Clear() {
  label_to_id_.clear();
  id_to_label_.clear();
}

}  // namespace vecgpu
