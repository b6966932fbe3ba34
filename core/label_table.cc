#include "core/label_table.h"

#include <cstring>
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

bool LabelTable::OwnerOf(int64_t label, View* view, int64_t* id) const {
  if (label < 0 || label >= static_cast<int64_t>(by_label_.size())) return false;
  const Entry& e = by_label_[label];
  if (e.view == kDead) return false;
  *view = e.view;
  *id = e.id;
  return true;
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

// next_view u32, label count u64, then per label: owner view u32 (0xFFFFFFFF: removed), id i64.
std::string LabelTable::Encode() const {
  std::string out;
  out.reserve(12 + by_label_.size() * 12);
  auto put = [&out](const auto& v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(next_view_);
  put(static_cast<uint64_t>(by_label_.size()));
  for (const Entry& e : by_label_) {
    put(e.view);
    put(e.id);
  }
  return out;
}

StatusOr<LabelTable> LabelTable::Decode(std::string_view bytes) {
  auto bad = [](const std::string& what) { return DataLoss("label table: " + what); };
  if (bytes.size() < 12) return bad("shorter than its header");
  LabelTable t;
  uint64_t n = 0;
  std::memcpy(&t.next_view_, bytes.data(), 4);
  std::memcpy(&n, bytes.data() + 4, 8);
  if (t.next_view_ < 1) return bad("no base view");
  if (n != (bytes.size() - 12) / 12 || (bytes.size() - 12) % 12 != 0) {
    return bad(std::to_string(n) + " labels in " + std::to_string(bytes.size()) + " bytes");
  }
  t.by_label_.resize(n);
  for (uint64_t label = 0; label < n; ++label) {
    Entry& e = t.by_label_[label];
    std::memcpy(&e.view, bytes.data() + 12 + label * 12, 4);
    std::memcpy(&e.id, bytes.data() + 16 + label * 12, 8);
    if (e.view == kDead) continue;
    if (e.view >= t.next_view_) {
      return bad("label " + std::to_string(label) + " owned by unknown view " +
                 std::to_string(e.view));
    }
    ++t.live_;
    if (e.view != kBaseView && !t.ids_[e.view].emplace(e.id, static_cast<int64_t>(label)).second) {
      return bad("id " + std::to_string(e.id) + " twice in view " + std::to_string(e.view));
    }
  }
  return t;
}

}  // namespace vecgpu
