#pragma once

#include <map>
#include <memory>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "tests/model/ops.h"

namespace vecgpu::model {

// A decoded FAISSx reply.
class Reply {
 public:
  explicit Reply(const std::string& bytes);
  bool ok() const;
  std::string code() const;   // error_code, "" on success
  std::string error() const;  // error message
  const msgpack::object* Get(const char* key) const;
  std::string Dump() const;  // for failure messages

 private:
  msgpack::object_handle h_;
  std::map<std::string, const msgpack::object*> fields_;
};

// What one index kind does, as far as the model needs to know.
struct KindTraits {
  bool binary = false;         // 0/1 vectors, Hamming distance
  bool ip = false;             // inner product: larger is nearer
  bool needs_train = false;    // refuses adds and searches until trained
  bool exact_search = false;   // k-NN and range results are exact
  bool exact_storage = false;  // reconstruct returns the added vector bit for bit
  bool exact_range = false;    // range search scans every stored vector exactly
  bool can_remove = true;
  bool can_reconstruct = true;
  bool stable_labels = false;  // IVF kinds: labels never reused; others: positions
  bool ivf_float = false;      // recluster_index applies
  int nlist = 0;
};

// Traits of a base index_type of the generator's catalogue.
KindTraits TraitsOf(const std::string& index_type);

// A plain model of every tenant's indexes: each storage is an ordered list of vectors (storage
// order), each tagged with the view it was added through and its id there. Step() predicts
// the reply to an op, checks the server's actual reply against it (exactly for exact kinds,
// by invariants for approximate ones) and applies the op's effect when it succeeded.
class Model {
 public:
  // "" when the reply matches; else what differs.
  std::string Step(const Op& op, const Reply& reply);

  // Read ops that check every collection sharing a storage with `op`'s index (stats and
  // every stored vector), for the runner to send after a mutation.
  std::vector<Op> ChecksAfter(const Op& op) const;

  // For the generator.
  struct Entry {
    uint32_t view;
    int64_t id;     // IDMap views: the user id; base view: unused
    int64_t label;  // stable-label kinds: the label given at add time
    std::vector<float> v;
    bool exact = true;  // false once copied through an approximate reconstruction (a merge)
  };
  struct Storage {
    std::string index_type;
    int dim = 0;
    KindTraits traits;
    bool trained = false;
    std::vector<Entry> entries;  // storage order
    int64_t next_label = 0;      // stable-label kinds
    uint32_t next_view = 1;
  };
  struct Collection {
    std::shared_ptr<Storage> storage;
    uint32_t view = 0;  // 0: the base view (no ids)
  };
  using Key = std::pair<int, std::string>;
  const std::map<Key, Collection>& collections() const { return collections_; }
  // The ids `c` sees, in storage order.
  static std::vector<int64_t> IdsOf(const Collection& c);
  // The vector stored under `id` in c, or null.
  static const Entry* Find(const Collection& c, int64_t id);

 private:
  const Collection* Lookup(const Op& op) const;
  std::string Mutation(const Op& op, const Reply& r);
  std::string Read(const Op& op, const Reply& r);
  std::string CheckSearch(const Op& op, const Collection& c, const Reply& r, bool with_vectors);
  std::string CheckRange(const Op& op, const Collection& c, const Reply& r);

  std::map<Key, Collection> collections_;
};

}  // namespace vecgpu::model
