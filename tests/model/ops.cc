#include "tests/model/ops.h"

#include <cmath>
#include <sstream>

#include "server/faissx/map_writer.h"

namespace vecgpu::model {

const char* ActionName(OpKind kind) {
  switch (kind) {
    case OpKind::kCreate:
      return "create_index";
    case OpKind::kDelete:
      return "delete_index";
    case OpKind::kTrain:
      return "train_index";
    case OpKind::kAdd:
      return "add_vectors";
    case OpKind::kAddWithIds:
      return "add_with_ids";
    case OpKind::kRemove:
      return "remove_ids";
    case OpKind::kReplace:
      return "replace_vector";
    case OpKind::kReset:
      return "reset";
    case OpKind::kClear:
      return "clear";
    case OpKind::kMerge:
      return "merge_indices";
    case OpKind::kRecluster:
      return "recluster_index";
    case OpKind::kSetParam:
      return "set_parameter";
    case OpKind::kSearch:
      return "search";
    case OpKind::kRangeSearch:
      return "range_search";
    case OpKind::kReconstruct:
      return "reconstruct";
    case OpKind::kReconstructN:
      return "reconstruct_n";
    case OpKind::kGetVectors:
      return "get_vectors";
    case OpKind::kSearchAndReconstruct:
      return "search_and_reconstruct";
    case OpKind::kStats:
      return "get_index_stats";
    case OpKind::kList:
      return "list_indexes";
  }
  return "?";
}

nlohmann::json ToJson(const Op& op) {
  nlohmann::json j;
  j["op"] = ActionName(op.kind);
  j["tenant"] = op.tenant;
  if (!op.name.empty()) j["name"] = op.name;
  if (!op.index_type.empty()) j["index_type"] = op.index_type;
  if (op.dim) j["dim"] = op.dim;
  if (op.rows) {
    j["rows"] = op.rows;
    j["cols"] = op.cols;
    j["x"] = op.x;
  }
  if (!op.ids.empty()) j["ids"] = op.ids;
  if (op.send_ids) j["send_ids"] = true;
  if (op.k) j["k"] = op.k;
  if (op.radius != 0) j["radius"] = op.radius;
  if (op.start) j["start"] = op.start;
  if (op.count) j["count"] = op.count;
  if (!op.param.empty()) {
    j["param"] = op.param;
    j["value"] = op.value;
  }
  if (!op.sources.empty()) j["sources"] = op.sources;
  if (!op.bad.empty()) j["bad"] = op.bad;
  return j;
}

Op FromJson(const nlohmann::json& j) {
  Op op;
  const std::string action = j.at("op");
  for (int k = 0; k <= static_cast<int>(OpKind::kList); ++k) {
    if (action == ActionName(static_cast<OpKind>(k))) op.kind = static_cast<OpKind>(k);
  }
  op.tenant = j.value("tenant", 0);
  op.name = j.value("name", "");
  op.index_type = j.value("index_type", "");
  op.dim = j.value("dim", 0);
  op.rows = j.value("rows", 0);
  op.cols = j.value("cols", 0);
  if (j.contains("x")) op.x = j["x"].get<std::vector<float>>();
  if (j.contains("ids")) op.ids = j["ids"].get<std::vector<int64_t>>();
  op.send_ids = j.value("send_ids", false);
  op.k = j.value("k", 0);
  op.radius = j.value("radius", 0.0);
  op.start = j.value("start", int64_t{0});
  op.count = j.value("count", int64_t{0});
  op.param = j.value("param", "");
  op.value = j.value("value", int64_t{0});
  if (j.contains("sources")) op.sources = j["sources"].get<std::vector<std::string>>();
  op.bad = j.value("bad", "");
  return op;
}

std::string ToJsonLines(const std::vector<Op>& ops) {
  std::string out;
  for (const Op& op : ops) out += ToJson(op).dump() + "\n";
  return out;
}

std::vector<Op> FromJsonLines(const std::string& text) {
  std::vector<Op> ops;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#') ops.push_back(FromJson(nlohmann::json::parse(line)));
  }
  return ops;
}

std::string EncodeRequest(const Op& op, const std::string& tenant_prefix) {
  server::MapWriter w;
  w.Str("action", ActionName(op.kind));
  w.Str("tenant_id", tenant_prefix + "t" + std::to_string(op.tenant));
  FloatMatrix m;
  m.rows = op.rows;
  m.cols = op.cols;
  m.data = op.x;
  if (op.bad == "nan" && !m.data.empty()) m.data[0] = std::nanf("");
  switch (op.kind) {
    case OpKind::kCreate:
      w.Str("index_id", op.name);
      w.Int("dimension", op.dim);
      w.Str("index_type", op.index_type);
      break;
    case OpKind::kTrain:
      w.Str("index_id", op.name);
      w.Matrix("training_vectors", m, false);
      break;
    case OpKind::kAdd:
    case OpKind::kAddWithIds:
      w.Str("index_id", op.name);
      w.Matrix("vectors", m, false);
      if (op.send_ids || op.kind == OpKind::kAddWithIds)
        w.Ints("ids", op.ids.data(), op.ids.size());
      break;
    case OpKind::kRemove:
      w.Str("index_id", op.name);
      w.Ints("ids", op.ids.data(), op.ids.size());
      break;
    case OpKind::kReplace:
      w.Str("index_id", op.name);
      w.Int("id", op.ids.at(0));
      w.Vector("vector", m, false);
      break;
    case OpKind::kMerge:
      w.Str("target_index_id", op.name);
      w.Key("source_index_ids").pack(op.sources);
      break;
    case OpKind::kRecluster:
      w.Str("index_id", op.name);
      if (op.count) w.Int("n_clusters", op.count);
      w.Double("sample_ratio", 1.0);
      break;
    case OpKind::kSetParam:
      w.Str("index_id", op.name);
      w.Str("parameter", op.param);
      w.Int("value", op.value);
      break;
    case OpKind::kSearch:
    case OpKind::kSearchAndReconstruct:
    case OpKind::kRangeSearch:
      w.Str("index_id", op.name);
      w.Matrix("query_vectors", m, false);
      if (op.kind == OpKind::kRangeSearch) {
        w.Double("radius", op.radius);
      } else {
        w.Int("k", op.k);
      }
      if (!op.param.empty()) {
        auto& p = w.Key("params");
        p.pack_map(1);
        p.pack(op.param);
        p.pack_int64(op.value);
      }
      break;
    case OpKind::kReconstruct:
      w.Str("index_id", op.name);
      w.Int("id", op.ids.at(0));
      break;
    case OpKind::kReconstructN:
      w.Str("index_id", op.name);
      w.Int("start_idx", op.start);
      w.Int("num_vectors", op.count);
      break;
    case OpKind::kGetVectors:
      w.Str("index_id", op.name);
      w.Int("start_idx", op.start);
      if (op.count) w.Int("limit", op.count);
      break;
    case OpKind::kDelete:
    case OpKind::kReset:
    case OpKind::kClear:
    case OpKind::kStats:
      w.Str("index_id", op.name);
      break;
    case OpKind::kList:
      break;
  }
  return w.Finish();
}

}  // namespace vecgpu::model
