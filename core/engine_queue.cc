// The Engine's queued work: per-storage queues, searches batched into one backend call and
// adds merged into one add (core/scheduler/scheduler.h runs them).
#include <algorithm>
#include <chrono>
#include <unordered_set>

#include "core/device/placed_backend.h"
#include "core/engine.h"

#include "core/util/interrupt.h"
#include "core/view_ops.h"

namespace vecgpu {

// A batchable piece of queued work (the payload of its scheduler Work).
struct Engine::Task {
  virtual ~Task() = default;
  std::shared_ptr<Collection> collection;
};

struct Engine::SearchTask : Task {
  FloatMatrix queries;
  int k = 0;
  SearchParams params;
  SearchDone done;
};

struct Engine::AddTask : Task {
  FloatMatrix x;
  std::vector<int64_t> ids;
  AddDone done;
};

StatusOr<std::unique_ptr<Backend>> Engine::MakeBackend(const IndexSpec& spec,
                                                       const std::string& hint,
                                                       const std::string& who) {
  if (!devices_ && !hint.empty() && hint != "cpu") {
    return InvalidArgument("device: '" + hint +
                           "' asks for a GPU, but this server places no "
                           "index on a GPU");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> host, factory_.Create(spec));
  return Place(std::move(host), hint, who);
}

StatusOr<std::unique_ptr<Backend>> Engine::Place(std::unique_ptr<Backend> host,
                                                 const std::string& hint,
                                                 const std::string& who) {
  if (!devices_) return host;
  ASSIGN_OR_RETURN(auto placed, PlacedBackend::Create(std::move(host), *devices_, hint, who));
  return std::unique_ptr<Backend>(std::move(placed));
}

void Engine::FollowDevice(const IndexStorage& storage, const Backend& b) const {
  const auto* placed = dynamic_cast<const PlacedBackend*>(&b);
  if (placed && scheduler_ && storage.queue) {
    // Every GPU holding a current copy: their workers share its searches.
    scheduler_->SetDevices(storage.queue, placed->serving_gpus());
  }
}

bool Engine::HostOnlySearch(const Collection& c, int k, const SearchParams& params) const {
  if (!devices_ || !devices_->has_gpus()) return false;  // every search is the host's
  if (!PlacedBackend::WithinGpuLimits(k, 0)) return true;
  int nprobe = params.nprobe.value_or(0);
  // The index's own nprobe, as of its last write (read without waiting on its lock).
  if (!params.nprobe && c.spec().nlist > 0) nprobe = c.storage()->CachedInfo(c.view()).nprobe;
  return !PlacedBackend::WithinGpuLimits(k, nprobe);
}

void Engine::AfterWrite(const std::weak_ptr<IndexStorage>& weak, Backend& b) {
  auto* placed = dynamic_cast<PlacedBackend*>(&b);
  auto storage = weak.lock();
  if (!placed || !storage) return;
  FollowDevice(*storage, b);
  if (!scheduler_) {  // held exclusively already: build the copy now
    if (placed->TakeRefresh()) placed->Refresh();
    return;
  }
  QueueRefresh(storage, *placed);
}

void Engine::QueueRefresh(const std::shared_ptr<IndexStorage>& storage,
                          const PlacedBackend& placed) const {
  if (!scheduler_ || !placed.TakeRefresh()) return;
  std::weak_ptr<IndexStorage> weak = storage;
  // Built by a long worker with shared access, so searches go on (from the host copy).
  auto refresh = [this, weak] {
    if (auto s = weak.lock()) {
      s->ReadBackendAndRecache([&](const Backend& now) {  // listings show the copy
        if (const auto* p = dynamic_cast<const PlacedBackend*>(&now)) p->Refresh();
        FollowDevice(*s, now);
      });
    }
  };
  auto release = [weak](const Status&) {
    if (auto s = weak.lock()) {
      s->ReadBackend([](const Backend& now) {
        if (const auto* p = dynamic_cast<const PlacedBackend*>(&now)) p->ReleaseRefresh();
      });
    }
  };
  Work w;
  w.cls = WorkClass::kLong;
  w.run = std::move(refresh);
  w.expire = std::move(release);
  Status st =
      scheduler_->Submit(scheduler_->NewQueue(storage->queue->tenant(), nullptr), std::move(w));
  if (!st.ok()) placed.ReleaseRefresh();  // busy: the next write or search tries again
}

std::shared_ptr<IndexStorage> Engine::NewStorage(const std::string& tenant,
                                                 std::unique_ptr<Backend> backend,
                                                 IndexStorage::Origin origin) {
  auto storage = std::make_shared<IndexStorage>(std::move(backend), std::move(origin));
  if (devices_) {
    std::weak_ptr<IndexStorage> weak = storage;
    storage->on_write = [this, weak](Backend& b) { AfterWrite(weak, b); };
  }
  if (scheduler_) {
    storage->queue = scheduler_->NewQueue(tenant, [this](std::vector<Work>& batch) {
      // A batch holds work of one batch key: all searches or all adds.
      std::vector<SearchTask*> searches;
      std::vector<AddTask*> adds;
      for (Work& w : batch) {
        auto* task = static_cast<Task*>(w.payload.get());
        if (auto* s = dynamic_cast<SearchTask*>(task)) searches.push_back(s);
        if (auto* a = dynamic_cast<AddTask*>(task)) adds.push_back(a);
      }
      if (!searches.empty()) RunSearches(searches);
      if (!adds.empty()) RunAdds(adds);
    });
  }
  return storage;
}

Status Engine::Enqueue(const std::shared_ptr<Scheduler::Queue>& queue, Work w) {
  if (!scheduler_) {  // no scheduler: run at once, on this thread
    w.run();
    return Status::Ok();
  }
  // An idle index runs its request here, on the thread that decoded it.
  if (queue && scheduler_->TryRunHere(queue, w)) return Status::Ok();
  return scheduler_->Submit(queue, std::move(w));
}

Status Engine::Submit(const std::string& tenant, const std::string& name, WorkClass cls,
                      Clock::time_point deadline, std::function<void()> run,
                      std::function<void(const Status&)> expire) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return Enqueue(
      c->storage()->queue,
      Work{.cls = cls, .deadline = deadline, .run = std::move(run), .expire = std::move(expire)});
}

Status Engine::SubmitUnbound(const std::string& tenant, WorkClass cls, Clock::time_point deadline,
                             std::function<void()> run, std::function<void(const Status&)> expire) {
  return Enqueue(
      scheduler_ ? scheduler_->NewQueue(tenant, nullptr) : nullptr,
      Work{.cls = cls, .deadline = deadline, .run = std::move(run), .expire = std::move(expire)});
}

Status Engine::SubmitSearch(const std::string& tenant, const std::string& name, FloatMatrix queries,
                            int k, const SearchParams& params, Clock::time_point deadline,
                            SearchDone done) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckSearch(*c, queries, k));
  auto task = std::make_shared<SearchTask>();
  task->collection = c;
  task->queries = std::move(queries);
  task->k = k;
  task->params = params;
  task->done = std::move(done);
  Work w;
  w.cls = WorkClass::kShort;
  w.shared = true;  // a read: copies on several GPUs may run its neighbours' batches at once
  // Batches hold one collection's searches with equal parameters; different k is fine.
  const uint64_t key = std::hash<const void*>()(c.get()) ^
                       (uint64_t(params.nprobe.value_or(0)) * 0x9E3779B97F4A7C15ull) ^
                       (uint64_t(params.ef_search.value_or(0)) * 0xC2B2AE3D27D4EB4Full);
  w.batch_key = key | 1;
  w.rows = task->queries.rows;
  // A cheap search of an idle index runs on the thread that decoded it; a costly one goes to
  // a worker, so decoding threads never spend long on one request.
  w.may_inline = task->queries.rows * c->storage()->vectors() <= kInlineSearchWork;
  // Beyond the GPU's limits: the host answers, on a CPU worker, so the request never holds
  // one of its GPU's workers (a stale or failed copy sends the whole queue there instead:
  // FollowDevice).
  w.host_only = HostOnlySearch(*c, k, params);
  w.deadline = deadline;
  w.run = [this, task] { RunSearches({task.get()}); };
  w.expire = [task](const Status& st) { task->done(st); };
  w.payload = std::static_pointer_cast<Task>(task);
  return Enqueue(c->storage()->queue, std::move(w));
}

Status Engine::SubmitAdd(const std::string& tenant, const std::string& name, FloatMatrix x,
                         std::vector<int64_t> ids, WorkClass cls, Clock::time_point deadline,
                         AddDone done) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckMatrix("vectors", x, c->spec(), limits_.max_add_vectors));
  if (!ids.empty() && static_cast<int64_t>(ids.size()) != x.rows) {
    return InvalidArgument("ids: " + std::to_string(ids.size()) + " ids for " +
                           std::to_string(x.rows) + " vectors");
  }
  if (c->has_ids() && !ids.empty()) RETURN_IF_ERROR(CheckIds(ids));
  RETURN_IF_ERROR(CheckQuota(tenant, c.get(), 0, x.rows));  // on admission
  auto task = std::make_shared<AddTask>();
  task->collection = c;
  task->x = std::move(x);
  task->ids = std::move(ids);
  task->done = std::move(done);
  Work w;
  w.cls = cls;
  // Adds to a collection that numbers its own vectors are merged only without explicit ids
  // (those must match the next labels, which depend on the order).
  const bool mergeable = c->has_ids() ? !task->ids.empty() : task->ids.empty();
  if (mergeable) w.batch_key = ((std::hash<const void*>()(c.get()) * 0x100000001B3ull) & ~3ull) | 2;
  w.rows = task->x.rows;
  w.deadline = deadline;
  w.run = [this, task] { RunAdds({task.get()}); };
  w.expire = [task](const Status& st) { task->done(st); };
  w.payload = std::static_pointer_cast<Task>(task);
  return Enqueue(c->storage()->queue, std::move(w));
}

void Engine::RunAdds(const std::vector<AddTask*>& tasks) {
  Collection& c = *tasks[0]->collection;
  // Groups of consecutive adds whose ids do not overlap, each applied as one add.
  size_t begin = 0;
  while (begin < tasks.size()) {
    std::unordered_set<int64_t> seen;
    size_t end = begin;
    for (; end < tasks.size(); ++end) {
      bool overlap = false;
      for (int64_t id : tasks[end]->ids) overlap = overlap || seen.count(id);
      if (overlap && end > begin) break;
      seen.insert(tasks[end]->ids.begin(), tasks[end]->ids.end());
    }
    auto apply = [&](size_t from, size_t to) -> StatusOr<int64_t> {
      FloatMatrix x;
      std::vector<int64_t> ids;
      const FloatMatrix* one = &tasks[from]->x;
      if (to - from > 1) {
        x.cols = c.spec().dim;
        for (size_t i = from; i < to; ++i) {
          x.data.insert(x.data.end(), tasks[i]->x.data.begin(), tasks[i]->x.data.end());
          x.rows += tasks[i]->x.rows;
          ids.insert(ids.end(), tasks[i]->ids.begin(), tasks[i]->ids.end());
        }
        one = &x;
      } else {
        ids = tasks[from]->ids;
      }
      return c.Write([&](Backend& b, LabelTable& t) -> StatusOr<int64_t> {
        RETURN_IF_ERROR(AddLocked(c, b, t, *one, ids));
        return t.CountOf(c.view());
      });
    };
    // Each add is appended to the log, then the group waits once for all of them to be
    // durable (one fsync for the group) and is applied, all under the storage's write order.
    // An add the log refuses is answered with that error and ends the group (the ones logged
    // before it are applied); a failed wait refuses them all.
    const size_t group_end = end;
    IndexStorage& storage = *c.storage();
    MutexLock order(storage.write_order());
    UninterruptibleScope uninterruptible;  // logged: replay must match
    // Task i is the storage's record base + 1 + (i - begin).
    const uint64_t base = storage.log_seq();
    auto logged_as = [&](size_t i) { return Logged{0, base + 1 + (i - begin)}; };
    if (log_) {
      size_t logged = begin;
      Status refused;
      MutationLog::Ticket last;
      for (; logged < end; ++logged) {
        store::WalRecord r{
            .type = store::RecordType::kAdd, .tenant = c.tenant(), .collection = c.name()};
        r.storage_id = storage.origin().id;
        r.storage_seq = logged_as(logged).storage_seq;
        r.vectors = tasks[logged]->x;
        r.ids = tasks[logged]->ids;
        auto ticket = log_->Append(r);
        if (!ticket.ok()) {
          refused = ticket.status();
          break;
        }
        last = *ticket;
      }
      if (logged > begin) {
        if (Status st = log_->WaitDurable(last); !st.ok()) {
          refused = st;
          logged = begin;
        }
      }
      if (logged < end) {
        for (size_t i = logged; i < end; ++i) tasks[i]->done(refused);
        if (logged == begin) {
          begin = group_end;
          continue;
        }
        end = logged;
      }
    }
    // Durable (or no log): these records take their places in the storage's order.
    storage.set_log_seq(base + (end - begin));
    auto merged = apply(begin, end);
    if (!merged.ok() && end - begin > 1) {
      // One of them is refused: apply each alone, so each gets its own answer.
      for (size_t i = begin; i < end; ++i) {
        auto r = apply(i, i + 1);
        if (r.ok()) {
          c.stats().adds++;
          c.stats().vectors_added += tasks[i]->x.rows;
          tasks[i]->done(AddResult{tasks[i]->x.rows, *r});
        } else {
          tasks[i]->done(Outcome(storage, logged_as(i), c.tenant(), c.name(), r.status()));
        }
      }
    } else {
      for (size_t i = begin; i < end; ++i) {
        if (!merged.ok()) {
          tasks[i]->done(Outcome(storage, logged_as(i), c.tenant(), c.name(), merged.status()));
          continue;
        }
        c.stats().adds++;
        c.stats().vectors_added += tasks[i]->x.rows;
        tasks[i]->done(AddResult{tasks[i]->x.rows, *merged});
      }
    }
    begin = group_end;
  }
}

void Engine::RunSearches(const std::vector<SearchTask*>& tasks) const {
  const Collection& c = *tasks[0]->collection;
  const int d = c.spec().dim;
  int64_t rows = 0;
  int kmax = 0;
  for (const SearchTask* t : tasks) {
    rows += t->queries.rows;
    kmax = std::max(kmax, t->k);
  }
  // One matrix of every request's queries, searched once at the largest k.
  std::vector<float> all;
  const float* x = tasks[0]->queries.data.data();
  if (tasks.size() > 1) {
    all.reserve(rows * d);
    for (const SearchTask* t : tasks)
      all.insert(all.end(), t->queries.data.begin(), t->queries.data.end());
    x = all.data();
  }
  std::vector<float> distances(rows * kmax);
  std::vector<int64_t> labels(rows * kmax);
  const auto start = std::chrono::steady_clock::now();
  Status st = c.Read([&](const Backend& b, const LabelTable& t) -> Status {
    if (!b.is_trained()) return NotTrained(c.name());
    Status searched = SearchView(b, t, c.view(), rows, x, kmax, tasks[0]->params, distances.data(),
                                 labels.data());
    // Nothing to follow without GPUs: keep the search path free of it.
    if (devices_ && devices_->has_gpus()) {
      const auto* placed = dynamic_cast<const PlacedBackend*>(&b);
      // Its load: a queue that stays deep gets a copy on another GPU, one that calms down
      // gives it back (core/device/hot_load.h).
      if (placed && scheduler_ && c.storage()->queue) {
        placed->SampleLoad(Clock::now(), scheduler_->depth(c.storage()->queue));
      }
      FollowDevice(*c.storage(), b);  // a failed device copy sends it to the CPU
      // A rebuild (or a new copy) that could not be queued (busy) is queued again from here.
      if (placed) QueueRefresh(c.storage(), *placed);
    }
    return searched;
  });
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);
  if (st.ok()) {
    ObserveBatch(rows, static_cast<int64_t>(tasks.size()));
    c.stats().searches += static_cast<int64_t>(tasks.size());
    c.stats().queries += rows;
    c.stats().search_micros += micros.count();
  }
  int64_t row = 0;
  for (SearchTask* t : tasks) {
    if (!st.ok()) {
      t->done(st);
      continue;
    }
    SearchResult r;
    r.nq = t->queries.rows;
    r.k = t->k;
    r.distances.resize(r.nq * r.k);
    r.labels.resize(r.nq * r.k);
    for (int64_t q = 0; q < r.nq; ++q, ++row) {
      std::copy_n(distances.begin() + row * kmax, r.k, r.distances.begin() + q * r.k);
      std::copy_n(labels.begin() + row * kmax, r.k, r.labels.begin() + q * r.k);
    }
    t->done(std::move(r));
  }
}

void Engine::ObserveBatch(int64_t rows, int64_t requests) const {
  if (!metrics_) return;
  metrics_->batch_rows.With({}).Observe(static_cast<double>(rows));
  metrics_->batch_requests.With({}).Observe(static_cast<double>(requests));
}

StatusOr<SearchResult> Engine::Search(const std::string& tenant, const std::string& name,
                                      const FloatMatrix& queries, int k,
                                      const SearchParams& params) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckSearch(*c, queries, k));
  SearchTask task;
  task.collection = c;
  task.queries = queries;
  task.k = k;
  task.params = params;
  StatusOr<SearchResult> out = Internal("search did not run");
  task.done = [&](StatusOr<SearchResult> r) { out = std::move(r); };
  RunSearches({&task});
  return out;
}

}  // namespace vecgpu
