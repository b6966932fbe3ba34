#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vecgpu::model {

// The FAISSx actions the model test drives.
enum class OpKind {
  kCreate,
  kDelete,
  kTrain,
  kAdd,
  kAddWithIds,
  kRemove,
  kReplace,
  kReset,
  kClear,
  kMerge,
  kRecluster,
  kSetParam,
  kSearch,
  kRangeSearch,
  kReconstruct,
  kReconstructN,
  kGetVectors,
  kSearchAndReconstruct,
  kStats,
  kList,
};

const char* ActionName(OpKind kind);

// One request of a test sequence. Self-contained (it carries its vectors, not a seed), so a
// failing sequence can be shrunk by dropping ops and printed as a reproducer.
struct Op {
  OpKind kind = OpKind::kStats;
  int tenant = 0;
  std::string name;          // index_id (target for merges)
  std::string index_type;    // create
  int dim = 0;               // create
  int rows = 0;              // rows of x
  int cols = 0;              // components per row of x (0/1 floats for binary indexes)
  std::vector<float> x;      // vectors / query vectors / training vectors, rows * cols
  std::vector<int64_t> ids;  // add / remove / replace (ids[0]) / reconstruct (ids[0])
  bool send_ids = false;     // add_vectors carries "ids"
  int k = 0;                 // searches
  double radius = 0;         // range search
  int64_t start = 0;         // reconstruct_n / get_vectors
  int64_t count = 0;         // reconstruct_n num_vectors / get_vectors limit / n_clusters
  std::string param;         // set_parameter / search params ("nprobe", "efSearch")
  int64_t value = 0;
  std::vector<std::string> sources;  // merge
  std::string bad;                   // "" or the corruption applied (the op must be refused)
};

nlohmann::json ToJson(const Op& op);
Op FromJson(const nlohmann::json& j);
// The whole sequence as JSON lines, one op per line.
std::string ToJsonLines(const std::vector<Op>& ops);
std::vector<Op> FromJsonLines(const std::string& text);

// The FAISSx request for `op`, tenants named tenant_prefix + "t<n>".
std::string EncodeRequest(const Op& op, const std::string& tenant_prefix);

}  // namespace vecgpu::model
