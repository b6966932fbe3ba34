#include "tests/model/model.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace vecgpu::model {
namespace {

using msgpack::type::object_type;

std::string Fail(const Op& op, const std::string& what) {
  return std::string(ActionName(op.kind)) + " '" + op.name + "': " + what;
}

bool AsDouble(const msgpack::object& o, double* out) {
  switch (o.type) {
    case object_type::FLOAT32:
    case object_type::FLOAT64:
      *out = o.via.f64;
      return true;
    case object_type::POSITIVE_INTEGER:
      *out = static_cast<double>(o.via.u64);
      return true;
    case object_type::NEGATIVE_INTEGER:
      *out = static_cast<double>(o.via.i64);
      return true;
    default:
      return false;
  }
}

int64_t AsInt(const msgpack::object* o) {
  if (!o) return INT64_MIN;
  if (o->type == object_type::POSITIVE_INTEGER) return static_cast<int64_t>(o->via.u64);
  if (o->type == object_type::NEGATIVE_INTEGER) return o->via.i64;
  return INT64_MIN;
}

std::vector<double> Numbers(const msgpack::object& o) {
  std::vector<double> out;
  if (o.type != object_type::ARRAY) return out;
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    double v = NAN;
    AsDouble(o.via.array.ptr[i], &v);
    out.push_back(v);
  }
  return out;
}

std::vector<std::vector<double>> Rows(const msgpack::object* o) {
  std::vector<std::vector<double>> out;
  if (!o || o->type != object_type::ARRAY) return out;
  for (uint32_t i = 0; i < o->via.array.size; ++i) out.push_back(Numbers(o->via.array.ptr[i]));
  return out;
}

bool Near(double a, double b) {
  return std::fabs(a - b) <= 1e-3 * (1 + std::fabs(a) + std::fabs(b));
}

double Distance(const KindTraits& t, const float* a, const float* b, int d) {
  double s = 0;
  for (int i = 0; i < d; ++i) {
    if (t.binary) {
      s += a[i] != b[i];
    } else if (t.ip) {
      s += double(a[i]) * b[i];
    } else {
      s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    }
  }
  return s;
}

// a at least as near as b (with tolerance).
bool NotFarther(const KindTraits& t, double a, double b) {
  return t.ip ? a >= b - 1e-3 * (1 + std::fabs(b)) : a <= b + 1e-3 * (1 + std::fabs(b));
}

bool SameVector(const std::vector<double>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return false;
  for (size_t i = 0; i < got.size(); ++i) {
    if (static_cast<float>(got[i]) != want[i]) return false;
  }
  return true;
}

std::string Show(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  return s.str() + "]";
}

// "" when the reply is the error `code`; else what it was instead.
std::string ExpectError(const Op& op, const Reply& r, const char* code) {
  if (r.ok()) return Fail(op, std::string("expected ") + code + ", got success: " + r.Dump());
  if (r.code() != code) {
    return Fail(op, std::string("expected ") + code + ", got " + r.code() + ": " + r.error());
  }
  return "";
}

// "" when the reply is a success.
std::string ExpectOk(const Op& op, const Reply& r) {
  return r.ok() ? "" : Fail(op, "expected success, got " + r.code() + ": " + r.error());
}

// Whether x is refused for an index of `dim` components: wrong shape, a NaN (the "nan"
// corruption, written by the encoder) or, for binary indexes, a value that is not 0 or 1.
bool Refused(const Op& op, int dim, bool binary) {
  if (op.rows > 0 && op.cols != dim) return true;
  if (op.bad == "nan" && op.rows > 0) return true;
  if (binary) {
    for (float v : op.x) {
      if (v != 0.f && v != 1.f) return true;
    }
  }
  return false;
}

}  // namespace

Reply::Reply(const std::string& bytes) {
  h_ = msgpack::unpack(bytes.data(), bytes.size());
  const msgpack::object& o = h_.get();
  if (o.type != object_type::MAP) return;
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type == object_type::STR) {
      fields_[std::string(kv.key.via.str.ptr, kv.key.via.str.size)] = &kv.val;
    }
  }
}

bool Reply::ok() const {
  const msgpack::object* s = Get("success");
  return s && s->type == object_type::BOOLEAN && s->via.boolean;
}

std::string Reply::code() const {
  const msgpack::object* c = Get("error_code");
  return ok() || !c || c->type != object_type::STR ? "" : c->as<std::string>();
}

std::string Reply::error() const {
  const msgpack::object* c = Get("error");
  return c && c->type == object_type::STR ? c->as<std::string>() : "";
}

const msgpack::object* Reply::Get(const char* key) const {
  auto it = fields_.find(key);
  return it == fields_.end() ? nullptr : it->second;
}

std::string Reply::Dump() const {
  std::ostringstream s;
  s << h_.get();
  std::string out = s.str();
  return out.size() > 600 ? out.substr(0, 600) + "..." : out;
}

KindTraits TraitsOf(const std::string& type) {
  KindTraits t;
  if (type == "L2" || type == "IP" || type == "IDMap2,Flat") {
    t.exact_search = t.exact_storage = t.exact_range = true;
    t.ip = type == "IP";
  } else if (type == "IVF4" || type == "IVF4_IP") {
    t.needs_train = t.exact_storage = t.stable_labels = t.ivf_float = true;
    t.ip = type == "IVF4_IP";
    t.nlist = 4;
  } else if (type == "IVF4,PQ2x4") {
    t.needs_train = t.stable_labels = t.ivf_float = true;
    t.nlist = 4;
  } else if (type == "HNSW8") {
    t.exact_storage = t.exact_range = true;
    t.can_remove = false;
  } else if (type == "PCA8,HNSW8") {
    // A full-rank PCA is a rotation: distances survive it (range search scans them all), the
    // vectors come back only up to rounding.
    t.needs_train = t.exact_range = true;
    t.can_remove = false;
  } else if (type == "SQ8") {
    // Approximate storage (exact until it trains itself at 1,024 vectors).
  } else if (type == "PQ2x4") {
    t.needs_train = true;
  } else if (type == "BINARY_FLAT") {
    t.binary = t.exact_search = t.exact_storage = t.exact_range = true;
  } else if (type == "BINARY_IVF4") {
    t.binary = t.needs_train = t.exact_storage = t.stable_labels = true;
    t.nlist = 4;
  } else if (type == "BINARY_HASH8") {
    t.binary = true;
    t.can_remove = t.can_reconstruct = false;
  }
  return t;
}

std::vector<int64_t> Model::IdsOf(const Collection& c) {
  std::vector<int64_t> ids;
  const Storage& s = *c.storage;
  for (size_t p = 0; p < s.entries.size(); ++p) {
    const Entry& e = s.entries[p];
    if (c.view == 0) {
      ids.push_back(s.traits.stable_labels ? e.label : static_cast<int64_t>(p));
    } else if (e.view == c.view) {
      ids.push_back(e.id);
    }
  }
  return ids;
}

const Model::Entry* Model::Find(const Collection& c, int64_t id) {
  const Storage& s = *c.storage;
  for (size_t p = 0; p < s.entries.size(); ++p) {
    const Entry& e = s.entries[p];
    const int64_t eid = c.view == 0 ? (s.traits.stable_labels ? e.label : static_cast<int64_t>(p))
                                    : (e.view == c.view ? e.id : -1);
    if (eid == id && (c.view == 0 || e.view == c.view)) return &e;
  }
  return nullptr;
}

const Model::Collection* Model::Lookup(const Op& op) const {
  auto it = collections_.find({op.tenant, op.name});
  return it == collections_.end() ? nullptr : &it->second;
}

std::vector<Op> Model::ChecksAfter(const Op& op) const {
  std::vector<Op> out;
  const Collection* c = Lookup(op);
  if (!c) return out;
  for (const auto& [key, other] : collections_) {
    if (other.storage != c->storage) continue;
    Op stats;
    stats.kind = OpKind::kStats;
    stats.tenant = key.first;
    stats.name = key.second;
    out.push_back(stats);
    Op all = stats;
    all.kind = OpKind::kGetVectors;
    out.push_back(all);
  }
  return out;
}

std::string Model::Step(const Op& op, const Reply& r) {
  switch (op.kind) {
    case OpKind::kSearch:
    case OpKind::kRangeSearch:
    case OpKind::kReconstruct:
    case OpKind::kReconstructN:
    case OpKind::kGetVectors:
    case OpKind::kSearchAndReconstruct:
    case OpKind::kStats:
    case OpKind::kList:
      return Read(op, r);
    default:
      return Mutation(op, r);
  }
}

std::string Model::Mutation(const Op& op, const Reply& r) {
  auto expect = [&](const char* code) { return ExpectError(op, r, code); };
  auto ok = [&] { return ExpectOk(op, r); };
  Collection* c = const_cast<Collection*>(Lookup(op));

  if (op.kind == OpKind::kCreate) {
    const bool wrapper =
        op.index_type.rfind("IDMap:", 0) == 0 || op.index_type.rfind("IDMap2:", 0) == 0;
    Collection made;
    if (wrapper) {
      const std::string base = op.index_type.substr(op.index_type.find(':') + 1);
      auto it = collections_.find({op.tenant, base});
      if (it == collections_.end()) return expect("NOT_FOUND");
      if (it->second.storage->dim != op.dim) return expect("INVALID_ARGUMENT");
      if (c) return expect("ALREADY_EXISTS");
      made.storage = it->second.storage;
      made.view = made.storage->next_view++;
    } else {
      if (c) return expect("ALREADY_EXISTS");
      made.storage = std::make_shared<Storage>();
      made.storage->index_type = op.index_type;
      made.storage->dim = op.dim;
      made.storage->traits = TraitsOf(op.index_type);
      made.storage->trained = !made.storage->traits.needs_train;
      if (op.index_type == "IDMap2,Flat") made.view = made.storage->next_view++;
    }
    if (auto e = ok(); !e.empty()) return e;
    collections_[{op.tenant, op.name}] = made;
    return "";
  }
  if (op.kind == OpKind::kMerge) {
    if (!c) return expect("NOT_FOUND");
    std::vector<const Collection*> srcs;
    for (const auto& s : op.sources) {
      auto it = collections_.find({op.tenant, s});
      if (it == collections_.end()) return expect("NOT_FOUND");
      const Collection& src = it->second;
      if (src.storage == c->storage) return expect("INVALID_ARGUMENT");
      if (src.storage->dim != c->storage->dim ||
          src.storage->traits.binary != c->storage->traits.binary) {
        return expect("INVALID_ARGUMENT");
      }
      if (c->view != 0 && src.view == 0) return expect("INVALID_ARGUMENT");
      srcs.push_back(&src);
    }
    std::vector<Entry> incoming;
    std::set<int64_t> seen;
    for (const Collection* src : srcs) {
      if (!src->storage->traits.can_reconstruct && !IdsOf(*src).empty()) {
        return expect("UNSUPPORTED");  // the source's vectors cannot be read back
      }
      for (int64_t id : IdsOf(*src)) {
        if (c->view != 0 && !seen.insert(id).second) return expect("INVALID_ARGUMENT");
        Entry e = *Find(*src, id);
        e.id = id;
        e.exact = e.exact && src->storage->traits.exact_storage;
        incoming.push_back(e);
      }
    }
    if (!incoming.empty()) {
      if (c->view != 0) {
        for (const Entry& e : incoming) {
          if (Find(*c, e.id)) return expect("ALREADY_EXISTS");
        }
      }
      if (!c->storage->trained) return expect("NOT_TRAINED");
    }
    if (auto e = ok(); !e.empty()) return e;
    Storage& s = *c->storage;
    for (Entry& e : incoming) {
      e.view = c->view;
      if (c->view == 0) e.id = -1;
      e.label = s.next_label++;
      s.entries.push_back(std::move(e));
    }
    if (AsInt(r.Get("ntotal")) != static_cast<int64_t>(IdsOf(*c).size())) {
      return Fail(op, "ntotal " + std::to_string(AsInt(r.Get("ntotal"))) + ", model " +
                          std::to_string(IdsOf(*c).size()));
    }
    return "";
  }
  if (!c) return expect("NOT_FOUND");
  Storage& s = *c->storage;
  const KindTraits& t = s.traits;
  const bool has_ids = c->view != 0;

  switch (op.kind) {
    case OpKind::kDelete: {
      if (auto e = ok(); !e.empty()) return e;
      collections_.erase({op.tenant, op.name});
      return "";
    }
    case OpKind::kTrain: {
      if (Refused(op, s.dim, t.binary)) return expect("INVALID_ARGUMENT");
      if (auto e = ok(); !e.empty()) return e;
      s.trained = true;
      return "";
    }
    case OpKind::kAdd:
    case OpKind::kAddWithIds:
    case OpKind::kReplace: {
      if (Refused(op, s.dim, t.binary)) return expect("INVALID_ARGUMENT");
      const bool replace = op.kind == OpKind::kReplace;
      if (replace && !has_ids) return expect("INVALID_ARGUMENT");
      if (replace && !Find(*c, op.ids[0])) return expect("NOT_FOUND");
      const bool ids_sent = replace || op.send_ids || op.kind == OpKind::kAddWithIds;
      if (ids_sent && static_cast<int>(op.ids.size()) != op.rows) return expect("INVALID_ARGUMENT");
      if (has_ids && ids_sent && !replace) {
        // Negative or repeated ids are refused as the add is decoded, before the index.
        std::set<int64_t> seen;
        for (int64_t id : op.ids) {
          if (id < 0 || !seen.insert(id).second) return expect("INVALID_ARGUMENT");
        }
      }
      if (!s.trained) return expect("NOT_TRAINED");
      std::vector<size_t> replaced;
      if (!has_ids) {
        const int64_t next =
            t.stable_labels ? s.next_label : static_cast<int64_t>(s.entries.size());
        if (ids_sent) {
          for (int i = 0; i < op.rows; ++i) {
            if (op.ids[i] != next + i) return expect("INVALID_ARGUMENT");
          }
        }
      } else {
        if (!ids_sent) return expect("INVALID_ARGUMENT");
        std::set<int64_t> seen;
        for (int64_t id : op.ids) {
          if (id < 0 || !seen.insert(id).second) return expect("INVALID_ARGUMENT");
        }
        for (size_t p = 0; p < s.entries.size(); ++p) {
          if (s.entries[p].view == c->view && seen.count(s.entries[p].id)) replaced.push_back(p);
        }
        if (!replaced.empty() && !t.can_remove) return expect("UNSUPPORTED");
      }
      if (auto e = ok(); !e.empty()) return e;
      for (int i = 0; i < op.rows; ++i) {
        Entry e;
        e.view = c->view;
        e.id = has_ids ? op.ids[i] : -1;
        e.label = s.next_label++;
        e.v.assign(op.x.begin() + i * op.cols, op.x.begin() + (i + 1) * op.cols);
        s.entries.push_back(std::move(e));
      }
      for (auto it = replaced.rbegin(); it != replaced.rend(); ++it) {
        s.entries.erase(s.entries.begin() + *it);
      }
      if (!replace) {
        const int64_t want = static_cast<int64_t>(IdsOf(*c).size());
        if (AsInt(r.Get("count")) != op.rows || AsInt(r.Get("ntotal")) != want) {
          return Fail(op, "count/ntotal " + std::to_string(AsInt(r.Get("count"))) + "/" +
                              std::to_string(AsInt(r.Get("ntotal"))) + ", model " +
                              std::to_string(op.rows) + "/" + std::to_string(want));
        }
      }
      return "";
    }
    case OpKind::kRemove: {
      if (!t.can_remove) return expect("UNSUPPORTED");
      if (auto e = ok(); !e.empty()) return e;
      std::set<int64_t> gone(op.ids.begin(), op.ids.end());
      const std::vector<int64_t> ids = IdsOf(*c);
      int64_t removed = 0;
      std::vector<Entry> kept;
      size_t seen_pos = 0;
      for (size_t p = 0; p < s.entries.size(); ++p) {
        const Entry& e = s.entries[p];
        const bool visible = c->view == 0 || e.view == c->view;
        const bool drop = visible && gone.count(ids[seen_pos]);
        if (visible) ++seen_pos;
        if (drop) {
          ++removed;
        } else {
          kept.push_back(e);
        }
      }
      s.entries = std::move(kept);
      if (AsInt(r.Get("count")) != removed) {
        return Fail(op, "removed " + std::to_string(AsInt(r.Get("count"))) + ", model " +
                            std::to_string(removed));
      }
      return "";
    }
    case OpKind::kReset:
    case OpKind::kClear: {
      size_t own = 0;
      for (const Entry& e : s.entries) own += e.view == c->view;
      const bool whole = !has_ids || own == s.entries.size();
      if (has_ids && own == 0) return ok();
      if (!whole && !t.can_remove) return expect("UNSUPPORTED");
      if (auto e = ok(); !e.empty()) return e;
      if (whole) {
        s.entries.clear();
        s.next_label = 0;
      } else {
        std::erase_if(s.entries, [&](const Entry& e) { return e.view == c->view; });
      }
      return "";
    }
    case OpKind::kRecluster: {
      if (!t.ivf_float) return expect("INVALID_ARGUMENT");
      if (!s.trained) return expect("NOT_TRAINED");
      const int nlist = op.count > 0 ? static_cast<int>(op.count) : s.traits.nlist;
      const int64_t need = std::max<int64_t>(nlist, s.index_type == "IVF4,PQ2x4" ? 16 : 0);
      if (static_cast<int64_t>(s.entries.size()) < need) return expect("INVALID_ARGUMENT");
      if (auto e = ok(); !e.empty()) return e;
      s.traits.nlist = nlist;
      return "";
    }
    case OpKind::kSetParam: {
      const bool fits =
          (op.param == "nprobe" && t.nlist > 0 && op.value >= 1 && op.value <= t.nlist) ||
          (op.param == "efSearch" && s.index_type.find("HNSW8") != std::string::npos &&
           op.value >= 1);
      return fits ? ok() : expect("INVALID_ARGUMENT");
    }
    default:
      return Fail(op, "not a mutation");
  }
}

std::string Model::Read(const Op& op, const Reply& r) {
  auto expect = [&](const char* code) { return ExpectError(op, r, code); };
  auto ok = [&] { return ExpectOk(op, r); };
  if (op.kind == OpKind::kList) {
    if (auto e = ok(); !e.empty()) return e;
    std::map<std::string, int64_t> want, got;
    for (const auto& [key, c] : collections_) {
      if (key.first == op.tenant) want[key.second] = static_cast<int64_t>(IdsOf(c).size());
    }
    const msgpack::object* list = r.Get("indexes");
    if (!list || list->type != object_type::ARRAY) return Fail(op, "no indexes list");
    for (uint32_t i = 0; i < list->via.array.size; ++i) {
      auto m = list->via.array.ptr[i].as<std::map<std::string, msgpack::object>>();
      got[m["index_id"].as<std::string>()] = m["vector_count"].as<int64_t>();
    }
    return got == want ? "" : Fail(op, "list_indexes differs from the model");
  }
  const Collection* c = Lookup(op);
  // A request's fields are checked as it is decoded, before the service is called; what
  // depends on the index (its dimension) after the index is found.
  if ((op.kind == OpKind::kSearch || op.kind == OpKind::kSearchAndReconstruct) && op.k < 1) {
    return expect("INVALID_ARGUMENT");
  }
  if (!c) return expect("NOT_FOUND");
  const Storage& s = *c->storage;
  const KindTraits& t = s.traits;
  const std::vector<int64_t> ids = IdsOf(*c);
  const int64_t n = static_cast<int64_t>(ids.size());
  if (Refused(op, s.dim, t.binary)) return expect("INVALID_ARGUMENT");

  switch (op.kind) {
    case OpKind::kStats: {
      if (auto e = ok(); !e.empty()) return e;
      const int64_t got = AsInt(r.Get("ntotal"));
      const msgpack::object* trained = r.Get("is_trained");
      if (got != n)
        return Fail(op, "ntotal " + std::to_string(got) + ", model " + std::to_string(n));
      if (!trained || trained->as<bool>() != s.trained) return Fail(op, "is_trained differs");
      return "";
    }
    case OpKind::kGetVectors:
    case OpKind::kReconstructN: {
      if (op.start > n) return expect("OUT_OF_RANGE");
      const int64_t want_rows = op.kind == OpKind::kGetVectors
                                    ? (op.count ? std::min(op.count, n - op.start) : n - op.start)
                                    : std::min(op.count, n - op.start);
      if (!t.can_reconstruct && want_rows > 0) return expect("UNSUPPORTED");
      if (auto e = ok(); !e.empty()) return e;
      auto rows = Rows(r.Get("vectors"));
      if (static_cast<int64_t>(rows.size()) != want_rows) {
        return Fail(op, std::to_string(rows.size()) + " rows, model " + std::to_string(want_rows));
      }
      if (op.kind == OpKind::kGetVectors) {
        const msgpack::object* got_ids = r.Get("ids");
        std::vector<int64_t> want(ids.begin() + op.start, ids.begin() + op.start + want_rows);
        std::vector<int64_t> got;
        if (got_ids) got = got_ids->as<std::vector<int64_t>>();
        if (got != want) return Fail(op, "ids " + Show(got) + ", model " + Show(want));
      }
      for (int64_t i = 0; i < want_rows; ++i) {
        const Entry* e = Find(*c, ids[op.start + i]);
        if (static_cast<int>(rows[i].size()) != s.dim) return Fail(op, "row of wrong dimension");
        if (t.exact_storage && e->exact && !SameVector(rows[i], e->v)) {
          return Fail(op, "row " + std::to_string(i) + " (id " + std::to_string(ids[op.start + i]) +
                              ") is not the stored vector");
        }
      }
      return "";
    }
    case OpKind::kReconstruct: {
      const Entry* e = Find(*c, op.ids[0]);
      if (!e) return expect("NOT_FOUND");
      if (!t.can_reconstruct) return expect("UNSUPPORTED");
      if (auto err = ok(); !err.empty()) return err;
      const msgpack::object* v = r.Get("vector");
      std::vector<double> got = v ? Numbers(*v) : std::vector<double>{};
      if (static_cast<int>(got.size()) != s.dim) return Fail(op, "vector of wrong dimension");
      if (t.exact_storage && e->exact && !SameVector(got, e->v)) {
        return Fail(op, "not the stored vector");
      }
      return "";
    }
    case OpKind::kSearch:
    case OpKind::kSearchAndReconstruct:
      if (!s.trained) return expect("NOT_TRAINED");
      if (!t.can_reconstruct && op.kind == OpKind::kSearchAndReconstruct && !r.ok()) {
        return expect("UNSUPPORTED");  // unless nothing was found, there is nothing to read
      }
      if (auto e = ok(); !e.empty()) return e;
      return CheckSearch(op, *c, r, op.kind == OpKind::kSearchAndReconstruct);
    case OpKind::kRangeSearch:
      if (!s.trained) return expect("NOT_TRAINED");
      if (auto e = ok(); !e.empty()) return e;
      return CheckRange(op, *c, r);
    default:
      return Fail(op, "not a read");
  }
}

std::string Model::CheckSearch(const Op& op, const Collection& c, const Reply& r,
                               bool with_vectors) {
  const Storage& s = *c.storage;
  const KindTraits& t = s.traits;
  const std::vector<int64_t> ids = IdsOf(c);
  bool all_exact = true;
  for (int64_t id : ids) all_exact = all_exact && Find(c, id)->exact;
  const bool exact_search = t.exact_search && all_exact;
  const msgpack::object* results = r.Get("results");
  if (!results || results->type != object_type::ARRAY ||
      static_cast<int>(results->via.array.size) != op.rows) {
    return Fail(op, "results missing or of the wrong length");
  }
  for (int q = 0; q < op.rows; ++q) {
    const float* query = op.x.data() + q * op.cols;
    auto m = results->via.array.ptr[q].as<std::map<std::string, msgpack::object>>();
    std::vector<double> dist = Numbers(m["distances"]);
    std::vector<int64_t> got = m["indices"].as<std::vector<int64_t>>();
    if (static_cast<int>(got.size()) != op.k || dist.size() != got.size()) {
      return Fail(op, "query " + std::to_string(q) + ": not k results");
    }
    // True distances of every vector the view holds, best first.
    std::vector<double> truth;
    for (int64_t id : ids) {
      if (exact_search) truth.push_back(Distance(t, query, Find(c, id)->v.data(), s.dim));
    }
    std::sort(truth.begin(), truth.end(), [&](double a, double b) { return t.ip ? a > b : a < b; });
    std::set<int64_t> seen;
    int valid = 0;
    for (int j = 0; j < op.k; ++j) {
      if (got[j] < 0) {
        for (int jj = j; jj < op.k; ++jj) {
          if (got[jj] >= 0) return Fail(op, "a result after a missing one");
        }
        break;
      }
      ++valid;
      const Entry* e = Find(c, got[j]);
      if (!e)
        return Fail(op, "query " + std::to_string(q) + ": id " + std::to_string(got[j]) +
                            " is not in the index (ids " + Show(ids) + ")");
      if (!seen.insert(got[j]).second) return Fail(op, "id " + std::to_string(got[j]) + " twice");
      if (j > 0 && !NotFarther(t, dist[j - 1], dist[j])) return Fail(op, "results not sorted");
      if (t.exact_storage && e->exact && !Near(dist[j], Distance(t, query, e->v.data(), s.dim))) {
        return Fail(op, "query " + std::to_string(q) + ": distance " + std::to_string(dist[j]) +
                            " for id " + std::to_string(got[j]) + " but the true distance is " +
                            std::to_string(Distance(t, query, e->v.data(), s.dim)));
      }
      if (exact_search && !Near(dist[j], truth[j])) {
        return Fail(op, "query " + std::to_string(q) + ": rank " + std::to_string(j) +
                            " distance " + std::to_string(dist[j]) + ", exact " +
                            std::to_string(truth[j]));
      }
    }
    if (valid > static_cast<int>(ids.size())) return Fail(op, "more results than vectors");
    if (t.exact_search && valid != std::min<int>(op.k, ids.size())) {
      return Fail(op, "query " + std::to_string(q) + ": " + std::to_string(valid) +
                          " results, exact search must give " +
                          std::to_string(std::min<int>(op.k, ids.size())));
    }
    if (with_vectors) {
      auto vecs = Rows(&m["vectors"]);
      if (static_cast<int>(vecs.size()) != valid) return Fail(op, "vectors do not match results");
      for (int j = 0; j < valid; ++j) {
        if (t.exact_storage && Find(c, got[j])->exact && !SameVector(vecs[j], Find(c, got[j])->v)) {
          return Fail(op, "search_and_reconstruct: vector of id " + std::to_string(got[j]) +
                              " is not the stored one");
        }
      }
    }
  }
  return "";
}

std::string Model::CheckRange(const Op& op, const Collection& c, const Reply& r) {
  const Storage& s = *c.storage;
  const KindTraits& t = s.traits;
  const std::vector<int64_t> ids = IdsOf(c);
  const msgpack::object* results = r.Get("results");
  if (!results || results->type != object_type::ARRAY ||
      static_cast<int>(results->via.array.size) != op.rows) {
    return Fail(op, "results missing or of the wrong length");
  }
  // Binary radii are Hamming counts: "< radius" means "< ceil(radius)".
  const double radius = t.binary ? std::ceil(op.radius) : op.radius;
  for (int q = 0; q < op.rows; ++q) {
    const float* query = op.x.data() + q * op.cols;
    auto m = results->via.array.ptr[q].as<std::map<std::string, msgpack::object>>();
    std::vector<int64_t> got = m["indices"].as<std::vector<int64_t>>();
    std::vector<double> dist = Numbers(m["distances"]);
    std::set<int64_t> got_set;
    for (size_t j = 0; j < got.size(); ++j) {
      const Entry* e = Find(c, got[j]);
      if (!e) return Fail(op, "range result id " + std::to_string(got[j]) + " is not in the index");
      if (!got_set.insert(got[j]).second) return Fail(op, "range result id twice");
      if (t.exact_storage && e->exact && !Near(dist[j], Distance(t, query, e->v.data(), s.dim))) {
        return Fail(op, "range result distance is not the true distance");
      }
    }
    if (!t.exact_range) continue;
    for (int64_t id : ids) {
      if (!Find(c, id)->exact) continue;
      const double d = Distance(t, query, Find(c, id)->v.data(), s.dim);
      if (!t.binary && Near(d, radius)) continue;  // on the boundary: either answer is right
      const bool inside = t.ip ? d > radius : d < radius;
      if (inside != static_cast<bool>(got_set.count(id))) {
        return Fail(op, "query " + std::to_string(q) + ": id " + std::to_string(id) +
                            " at distance " + std::to_string(d) + (inside ? " missing" : " extra") +
                            " (radius " + std::to_string(op.radius) + ")");
      }
    }
  }
  return "";
}

}  // namespace vecgpu::model
