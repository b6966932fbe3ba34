#include "bench/runner.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "bench/ground_truth.h"

namespace vecgpu::bench {
namespace {

using nlohmann::json;

constexpr int64_t kRecallQueries = 200;  // the FAISSx server needs ~0.2 s per query
constexpr int kRequestTimeoutMs = 60'000;

std::vector<int> IntList(const json& sc, const char* key, std::vector<int> fallback) {
  if (!sc.contains(key)) return fallback;
  if (sc[key].is_array()) return sc[key].get<std::vector<int>>();
  return {sc[key].get<int>()};
}

std::string ReadFirstLine(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[256];
    if (fgets(buf, sizeof(buf), p)) out = buf;
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

json Machine() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::string cpu = ReadFirstLine("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
  std::string mem = ReadFirstLine("grep -m1 MemTotal /proc/meminfo | awk '{print $2}'");
  return {{"hostname", host},
          {"cpus", std::thread::hardware_concurrency()},
          {"cpu_model", cpu.empty() ? "unknown" : cpu.substr(cpu.find_first_not_of(' '))},
          {"memory_bytes", mem.empty() ? 0 : std::stoll(mem) * 1024},
          {"gpu", "none"}};
}

// Queries tiled to at least `rows` rows, so any batch size has distinct rows to send.
FloatMatrix Tile(const FloatMatrix& q, int64_t rows) {
  FloatMatrix out;
  out.cols = q.cols;
  out.rows = std::max(rows, q.rows);
  out.data.resize(out.rows * out.cols);
  for (int64_t r = 0; r < out.rows; ++r) {
    std::copy(q.row(r % q.rows), q.row(r % q.rows) + q.cols, out.data.begin() + r * q.cols);
  }
  return out;
}

StatusOr<double> MeasureRecall(Target& target, const Dataset& data, int k) {
  ASSIGN_OR_RETURN(auto conn, target.Connect());
  const int64_t nq = std::min<int64_t>(kRecallQueries, data.queries.rows);
  std::vector<int64_t> found, labels;
  for (int64_t start = 0; start < nq; start += 50) {
    const int64_t n = std::min<int64_t>(50, nq - start);
    RETURN_IF_ERROR(conn->Search(data.queries.row(start), n, k, &labels));
    found.insert(found.end(), labels.begin(), labels.end());
  }
  return RecallAtK(found, k, data.neighbors, data.gt_k, nq, k);
}

json LatencyJson(const Histogram& h) {
  auto ms = [](int64_t ns) { return ns / 1e6; };
  return {{"p50", ms(h.Percentile(50))}, {"p90", ms(h.Percentile(90))},
          {"p99", ms(h.Percentile(99))}, {"p999", ms(h.Percentile(99.9))},
          {"max", ms(h.max())},          {"mean", h.mean() / 1e6}};
}

}  // namespace

Runner::Runner(json scenarios, RunOptions options)
    : scenarios_(std::move(scenarios)), options_(std::move(options)) {}

StatusOr<std::vector<std::string>> Runner::Expand(const std::vector<std::string>& names) const {
  std::vector<std::string> out;
  for (const auto& n : names) {
    if (scenarios_["suites"].contains(n)) {
      for (const auto& s : scenarios_["suites"][n]) out.push_back(s.get<std::string>());
    } else if (scenarios_["scenarios"].contains(n)) {
      out.push_back(n);
    } else {
      return InvalidArgument("unknown scenario or suite '" + n + "' (see vecgpu-bench list)");
    }
  }
  return out;
}

StatusOr<Dataset*> Runner::GetDataset(const std::string& key) {
  if (auto it = datasets_.find(key); it != datasets_.end()) return it->second.get();
  if (!scenarios_["datasets"].contains(key)) return InvalidArgument("unknown dataset " + key);
  ASSIGN_OR_RETURN(Dataset d, LoadDataset(scenarios_["datasets"][key].get<std::string>()));
  std::string cache;
  if (!options_.data_dir.empty()) {
    std::string mkdir = "mkdir -p '" + options_.data_dir + "'";
    if (std::system(mkdir.c_str()) == 0) cache = options_.data_dir + "/" + key + ".gt.ivecs";
  }
  RETURN_IF_ERROR(EnsureGroundTruth(d, options_.k, cache));
  auto owned = std::make_unique<Dataset>(std::move(d));
  Dataset* ptr = owned.get();
  datasets_[key] = std::move(owned);
  return ptr;
}

std::vector<std::unique_ptr<Target>> Runner::MakeTargets(const json& sc, Encoding enc) const {
  std::vector<std::string> wanted =
      sc.value("targets", std::vector<std::string>{"vecgpu", "faiss", "faissx", "echo"});
  auto want = [&](const char* t) {
    return std::find(wanted.begin(), wanted.end(), t) != wanted.end();
  };
  std::vector<std::unique_ptr<Target>> out;
  if (want("vecgpu") && !options_.vecgpu_endpoint.empty()) {
    out.push_back(MakeRemoteTarget("vecgpu", options_.vecgpu_endpoint, enc, kRequestTimeoutMs));
  }
  // gRPC has one encoding (protobuf): measured once, with the scenario's first encoding.
  const std::vector<std::string> encodings =
      sc.value("encodings", std::vector<std::string>{"list"});
  const Encoding first = encodings.front() == "binary" ? Encoding::kBinary : Encoding::kList;
  if (want("grpc") && enc == first && !options_.grpc_endpoint.empty() &&
      options_.make_grpc_target) {
    out.push_back(options_.make_grpc_target(options_.grpc_endpoint, kRequestTimeoutMs));
  }
  if (enc == Encoding::kList) {  // the encoding means nothing in process; FAISSx knows lists only
    if (want("faiss") && options_.in_process) out.push_back(MakeInProcessTarget());
    if (want("faissx") && !options_.faissx_endpoint.empty()) {
      out.push_back(MakeRemoteTarget("faissx", options_.faissx_endpoint, enc, kRequestTimeoutMs));
    }
  }
  // The transport's floor, per encoding (the reply's size depends on it); searches only.
  if (want("echo") && options_.echo && sc.value("op", "search") == "search") {
    out.push_back(MakeEchoTarget(enc, kRequestTimeoutMs, IntList(sc, "batch", {1}), options_.k));
  }
  return out;
}

Status Runner::Run(const std::string& name) {
  const json& sc = scenarios_["scenarios"][name];
  ASSIGN_OR_RETURN(Dataset * data, GetDataset(sc.at("dataset").get<std::string>()));
  const json& ix = scenarios_["indexes"][sc.at("index").get<std::string>()];
  IndexConfig config{sc["index"].get<std::string>(),
                     ix.at("index_type").get<std::string>(),
                     ix.at("factory").get<std::string>(),
                     ix.value("nprobe", 0),
                     ix.value("ef_search", 0),
                     ix.value("train_size", int64_t{0})};
  const std::string op_name = sc.value("op", "search");
  const Operation op = op_name == "add"     ? Operation::kAdd
                       : op_name == "mixed" ? Operation::kMixed
                                            : Operation::kSearch;
  const bool open = sc.value("mode", "closed") == "open";
  const std::vector<int> clients = IntList(sc, "clients", {1});
  const std::vector<int> batches = IntList(sc, "batch", {1});
  const std::vector<int> rates = IntList(sc, "rate", {0});
  std::string param_name = sc.contains("nprobe")      ? "nprobe"
                           : sc.contains("ef_search") ? "efSearch"
                                                      : "";
  const std::vector<int> params =
      param_name.empty() ? std::vector<int>{0}
                         : IntList(sc, param_name == "nprobe" ? "nprobe" : "ef_search", {});
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const FloatMatrix pool = Tile(data->queries, max_batch);
  const FloatMatrix& base = data->base;

  for (const std::string& enc_scenario :
       sc.value("encodings", std::vector<std::string>{"list"})) {
    const Encoding enc = enc_scenario == "binary" ? Encoding::kBinary : Encoding::kList;
    for (auto& target : MakeTargets(sc, enc)) {
      // What the target's requests are encoded as ("protobuf" over gRPC).
      const std::string enc_name = target->name() == "grpc" ? "protobuf" : enc_scenario;
      std::printf("# %s: preparing %s on %s (%s)\n", name.c_str(), config.name.c_str(),
                  target->name().c_str(), enc_name.c_str());
      std::fflush(stdout);
      Status st = target->Prepare(config, *data, sc.value("base_rows", int64_t{-1}));
      if (!st.ok()) {
        std::printf("# %s on %s: prepare failed: %s\n", name.c_str(), target->name().c_str(),
                    st.ToString().c_str());
        results_.push_back({{"scenario", name},
                            {"target", target->name()},
                            {"encoding", enc_name},
                            {"error", st.ToString()}});
        continue;
      }
      for (int param : params) {
        if (param > 0) RETURN_IF_ERROR(target->SetParameter(param_name, param));
        double recall = -1;
        if (op == Operation::kSearch && target->name() != "echo") {  // echo's labels are made up
          auto r = MeasureRecall(*target, *data, options_.k);
          if (r.ok()) recall = *r;
        }
        for (int c : clients) {
          for (int rate : rates) {
            for (int batch : batches) {
              LoadSpec spec;
              spec.mode = open ? LoadMode::kOpen : LoadMode::kClosed;
              spec.op = op;
              spec.clients = c;
              spec.batch = batch;
              spec.k = options_.k;
              spec.rate_rps = rate;
              spec.write_fraction = sc.value("write_fraction", 0.0);
              spec.warmup_s = sc.value("warmup_s", 0.5) * options_.time_scale;
              spec.duration_s = sc.value("duration_s", 3.0) * options_.time_scale;
              auto queries = [&](int64_t i) {
                return pool.row((i * batch) % (pool.rows - batch + 1));
              };
              auto adds = [&](int64_t i) {
                return base.row((i * batch) % (base.rows - batch + 1));
              };
              LoadResult r = RunLoad(*target, spec, queries, adds);
              const double rps = r.throughput_rps();
              json entry = {
                  {"scenario", name},
                  {"about", sc.value("about", "")},
                  {"dataset", sc["dataset"]},
                  {"n", base.rows},
                  {"d", base.cols},
                  {"index", config.name},
                  {"index_type", config.index_type},
                  {"target", target->name()},
                  {"encoding", enc_name},
                  {"mode", open ? "open" : "closed"},
                  {"op", op_name},
                  {"clients", c},
                  {"batch", batch},
                  {"k", options_.k},
                  {"offered_rps", open ? json(rate) : json(nullptr)},
                  {"requests", r.requests},
                  {"errors", r.errors},
                  {"errors_by_kind", r.errors_by_kind},
                  {"late_starts", r.late_starts},
                  {"duration_s", r.elapsed_s},
                  {"throughput_rps", rps},
                  {op == Operation::kSearch ? "queries_per_s" : "vectors_per_s", rps * batch},
                  {"latency_ms", LatencyJson(r.latency)},
                  {"recall_at_k", recall >= 0 ? json(recall) : json(nullptr)}};
              if (!param_name.empty()) entry[param_name] = param;
              std::printf(
                  "%-17s %-6s %-6s %-6s c=%-3d b=%-4d%s %9.1f req/s  p50 %9.3f  p99 %9.3f ms"
                  "  recall %s  errors %lld\n",
                  name.c_str(), target->name().c_str(), enc_name.c_str(),
                  param_name.empty() ? "" : (param_name + "=" + std::to_string(param)).c_str(), c,
                  batch, open ? (" rate=" + std::to_string(rate)).c_str() : "", rps,
                  r.latency.Percentile(50) / 1e6, r.latency.Percentile(99) / 1e6,
                  recall >= 0 ? std::to_string(recall).substr(0, 5).c_str() : "-",
                  static_cast<long long>(r.errors));
              std::fflush(stdout);
              results_.push_back(std::move(entry));
            }
          }
        }
      }
      if (Status c = target->Cleanup(); !c.ok()) {
        std::printf("# cleanup on %s: %s\n", target->name().c_str(), c.ToString().c_str());
      }
    }
  }
  // What vecgpu adds beyond FAISS and the transport, on each vecgpu entry that has both.
  for (json& v : results_) {
    if (v.value("scenario", "") != name) continue;
    const std::optional<json> o = ServerOverhead(v, results_);
    if (!o) continue;
    v["server_overhead_ms"] = (*o)["server_overhead_ms"];
    auto at = [&](const char* part, const char* pct) { return (*o)[part][pct].get<double>(); };
    for (const char* pct : {"p50", "p99"}) {
      std::printf(
          "%-17s overhead %-6s c=%-3d b=%-4d %s: vecgpu %9.3f = faiss %9.3f + echo %9.3f"
          " + server %9.3f ms\n",
          name.c_str(), v["encoding"].get<std::string>().c_str(), v["clients"].get<int>(),
          v["batch"].get<int>(), pct, at("vecgpu_ms", pct), at("faiss_ms", pct), at("echo_ms", pct),
          at("server_overhead_ms", pct));
    }
  }
  std::fflush(stdout);
  return Status::Ok();
}

json Runner::Report() const {
  std::string commit = getenv("VECGPU_COMMIT")
                           ? getenv("VECGPU_COMMIT")
                           : ReadFirstLine("git rev-parse --short HEAD 2>/dev/null");
  return {{"tool", "vecgpu-bench 0.1.0"},
          {"commit", commit},
          {"started_at", ReadFirstLine("date -u +%Y-%m-%dT%H:%M:%SZ")},
          {"machine", Machine()},
          {"options",
           {{"vecgpu", options_.vecgpu_endpoint},
            {"faissx", options_.faissx_endpoint},
            {"grpc", options_.grpc_endpoint},
            {"in_process", options_.in_process},
            {"echo", options_.echo},
            {"time_scale", options_.time_scale},
            {"k", options_.k}}},
          {"results", results_},
          {"ratios", Ratios(results_)},
          {"overheads", ServerOverheads(results_)}};
}

std::optional<json> ServerOverhead(const json& v, const json& results) {
  if (v.value("target", "") != "vecgpu" || !v.contains("latency_ms")) return std::nullopt;
  auto same_point = [&](const json& o) {
    for (const char* key : {"scenario", "clients", "batch", "offered_rps", "nprobe", "efSearch"}) {
      if (v.value(key, json()) != o.value(key, json())) return false;
    }
    return o.contains("latency_ms") && o.value("requests", 0) > o.value("errors", 0);
  };
  const json* faiss = nullptr;
  const json* echo = nullptr;
  for (const auto& o : results) {
    const std::string t = o.value("target", "");
    if (t == "faiss" && same_point(o)) faiss = &o;
    // Same encoding: the echo's requests and replies are the same bytes as vecgpu's.
    if (t == "echo" && same_point(o) && o.value("encoding", "") == v.value("encoding", "")) {
      echo = &o;
    }
  }
  if (!faiss || !echo) return std::nullopt;
  json row = {{"scenario", v["scenario"]},
              {"encoding", v["encoding"]},
              {"clients", v["clients"]},
              {"batch", v["batch"]}};
  for (const char* key : {"offered_rps", "nprobe", "efSearch"}) {
    if (v.contains(key) && !v[key].is_null()) row[key] = v[key];
  }
  for (const char* pct : {"p50", "p99"}) {
    const double total = v["latency_ms"][pct].get<double>();
    const double f = (*faiss)["latency_ms"][pct].get<double>();
    const double e = (*echo)["latency_ms"][pct].get<double>();
    row["vecgpu_ms"][pct] = total;
    row["faiss_ms"][pct] = f;
    row["echo_ms"][pct] = e;
    row["server_overhead_ms"][pct] = total - f - e;
  }
  return row;
}

json ServerOverheads(const json& results) {
  json out = json::array();
  for (const auto& v : results) {
    if (auto row = ServerOverhead(v, results)) out.push_back(std::move(*row));
  }
  return out;
}

json Ratios(const json& results) {
  json out = json::array();
  auto same_point = [](const json& a, const json& b) {
    for (const char* key : {"scenario", "clients", "batch", "offered_rps", "nprobe", "efSearch"}) {
      if (a.value(key, json()) != b.value(key, json())) return false;
    }
    return a.value("encoding", "") == "list" && b.value("encoding", "") == "list";
  };
  for (const auto& v : results) {
    if (v.value("target", "") != "vecgpu" || !v.contains("throughput_rps")) continue;
    json row = {{"scenario", v["scenario"]}, {"clients", v["clients"]}, {"batch", v["batch"]}};
    if (v.contains("offered_rps")) row["offered_rps"] = v["offered_rps"];
    bool any = false;
    for (const auto& o : results) {
      const std::string t = o.value("target", "");
      if ((t != "faiss" && t != "faissx") || !o.contains("throughput_rps") || !same_point(v, o)) {
        continue;
      }
      const double tput = o["throughput_rps"].get<double>();
      const double p50 = o["latency_ms"]["p50"].get<double>();
      row["vecgpu_over_" + t + "_throughput"] =
          tput > 0 ? v["throughput_rps"].get<double>() / tput : 0;
      row["vecgpu_over_" + t + "_p50"] = p50 > 0 ? v["latency_ms"]["p50"].get<double>() / p50 : 0;
      any = true;
    }
    if (any) out.push_back(row);
  }
  // gRPC against ZeroMQ on the same server: grpc_over_vecgpu_<encoding>_{throughput,p50}.
  for (const auto& g : results) {
    if (g.value("target", "") != "grpc" || !g.contains("throughput_rps")) continue;
    json row = {{"scenario", g["scenario"]}, {"clients", g["clients"]}, {"batch", g["batch"]}};
    bool any = false;
    for (const auto& o : results) {
      if (o.value("target", "") != "vecgpu" || !o.contains("throughput_rps")) continue;
      bool same = true;
      for (const char* key :
           {"scenario", "clients", "batch", "offered_rps", "nprobe", "efSearch"}) {
        same = same && g.value(key, json()) == o.value(key, json());
      }
      if (!same) continue;
      const std::string enc = o.value("encoding", "list");
      const double tput = o["throughput_rps"].get<double>();
      const double p50 = o["latency_ms"]["p50"].get<double>();
      row["grpc_over_vecgpu_" + enc + "_throughput"] =
          tput > 0 ? g["throughput_rps"].get<double>() / tput : 0;
      row["grpc_over_vecgpu_" + enc + "_p50"] =
          p50 > 0 ? g["latency_ms"]["p50"].get<double>() / p50 : 0;
      any = true;
    }
    if (any) out.push_back(row);
  }
  return out;
}

}  // namespace vecgpu::bench
