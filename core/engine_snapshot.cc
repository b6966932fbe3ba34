// The Engine's side of snapshots: listing storages, capturing one at a point of the log, and
// restoring one at recovery (core/store/store.cc drives them).
#include <chrono>
#include <functional>
#include <thread>
#include <unordered_set>

#include "core/engine.h"

namespace vecgpu {

namespace {
// How long TakeBusy tries for a storage's write order: a short write (an add acknowledged a
// moment ago) releases it well within this; a training run does not.
constexpr auto kBusyPatience = std::chrono::milliseconds(250);

// The snapshot owns a held storage's write order across calls, which clang's analysis cannot
// follow.
bool TryTake(Mutex& mu) NO_THREAD_SAFETY_ANALYSIS { return mu.TryLock(); }
void Give(Mutex& mu) NO_THREAD_SAFETY_ANALYSIS { mu.Unlock(); }
struct Release {
  Mutex& mu;
  ~Release() { Give(mu); }
};
}  // namespace

Engine::Frozen Engine::Freeze() const {
  Frozen f;
  MutexLock catalog(catalog_mu_);
  f.last_seq = log_ ? log_->LastSeq() : 0;
  f.last_drop_seq = last_drop_seq_;
  std::unordered_set<const IndexStorage*> seen;
  for (const auto& c : registry_.All()) {
    if (!seen.insert(c->storage().get()).second) continue;
    (TryTake(c->storage()->write_order()) ? f.held : f.busy).push_back(c->storage());
  }
  return f;
}

bool Engine::TakeBusy(IndexStorage& storage) {
  const auto until = std::chrono::steady_clock::now() + kBusyPatience;
  for (;;) {
    if (TryTake(storage.write_order())) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Engine::ReleaseHeld(IndexStorage& storage) { Give(storage.write_order()); }

StatusOr<Engine::StorageImage> Engine::CaptureHeld(IndexStorage& storage,
                                                   std::optional<uint64_t> unchanged_since) const {
  // Under the write order no record about the storage is logged and not yet applied, so its
  // state is exactly that of the log up to its last record.
  Release order{storage.write_order()};
  StorageImage img;
  store::StorageSnapshot& s = img.snapshot;
  s.seq = log_ ? log_->LastSeq() : 0;
  const IndexStorage::Origin& o = storage.origin();
  s.storage_id = o.id;
  s.storage_seq = storage.log_seq();
  s.tenant = o.tenant;
  s.name = o.name;
  s.index_type = o.index_type;
  s.dim = o.dim;
  s.metric = o.metric;
  s.device = o.device;
  return storage.Inspect([&](const Backend& b, const LabelTable& t, const KeyTable& keys,
                             const std::vector<IndexStorage::Name>& names,
                             uint64_t version) -> StatusOr<StorageImage> {
    img.version = version;
    img.alive = !names.empty();
    for (const auto& n : names) s.names.push_back({n.name, n.index_type, n.view});
    if (!img.alive || (unchanged_since && *unchanged_since == version)) {
      img.changed = false;
      return std::move(img);
    }
    s.factory = b.spec().factory;
    s.next_label = b.next_label();
    s.labels = t.Encode();
    s.keys = keys.Encode();
    ASSIGN_OR_RETURN(s.index, b.Serialize());
    return std::move(img);
  });
}

StatusOr<uint64_t> Engine::Restore(const store::StorageSnapshot& snap) {
  MutexLock catalog(catalog_mu_);
  return RestoreLocked(snap);
}

StatusOr<CollectionInfo> Engine::Import(const std::string& tenant, store::StorageSnapshot snap) {
  RETURN_IF_ERROR(CheckName(snap.name));
  if (snap.dim < 1 || snap.dim > limits_.max_dimension) {
    return InvalidArgument("dimension: must be within 1.." + std::to_string(limits_.max_dimension) +
                           ", got " + std::to_string(snap.dim));
  }
  snap.tenant = tenant;
  MutexLock catalog(catalog_mu_);
  for (const auto& n : snap.names) RETURN_IF_ERROR(registry_.CheckInsert(tenant, n.name));
  // Logged as the create it amounts to, whose sequence number names the storage; the caller
  // snapshots it (a crash before that leaves the collection created and empty).
  store::WalRecord r{.type = store::RecordType::kCreate, .tenant = tenant, .collection = snap.name};
  r.index_type = snap.index_type;
  r.dim = snap.dim;
  r.metric = snap.metric;
  r.device = snap.device;
  // Logged only once everything in it checks out, so a refused import logs nothing.
  r.storage_seq = 1;  // the create of a new storage (storage id 0: this record names it)
  RETURN_IF_ERROR(RestoreLocked(snap, [&]() -> StatusOr<uint64_t> {
                    return log_ ? log_->Log(r) : StatusOr<uint64_t>(replay_seq_);
                  }).status());
  return Describe(tenant, snap.name);
}

StatusOr<uint64_t> Engine::RestoreLocked(const store::StorageSnapshot& snap,
                                         const std::function<StatusOr<uint64_t>()>& log_create) {
  auto bad = [&](const std::string& what) {
    return DataLoss("snapshot of index '" + snap.name + "' (tenant '" + snap.tenant +
                    "'): " + what);
  };
  auto parsed = ParseIndexType(snap.index_type, snap.dim, snap.metric);
  if (!parsed.ok()) return bad(parsed.status().message());
  const IndexSpec spec = *parsed;
  IndexSpec loaded = spec;
  if (spec.nlist > 0 && !spec.binary && !snap.factory.empty() && snap.factory != spec.factory) {
    // Reclustered since it was created: as Recluster builds it.
    auto re = ParseIndexType(snap.factory, snap.dim, MetricName(spec.metric));
    if (!re.ok()) return bad(re.status().message());
    loaded = *re;
    loaded.index_type = spec.index_type;
  }
  const std::string who = snap.tenant + "/" + snap.name;
  auto host =
      factory_.Load(loaded, {reinterpret_cast<const char*>(snap.index.data()), snap.index.size()},
                    snap.next_label);
  if (!host.ok()) return bad(host.status().message());
  std::unique_ptr<Backend> backend = std::move(*host);
  if (devices_) {
    ASSIGN_OR_RETURN(auto placed,
                     PlacedBackend::Create(std::move(backend), *devices_, snap.device, who));
    backend = std::move(placed);
  }
  const int64_t ntotal = backend->ntotal();
  auto labels = LabelTable::Decode(snap.labels);
  if (!labels.ok()) return bad(labels.status().message());
  if (labels->size() != ntotal) {
    return bad("its label table holds " + std::to_string(labels->size()) + " vectors, its index " +
               std::to_string(ntotal));
  }
  auto keys = KeyTable::Decode(snap.keys);
  if (!keys.ok()) return bad(keys.status().message());
  std::vector<IndexStorage::Name> names;
  std::vector<IndexSpec> specs;
  for (const auto& n : snap.names) {
    if (n.view >= labels->next_view()) return bad("collection '" + n.name + "' has no view");
    names.push_back({n.name, n.index_type, n.view});
    auto s = ParseIndexType(n.index_type, snap.dim, n.name == snap.name ? snap.metric : "");
    if (!s.ok()) return bad(s.status().message());
    IndexSpec cspec = *s;
    if (!cspec.base_index_id.empty()) {  // a view: the base's spec, with its own id map (Create)
      IndexSpec wrapped = spec;
      wrapped.index_type = cspec.index_type;
      wrapped.id_map = cspec.id_map;
      wrapped.base_index_id = cspec.base_index_id;
      cspec = std::move(wrapped);
    }
    specs.push_back(std::move(cspec));
  }
  uint64_t id = snap.storage_id;
  if (log_create) {
    ASSIGN_OR_RETURN(id, log_create());
  }
  auto storage =
      NewStorage(snap.tenant, std::move(backend),
                 {id, snap.tenant, snap.name, snap.index_type, snap.dim, snap.metric, snap.device});
  storage->RestoreNames(names, std::move(*labels), std::move(*keys));
  storage->set_log_seq(log_create ? 1 : snap.storage_seq);
  RegisterStorage(storage);
  std::shared_ptr<Collection> first;
  for (size_t i = 0; i < names.size(); ++i) {
    auto c =
        std::make_shared<Collection>(snap.tenant, names[i].name, specs[i], storage, names[i].view);
    RETURN_IF_ERROR(registry_.Insert(c));
    if (!first) first = c;
  }
  if (first) {
    // An empty write: places the device copy's queue and queues its build (AfterWrite).
    first->Write([](Backend&, LabelTable&) { return 0; });
  }
  return storage->Inspect([](const Backend&, const LabelTable&, const KeyTable&,
                             const std::vector<IndexStorage::Name>&,
                             uint64_t version) { return version; });
}

}  // namespace vecgpu
