// String ids: the Vald API's objects over id-mapped collections (core/key_table.h). Every
// write is checked against the collection's state under its write order, then logged as the
// unconditional change it makes (put_keys / remove_keys / stamp_key), then applied, so a
// replay makes exactly the same change.
#include <chrono>
#include <unordered_set>

#include "core/engine.h"

#include "core/util/interrupt.h"
#include "core/view_ops.h"

namespace vecgpu {
namespace {

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status MissingKey(const std::string& key, const std::string& name) {
  return NotFound("id '" + key + "' is not in index '" + name + "'");
}

}  // namespace

bool TimestampCondition::Matches(int64_t t) const {
  switch (op) {
    case kEq:
      return t == timestamp;
    case kNe:
      return t != timestamp;
    case kGe:
      return t >= timestamp;
    case kGt:
      return t > timestamp;
    case kLe:
      return t <= timestamp;
    case kLt:
      return t < timestamp;
  }
  return false;
}

StatusOr<std::shared_ptr<Collection>> Engine::FindKeyed(const std::string& tenant,
                                                        const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (!c->has_ids()) {
    return FailedPrecondition("index '" + name +
                              "' has no id map, which string ids need; create it as an IDMap "
                              "type (e.g. \"IDMap2,Flat\")");
  }
  return c;
}

Status Engine::PutKeyed(const std::string& tenant, const std::string& name,
                        std::vector<KeyedObject> objects, PutMode mode, bool skip_strict) {
  ASSIGN_OR_RETURN(auto c, FindKeyed(tenant, name));
  if (objects.empty()) return InvalidArgument("requests: no object given");
  RETURN_IF_ERROR(CheckQuota(tenant, c.get(), 0, static_cast<int64_t>(objects.size())));
  FloatMatrix x;
  x.cols = c->spec().dim;
  x.rows = static_cast<int64_t>(objects.size());
  x.data.reserve(x.rows * x.cols);
  std::unordered_set<std::string_view> seen;
  std::vector<std::string> keys;
  std::vector<int64_t> stamps;
  const int64_t now = NowNanos();
  for (const KeyedObject& o : objects) {
    if (o.key.empty()) return InvalidArgument("id: must not be empty");
    if (static_cast<int64_t>(o.key.size()) > limits_.max_object_id_length) {
      return InvalidArgument("id: " + std::to_string(o.key.size()) + " bytes, above the limit of " +
                             std::to_string(limits_.max_object_id_length));
    }
    if (!seen.insert(o.key).second) {
      return InvalidArgument("id '" + o.key + "' is given twice in one request");
    }
    if (static_cast<int64_t>(o.vector.size()) != x.cols) {
      return InvalidArgument("vector of id '" + o.key + "': dimension " +
                             std::to_string(o.vector.size()) + ", index '" + name +
                             "' has dimension " + std::to_string(x.cols));
    }
    x.data.insert(x.data.end(), o.vector.begin(), o.vector.end());
    keys.push_back(o.key);
    stamps.push_back(o.timestamp != 0 ? o.timestamp : now);
  }
  RETURN_IF_ERROR(CheckMatrix("vector", x, c->spec(), limits_.max_add_vectors));
  MutexLock order(c->storage()->write_order());  // nothing changes between check and apply
  UninterruptibleScope uninterruptible;  // logged: replay must match
  RETURN_IF_ERROR(
      c->ReadKeyed([&](const Backend& b, const LabelTable& t, const KeyTable& k) -> Status {
        if (!b.is_trained()) return NotTrained(name);
        for (size_t i = 0; i < keys.size(); ++i) {
          const KeyTable::Object* o = k.Find(c->view(), keys[i]);
          if (!o) {
            if (mode == PutMode::kUpdate) return MissingKey(keys[i], name);
            continue;
          }
          const bool skip = skip_strict || objects[i].skip_strict;
          if (mode == PutMode::kInsert) {
            if (skip) continue;
            return AlreadyExists("id '" + keys[i] + "' is already in index '" + name + "'");
          }
          if (skip) continue;
          std::vector<float> stored(x.cols);
          const int64_t id[] = {o->id};
          if (ReconstructIds(b, t, c->view(), id, stored.data()).ok() &&
              std::equal(stored.begin(), stored.end(), x.data.begin() + i * x.cols)) {
            return AlreadyExists("id '" + keys[i] + "': index '" + name +
                                 "' already stores this vector");
          }
        }
        return Status::Ok();
      }));
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     store::WalRecord r{
                         .type = store::RecordType::kPutKeys, .tenant = tenant, .collection = name};
                     r.keys = keys;
                     r.timestamps = stamps;
                     r.vectors = x;
                     return r;
                   }));
  RETURN_IF_ERROR(
      Outcome(*c->storage(), logged, tenant, name, PutKeysLocked(*c, keys, x, stamps)));
  c->stats().adds++;
  c->stats().vectors_added += x.rows;
  return Status::Ok();
}

Status Engine::PutKeysLocked(Collection& c, const std::vector<std::string>& keys,
                             const FloatMatrix& x, const std::vector<int64_t>& timestamps) {
  return c.WriteKeyed([&](Backend& b, LabelTable& t, KeyTable& k) -> Status {
    // Ids first (new keys take the next ones no vector of the view has, in order), so a
    // failed add changes nothing.
    std::vector<int64_t> ids;
    int64_t next = k.NextId(c.view());
    for (const std::string& key : keys) {
      if (const KeyTable::Object* o = k.Find(c.view(), key)) {
        ids.push_back(o->id);
        continue;
      }
      while (t.LabelOf(c.view(), next) >= 0) ++next;  // an id added without a key
      ids.push_back(next++);
    }
    RETURN_IF_ERROR(AddLocked(c, b, t, x, ids));
    for (size_t i = 0; i < keys.size(); ++i) k.Put(c.view(), keys[i], ids[i], timestamps[i]);
    return Status::Ok();
  });
}

Status Engine::RemoveKeyed(const std::string& tenant, const std::string& name,
                           const std::vector<std::string>& keys) {
  ASSIGN_OR_RETURN(auto c, FindKeyed(tenant, name));
  if (keys.empty()) return InvalidArgument("requests: no id given");
  MutexLock order(c->storage()->write_order());
  UninterruptibleScope uninterruptible;  // logged: replay must match
  RETURN_IF_ERROR(
      c->ReadKeyed([&](const Backend& b, const LabelTable&, const KeyTable& k) -> Status {
        std::unordered_set<std::string_view> seen;
        for (const std::string& key : keys) {
          if (!k.Find(c->view(), key)) return MissingKey(key, name);
          if (!seen.insert(key).second) {
            return InvalidArgument("id '" + key + "' is given twice in one request");
          }
        }
        if (!b.can_remove()) {
          return Unimplemented("remove: index '" + name + "' is a " + c->spec().kind() +
                               " index, which cannot remove vectors");
        }
        return Status::Ok();
      }));
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     store::WalRecord r{.type = store::RecordType::kRemoveKeys,
                                        .tenant = tenant,
                                        .collection = name};
                     r.keys = keys;
                     return r;
                   }));
  RETURN_IF_ERROR(Outcome(*c->storage(), logged, tenant, name, RemoveKeysLocked(*c, keys)));
  c->stats().removals += static_cast<int64_t>(keys.size());
  return Status::Ok();
}

Status Engine::RemoveKeysLocked(Collection& c, const std::vector<std::string>& keys) {
  return c.WriteKeyed([&](Backend& b, LabelTable& t, KeyTable& k) -> Status {
    std::vector<int64_t> labels;
    for (const std::string& key : keys) {
      const KeyTable::Object* o = k.Find(c.view(), key);
      if (!o) return MissingKey(key, c.name());
      if (int64_t label = t.LabelOf(c.view(), o->id); label >= 0) labels.push_back(label);
    }
    if (!labels.empty()) {
      RETURN_IF_ERROR(b.RemoveLabels(labels).status());
      t.Erase(labels, b.labels_shift_on_remove());
    }
    for (const std::string& key : keys) k.Erase(c.view(), key);
    return Status::Ok();
  });
}

StatusOr<std::vector<std::string>> Engine::RemoveKeyedWhere(
    const std::string& tenant, const std::string& name,
    const std::vector<TimestampCondition>& conditions) {
  ASSIGN_OR_RETURN(auto c, FindKeyed(tenant, name));
  MutexLock order(c->storage()->write_order());
  UninterruptibleScope uninterruptible;  // logged: replay must match
  std::vector<std::string> keys =
      c->ReadKeyed([&](const Backend&, const LabelTable&, const KeyTable& k) {
        std::vector<std::string> out;
        for (const auto& [key, o] : k.Entries(c->view())) {
          bool all = true;
          for (const TimestampCondition& cond : conditions) all = all && cond.Matches(o.timestamp);
          if (all) out.push_back(key);
        }
        return out;
      });
  if (keys.empty()) return keys;
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     store::WalRecord r{.type = store::RecordType::kRemoveKeys,
                                        .tenant = tenant,
                                        .collection = name};
                     r.keys = keys;
                     return r;
                   }));
  RETURN_IF_ERROR(Outcome(*c->storage(), logged, tenant, name, RemoveKeysLocked(*c, keys)));
  c->stats().removals += static_cast<int64_t>(keys.size());
  return keys;
}

Status Engine::StampKey(const std::string& tenant, const std::string& name, const std::string& key,
                        int64_t timestamp, bool force) {
  ASSIGN_OR_RETURN(auto c, FindKeyed(tenant, name));
  MutexLock order(c->storage()->write_order());
  UninterruptibleScope uninterruptible;  // logged: replay must match
  RETURN_IF_ERROR(c->ReadKeyed([&](const Backend&, const LabelTable&, const KeyTable& k) -> Status {
    const KeyTable::Object* o = k.Find(c->view(), key);
    if (!o) return MissingKey(key, name);
    if (timestamp < o->timestamp && !force) {
      return InvalidArgument("timestamp: " + std::to_string(timestamp) + " is older than id '" +
                             key + "''s " + std::to_string(o->timestamp) +
                             " (force to set it anyway)");
    }
    return Status::Ok();
  }));
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     store::WalRecord r{
                         .type = store::RecordType::kStampKey, .tenant = tenant, .collection = name};
                     r.keys = {key};
                     r.timestamps = {timestamp};
                     return r;
                   }));
  return Outcome(*c->storage(), logged, tenant, name,
                 c->WriteKeyed([&](Backend&, LabelTable&, KeyTable& k) -> Status {
                   const KeyTable::Object* o = k.Find(c->view(), key);
                   if (!o) return MissingKey(key, name);
                   k.Put(c->view(), key, o->id, timestamp);
                   return Status::Ok();
                 }));
}

StatusOr<int64_t> Engine::KeyTimestamp(const std::string& tenant, const std::string& name,
                                       const std::string& key) const {
  ASSIGN_OR_RETURN(auto c, FindKeyed(tenant, name));
  return c->ReadKeyed(
      [&](const Backend&, const LabelTable&, const KeyTable& k) -> StatusOr<int64_t> {
        const KeyTable::Object* o = k.Find(c->view(), key);
        if (!o) return MissingKey(key, name);
        return o->timestamp;
      });
}

StatusOr<KeyedObject> Engine::GetKeyed(const std::string& tenant, const std::string& name,
                                       const std::string& key) const {
  ASSIGN_OR_RETURN(auto c, FindKeyed(tenant, name));
  return c->ReadKeyed(
      [&](const Backend& b, const LabelTable& t, const KeyTable& k) -> StatusOr<KeyedObject> {
        const KeyTable::Object* o = k.Find(c->view(), key);
        if (!o) return MissingKey(key, name);
        KeyedObject out{key, std::vector<float>(c->spec().dim), o->timestamp};
        const int64_t id[] = {o->id};
        RETURN_IF_ERROR(ReconstructIds(b, t, c->view(), id, out.vector.data()));
        return out;
      });
}

StatusOr<std::vector<KeyedObject>> Engine::ListKeyed(const std::string& tenant,
                                                     const std::string& name, int64_t after_id,
                                                     int64_t limit, int64_t* last_id,
                                                     std::vector<int64_t>* ids) const {
  ASSIGN_OR_RETURN(auto c, FindKeyed(tenant, name));
  return c->ReadKeyed([&](const Backend& b, const LabelTable& t,
                          const KeyTable& k) -> StatusOr<std::vector<KeyedObject>> {
    std::vector<KeyedObject> out;
    *last_id = after_id;
    for (const auto& [key, o] : k.Entries(c->view())) {
      if (o.id <= after_id) continue;
      if (static_cast<int64_t>(out.size()) >= limit) break;
      KeyedObject obj{key, std::vector<float>(c->spec().dim), o.timestamp};
      const int64_t id[] = {o.id};
      RETURN_IF_ERROR(ReconstructIds(b, t, c->view(), id, obj.vector.data()));
      out.push_back(std::move(obj));
      if (ids) ids->push_back(o.id);
      *last_id = o.id;
    }
    return out;
  });
}

StatusOr<std::vector<std::string>> Engine::KeysOf(const std::string& tenant,
                                                  const std::string& name,
                                                  std::span<const int64_t> ids) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return c->ReadKeyed([&](const Backend&, const LabelTable&, const KeyTable& k) {
    std::vector<std::string> out;
    out.reserve(ids.size());
    for (int64_t id : ids) {
      const std::string* key = c->has_ids() ? k.KeyOf(c->view(), id) : nullptr;
      out.push_back(key ? *key : std::string());
    }
    return out;
  });
}

StatusOr<int64_t> Engine::CountKeyed(const std::string& tenant, const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return c->ReadKeyed([&](const Backend&, const LabelTable&, const KeyTable& k) {
    return c->has_ids() ? k.Count(c->view()) : int64_t{0};
  });
}

}  // namespace vecgpu
