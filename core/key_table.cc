#include "core/key_table.h"

#include <algorithm>
#include <cstring>

namespace vecgpu {

const KeyTable::Object* KeyTable::Find(LabelTable::View view, std::string_view key) const {
  auto v = views_.find(view);
  if (v == views_.end()) return nullptr;
  auto it = v->second.by_key.find(std::string(key));
  return it == v->second.by_key.end() ? nullptr : &it->second;
}

const std::string* KeyTable::KeyOf(LabelTable::View view, int64_t id) const {
  auto v = views_.find(view);
  if (v == views_.end()) return nullptr;
  auto it = v->second.by_id.find(id);
  return it == v->second.by_id.end() ? nullptr : &it->second;
}

void KeyTable::Put(LabelTable::View view, const std::string& key, int64_t id, int64_t timestamp) {
  ViewKeys& v = views_[view];
  auto [it, fresh] = v.by_key.try_emplace(key);
  if (fresh) {
    it->second.id = id;
    v.by_id.emplace(id, key);
    v.next_id = std::max(v.next_id, id + 1);
  }
  it->second.timestamp = timestamp;
}

int64_t KeyTable::NextId(LabelTable::View view) const {
  auto v = views_.find(view);
  return v == views_.end() ? 0 : v->second.next_id;
}

bool KeyTable::Erase(LabelTable::View view, std::string_view key) {
  auto v = views_.find(view);
  if (v == views_.end()) return false;
  auto it = v->second.by_key.find(std::string(key));
  if (it == v->second.by_key.end()) return false;
  v->second.by_id.erase(it->second.id);
  v->second.by_key.erase(it);
  return true;
}

void KeyTable::EraseId(LabelTable::View view, int64_t id) {
  auto v = views_.find(view);
  if (v == views_.end()) return;
  auto it = v->second.by_id.find(id);
  if (it == v->second.by_id.end()) return;
  v->second.by_key.erase(it->second);
  v->second.by_id.erase(it);
}

void KeyTable::Clear(LabelTable::View view) {
  auto v = views_.find(view);
  if (v == views_.end()) return;
  v->second.by_key.clear();
  v->second.by_id.clear();
}

int64_t KeyTable::Count(LabelTable::View view) const {
  auto v = views_.find(view);
  return v == views_.end() ? 0 : static_cast<int64_t>(v->second.by_key.size());
}

std::vector<std::pair<std::string, KeyTable::Object>> KeyTable::Entries(
    LabelTable::View view) const {
  std::vector<std::pair<std::string, Object>> out;
  auto v = views_.find(view);
  if (v == views_.end()) return out;
  out.assign(v->second.by_key.begin(), v->second.by_key.end());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.second.id < b.second.id; });
  return out;
}

// view count u32; per view: view u32, next id i64, key count u64, per key (ascending id):
// id i64, timestamp i64, key (u32 length + bytes).
std::string KeyTable::Encode() const {
  std::string out;
  auto put = [&out](const auto& v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  uint32_t views = 0;
  for (const auto& [view, keys] : views_) views += keys.next_id > 0;
  if (views == 0) return out;
  put(views);
  for (const auto& [view, keys] : views_) {
    if (keys.next_id == 0) continue;
    put(view);
    put(keys.next_id);
    put(static_cast<uint64_t>(keys.by_key.size()));
    for (const auto& [key, o] : Entries(view)) {
      put(o.id);
      put(o.timestamp);
      put(static_cast<uint32_t>(key.size()));
      out.append(key);
    }
  }
  return out;
}

StatusOr<KeyTable> KeyTable::Decode(std::string_view bytes) {
  KeyTable t;
  if (bytes.empty()) return t;
  auto bad = [](const std::string& what) { return DataLoss("key table: " + what); };
  size_t at = 0;
  auto get = [&](auto* v) {
    if (bytes.size() - at < sizeof(*v)) return false;
    std::memcpy(v, bytes.data() + at, sizeof(*v));
    at += sizeof(*v);
    return true;
  };
  uint32_t views = 0;
  if (!get(&views)) return bad("shorter than its header");
  for (uint32_t i = 0; i < views; ++i) {
    LabelTable::View view = 0;
    int64_t next_id = 0;
    uint64_t count = 0;
    if (!get(&view) || !get(&next_id) || !get(&count)) return bad("view header cut short");
    if (count > bytes.size() / 20) return bad("key count past the end");
    ViewKeys& v = t.views_[view];
    v.next_id = next_id;
    for (uint64_t k = 0; k < count; ++k) {
      Object o;
      uint32_t n = 0;
      if (!get(&o.id) || !get(&o.timestamp) || !get(&n) || bytes.size() - at < n) {
        return bad("key cut short");
      }
      std::string key(bytes.data() + at, n);
      at += n;
      if (o.id < 0 || o.id >= next_id) return bad("id " + std::to_string(o.id) + " out of range");
      if (!v.by_id.emplace(o.id, key).second || !v.by_key.emplace(key, o).second) {
        return bad("key or id given twice");
      }
    }
  }
  if (at != bytes.size()) return bad("bytes after the last view");
  return t;
}

}  // namespace vecgpu
