#include "core/label_table.h"

#include <unordered_set>

namespace vecgpu {

void LabelTable::Append(int64_t first_label, int64_t n, View view, std::span<const int64_t> ids) {
  const int64_t end = first_label + n;
  if (static_cast<int64_t>(by_label_.size()) < end) by_label_.resize(end);
  auto* map = view == kBaseView ? nullptr : &ids_[view];
  for (int64_t i = 0; i < n; ++i) {
    Entry& e = by_label_[first_label + i];
    if (e.view == kDead) ++live_;
    e.view = view;
    e.id = map ? ids[i] : -1;
    if (map) (*map)[ids[i]] = first_label + i;
  }
}

void LabelTable::Erase(std::span<const int64_t> labels, bool shift) {
  for (int64_t label : labels) {
    if (label < 0 || label >= static_cast<int64_t>(by_label_.size())) continue;
    Entry& e = by_label_[label];
    if (e.view == kDead) continue;
    if (e.view != kBaseView) {
      // An upsert maps the id to its new label before the old one is erased.
      auto& map = ids_[e.view];
      if (auto it = map.find(e.id); it != map.end() && it->second == label) map.erase(it);
    }
    e.view = kDead;
    e.id = -1;
    --live_;
  }
  if (!shift) {
    while (!by_label_.empty() && by_label_.back().view == kDead) by_label_.pop_back();
    return;
  }
  // Dense renumbering: survivors keep their order, so every view's labels move down.
  size_t out = 0;
  for (size_t label = 0; label < by_label_.size(); ++label) {
    if (by_label_[label].view == kDead) continue;
    by_label_[out] = by_label_[label];
    if (by_label_[out].view != kBaseView) {
      ids_[by_label_[out].view][by_label_[out].id] = static_cast<int64_t>(out);
    }
    ++out;
  }
  by_label_.resize(out);
}

void LabelTable::Clear() {
  by_label_.clear();
  ids_.clear();
  live_ = 0;
}

int64_t LabelTable::LabelOf(View view, int64_t id) const {
  if (view == kBaseView) {
    return id >= 0 && id < static_cast<int64_t>(by_label_.size()) && by_label_[id].view != kDead
               ? id
               : -1;
  }
  auto v = ids_.find(view);
  if (v == ids_.end()) return -1;
  auto it = v->second.find(id);
  return it == v->second.end() ? -1 : it->second;
}

int64_t LabelTable::IdOf(View view, int64_t label) const {
  if (label < 0 || label >= static_cast<int64_t>(by_label_.size())) return -1;
  const Entry& e = by_label_[label];
  if (e.view == kDead) return -1;
  if (view == kBaseView) return label;
  return e.view == view ? e.id : -1;
}

std::vector<int64_t> LabelTable::LabelsOf(View view) const {
  std::vector<int64_t> out;
  out.reserve(CountOf(view));
  for (size_t label = 0; label < by_label_.size(); ++label) {
    const View owner = by_label_[label].view;
    if (owner != kDead && (view == kBaseView || owner == view)) {
      out.push_back(static_cast<int64_t>(label));
    }
  }
  return out;
}

int64_t LabelTable::CountOf(View view) const {
  if (view == kBaseView) return live_;
  auto v = ids_.find(view);
  return v == ids_.end() ? 0 : static_cast<int64_t>(v->second.size());
}

}  // namespace vecgpu
