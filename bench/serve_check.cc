// vecgpu-serve-check: checks a running `vecgpu serve` through its FAISSx front end, the way a
// client sees it, for scripts/gpu-check.sh (and its tests here, against a CPU server). Each
// command prints one JSON object on stdout ({"ok": true|false, ...}, or {"skipped": "..."})
// and exits 0 when the check passed or was skipped, 1 when it failed, 2 on bad usage.
//
//   wait     until the server answers ping
//   setup    creates a flat index (vecgpu's `device` hint), loads rows, waits until
//            get_index_info reports the expected device with a current GPU copy, then checks
//            searches (each stored row found first; k = 2048)
//   rebuild  removes the last rows (the GPU copy is rebuilt from the host) while clients
//            search; no search may fail, every answer must be right, and the copy must come
//            back current
//   crash    SIGKILLs the server's `gpu-host` child process while clients search; no search
//            may fail, and the GPU must come back (a new child, the copy current, /metrics'
//            vecgpu_gpu_healthy 1, vecgpu_gpu_host_restarts_total grown). {"skipped": "no
//            gpu-host child found"} where the server has no such child.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <zmq.hpp>

#include "bench/faissx_client.h"
#include "bench/search_load.h"
#include "bench/server_probe.h"

namespace vecgpu::bench {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Options {
  std::string endpoint = "tcp://127.0.0.1:45678";
  std::string index = "gpu-check";
  int64_t n = 300'000;
  int dim = 128;
  std::string device = "gpu:0";  // the hint at creation; "" for none
  std::string expect = "gpu:0";  // the device get_index_info must report
  double seconds = 30;           // the command's own deadline
  int threads = 4;
  int server_pid = 0;
  int metrics_port = 0;
  int64_t remove = 100;
};

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void Sleep(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

bool OnGpu(const std::string& device) { return device.rfind("gpu", 0) == 0; }

// One call may take the command's whole deadline, and no more.
int CallTimeoutMs(const Options& o) { return static_cast<int>(std::max(1.0, o.seconds) * 1000); }

// Where the index should be served from, and is: the expected device, with a current copy
// when that is a GPU.
bool Served(const ServedFrom& s, const std::string& expect) {
  return s.device == expect && (!OnGpu(expect) || s.gpu_copy == "current");
}

json ToJson(const ServedFrom& s) {
  return json{{"device", s.device},
              {"gpu_copy", s.gpu_copy},
              {"placement", s.placement},
              {"ntotal", s.ntotal}};
}

// Records get_index_info's answers as they change, with the time since the check began.
class Timeline {
 public:
  explicit Timeline(Clock::time_point t0) : t0_(t0) {}
  void Note(const StatusOr<ServedFrom>& s) {
    json e = s.ok() ? ToJson(*s) : json{{"error", s.status().message()}};
    if (!last_.is_null() && last_ == e) return;
    last_ = e;
    events_.push_back(json{{"t", std::round(Since(t0_) * 1000) / 1000}, {"state", e}});
  }
  void Event(const std::string& what) {
    events_.push_back(json{{"t", std::round(Since(t0_) * 1000) / 1000}, {"event", what}});
  }
  const json& events() const { return events_; }

 private:
  Clock::time_point t0_;
  json events_ = json::array();
  json last_;  // the last state noted
};

// Prints the result and returns the exit code.
int Finish(json result, const std::vector<std::string>& problems, Clock::time_point t0) {
  result["problems"] = problems;
  result["ok"] = problems.empty();
  result["seconds"] = std::round(Since(t0) * 1000) / 1000;
  std::cout << result.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
  return problems.empty() ? 0 : 1;
}

int Wait(zmq::context_t& ctx, const Options& o) {
  const auto t0 = Clock::now();
  std::string last;
  while (Since(t0) < o.seconds) {
    FaissxClient client(ctx, o.endpoint, 500);
    Status st = Ping(client);
    if (st.ok()) return Finish(json{{"ready", true}}, {}, t0);
    last = st.message();
    Sleep(200);
  }
  return Finish(json{{"ready", false}}, {"no answer to ping within the deadline: " + last}, t0);
}

// Searches stored rows one at a time; the problems it finds.
std::vector<std::string> CheckSearches(FaissxClient& client, const Options& o,
                                       const std::vector<int64_t>& rows, int k) {
  std::vector<std::string> problems;
  std::vector<int64_t> labels;
  for (int64_t row : rows) {
    const std::vector<float> q = Row(row, o.dim);
    Status st = client.Search(o.index, q.data(), 1, o.dim, k, Encoding::kBinary, {}, &labels);
    const std::string what = "search k=" + std::to_string(k) + " for row " + std::to_string(row);
    if (!st.ok()) {
      problems.push_back(what + ": " + st.message());
    } else if (labels.size() != static_cast<size_t>(k) || labels[0] != row) {
      problems.push_back(what + ": answered with " +
                         (labels.empty() ? "nothing" : std::to_string(labels[0])));
    } else if (std::count(labels.begin(), labels.end(), -1) > 0 && k <= o.n) {
      problems.push_back(what + ": fewer than k results");
    }
  }
  return problems;
}

int Setup(zmq::context_t& ctx, const Options& o) {
  const auto t0 = Clock::now();
  FaissxClient client(ctx, o.endpoint, CallTimeoutMs(o));
  std::vector<std::string> problems;
  json r{{"index", o.index}, {"n", o.n}, {"d", o.dim}, {"hint", o.device}, {"expect", o.expect}};
  if (Status st = CreateIndexOn(client, o.index, o.dim, "Flat", o.device); !st.ok()) {
    return Finish(r, {"create_index: " + st.message()}, t0);
  }
  constexpr int64_t kBatch = 10'000;
  for (int64_t at = 0; at < o.n; at += kBatch) {
    const int64_t rows = std::min(kBatch, o.n - at);
    const std::vector<float> x = Rows(at, rows, o.dim);
    if (Status st = client.Add(o.index, x.data(), rows, o.dim, Encoding::kBinary); !st.ok()) {
      return Finish(r, {"add_vectors at row " + std::to_string(at) + ": " + st.message()}, t0);
    }
  }
  r["load_seconds"] = std::round(Since(t0) * 1000) / 1000;
  Timeline timeline(t0);
  StatusOr<ServedFrom> s = GetServedFrom(client, o.index);
  while (Since(t0) < o.seconds) {
    s = GetServedFrom(client, o.index);
    timeline.Note(s);
    if (s.ok() && Served(*s, o.expect) && s->ntotal == o.n) break;
    Sleep(50);
  }
  r["timeline"] = timeline.events();
  if (!s.ok()) return Finish(r, {"get_index_info: " + s.status().message()}, t0);
  r["served_from"] = ToJson(*s);
  if (!Served(*s, o.expect)) {
    problems.push_back("get_index_info reports device " + s->device + " (copy: " + s->gpu_copy +
                       "; " + s->placement + "), not " + o.expect);
  } else {
    r["ready_seconds"] = std::round(Since(t0) * 1000) / 1000;
  }
  if (s->ntotal != o.n) problems.push_back("ntotal " + std::to_string(s->ntotal));
  const std::vector<int64_t> rows = {0, o.n / 2, o.n - 1};
  for (const std::string& p : CheckSearches(client, o, rows, 10)) problems.push_back(p);
  if (o.n >= 2048) {
    const std::vector<std::string> k2048 = CheckSearches(client, o, {o.n / 3}, 2048);
    r["k2048_ok"] = k2048.empty();
    for (const std::string& p : k2048) problems.push_back(p);
  }
  // Still served from there after those searches (k = 2048 is within FAISS's GPU limit).
  s = GetServedFrom(client, o.index);
  if (s.ok()) {
    r["served_from_after_searches"] = ToJson(*s);
    if (!Served(*s, o.expect)) problems.push_back("after the searches: device " + s->device);
  }
  return Finish(r, problems, t0);
}

// Polls get_index_info until `done` says so or the deadline passes; records the timeline.
template <typename Done>
StatusOr<ServedFrom> PollUntil(FaissxClient& client, const Options& o, Clock::time_point t0,
                               Timeline& timeline, Done done) {
  StatusOr<ServedFrom> s = GetServedFrom(client, o.index);
  while (Since(t0) < o.seconds) {
    s = GetServedFrom(client, o.index);
    timeline.Note(s);
    if (s.ok() && done(*s)) break;
    Sleep(20);
  }
  return s;
}

int Rebuild(zmq::context_t& ctx, const Options& o) {
  const auto t0 = Clock::now();
  FaissxClient client(ctx, o.endpoint, CallTimeoutMs(o));
  std::vector<std::string> problems;
  json r{{"index", o.index}, {"expect", o.expect}};
  StatusOr<ServedFrom> before = GetServedFrom(client, o.index);
  if (!before.ok()) return Finish(r, {"get_index_info: " + before.status().message()}, t0);
  r["before"] = ToJson(*before);
  const int64_t n = before->ntotal;
  if (n <= 2 * o.remove) return Finish(r, {"the index holds too few rows"}, t0);
  if (!Served(*before, o.expect)) problems.push_back("before: not served from " + o.expect);

  // Clients search rows the removal keeps (the last rows go; the others keep their labels).
  SearchLoad load(ctx, o.endpoint, o.index, o.dim, n - o.remove, o.threads, 10'000);
  Sleep(1000);
  const SearchLoad::Counts at_remove = load.counts();
  Timeline timeline(t0);
  std::vector<int64_t> ids;
  for (int64_t i = n - o.remove; i < n; ++i) ids.push_back(i);
  timeline.Event("remove_ids of the last " + std::to_string(o.remove) + " rows");
  const auto removed_at = Clock::now();
  if (Status st = RemoveIds(client, o.index, ids); !st.ok()) {
    load.Stop();
    return Finish(r, {"remove_ids: " + st.message()}, t0);
  }
  bool stale_seen = false;
  StatusOr<ServedFrom> after = PollUntil(client, o, t0, timeline, [&](const ServedFrom& s) {
    if (OnGpu(o.expect) && s.gpu_copy != "current") stale_seen = true;
    return Served(s, o.expect) && s.ntotal == n - o.remove;
  });
  const double rebuilt_s = Since(removed_at);
  Sleep(1000);  // and searches go on on the rebuilt copy
  load.Stop();
  const SearchLoad::Counts end = load.counts();
  r["timeline"] = timeline.events();
  r["searches"] = load.Report();
  r["searches_after_remove"] = end.answered - at_remove.answered;
  r["stale_seen"] = stale_seen;
  if (!after.ok()) {
    problems.push_back("get_index_info: " + after.status().message());
  } else {
    r["after"] = ToJson(*after);
    if (!Served(*after, o.expect) || after->ntotal != n - o.remove) {
      problems.push_back("not back on " + o.expect + " with " + std::to_string(n - o.remove) +
                         " rows within the deadline (device " + after->device + ", copy " +
                         after->gpu_copy + ", ntotal " + std::to_string(after->ntotal) + ")");
    } else {
      r["rebuild_seconds"] = std::round(rebuilt_s * 1000) / 1000;
    }
  }
  if (end.failed > 0) problems.push_back(std::to_string(end.failed) + " searches failed");
  if (end.wrong > 0) problems.push_back(std::to_string(end.wrong) + " searches answered wrong");
  if (end.answered - at_remove.answered == 0) problems.push_back("no search answered meanwhile");
  // The removed rows are gone.
  std::vector<int64_t> labels;
  const std::vector<float> q = Row(n - 1, o.dim);
  if (Status st = client.Search(o.index, q.data(), 1, o.dim, 1, Encoding::kBinary, {}, &labels);
      !st.ok() || labels.empty() || labels[0] == n - 1) {
    problems.push_back("a removed row is still found");
  }
  return Finish(r, problems, t0);
}

int Crash(zmq::context_t& ctx, const Options& o) {
  const auto t0 = Clock::now();
  json r{{"index", o.index}, {"expect", o.expect}, {"server_pid", o.server_pid}};
  if (o.server_pid <= 0) return Finish(r, {"--server-pid is needed"}, t0);
  const std::vector<int> children = ChildProcesses(o.server_pid, "gpu-host");
  if (children.empty()) {
    std::cout << json{{"skipped", "no gpu-host child found"}, {"server_pid", o.server_pid}}.dump()
              << std::endl;
    return 0;
  }
  FaissxClient client(ctx, o.endpoint, CallTimeoutMs(o));
  std::vector<std::string> problems;
  const std::string healthy = "vecgpu_gpu_healthy{gpu=\"0\"}";
  const std::string restarts = "vecgpu_gpu_host_restarts_total{gpu=\"0\"}";
  auto metrics = [&]() -> json {
    if (o.metrics_port <= 0) return json();
    StatusOr<std::string> page = HttpGet(o.metrics_port, "/metrics", 2000);
    if (!page.ok()) return json{{"error", page.status().message()}};
    json m = json::object();
    for (const std::string& series : {healthy, restarts}) {
      std::optional<double> v = MetricValue(*page, series);
      m[series] = v ? json(*v) : json();
    }
    return m;
  };
  StatusOr<ServedFrom> before = GetServedFrom(client, o.index);
  if (!before.ok()) return Finish(r, {"get_index_info: " + before.status().message()}, t0);
  r["before"] = ToJson(*before);
  r["metrics_before"] = metrics();
  if (!Served(*before, o.expect)) problems.push_back("before: not served from " + o.expect);

  SearchLoad load(ctx, o.endpoint, o.index, o.dim, before->ntotal, o.threads, 10'000);
  Sleep(1000);
  const SearchLoad::Counts at_kill = load.counts();
  Timeline timeline(t0);
  const int victim = children.front();
  r["killed_pid"] = victim;
  timeline.Event("SIGKILL gpu-host pid " + std::to_string(victim));
  const auto killed_at = Clock::now();
  if (kill(victim, SIGKILL) != 0) {
    load.Stop();
    return Finish(r, {"kill " + std::to_string(victim) + ": " + std::strerror(errno)}, t0);
  }
  int replacement = 0;
  StatusOr<ServedFrom> after = PollUntil(client, o, t0, timeline, [&](const ServedFrom& s) {
    for (int pid : ChildProcesses(o.server_pid, "gpu-host")) {
      if (pid != victim && replacement == 0) {
        replacement = pid;
        timeline.Event("new gpu-host pid " + std::to_string(pid));
      }
    }
    return replacement != 0 && Served(s, o.expect);
  });
  const double recovered_s = Since(killed_at);
  const SearchLoad::Counts at_recovery = load.counts();
  Sleep(1000);  // and searches go on on the GPU again
  load.Stop();
  const SearchLoad::Counts end = load.counts();
  r["timeline"] = timeline.events();
  r["searches"] = load.Report();
  r["searches_while_recovering"] = at_recovery.answered - at_kill.answered;
  r["metrics_after"] = metrics();
  r["new_pid"] = replacement ? json(replacement) : json();
  if (!after.ok()) {
    problems.push_back("get_index_info: " + after.status().message());
  } else {
    r["after"] = ToJson(*after);
    if (replacement == 0) problems.push_back("no new gpu-host child within the deadline");
    if (!Served(*after, o.expect)) {
      problems.push_back("not back on " + o.expect + " within the deadline (device " +
                         after->device + ", copy " + after->gpu_copy + ")");
    }
    if (replacement != 0 && Served(*after, o.expect)) {
      r["recovery_seconds"] = std::round(recovered_s * 1000) / 1000;
    }
  }
  // The GPU is healthy again (a CPU-only server has no such gauge).
  if (OnGpu(o.expect) && o.metrics_port > 0 &&
      (!r["metrics_after"].contains(healthy) || r["metrics_after"][healthy] != json(1.0))) {
    problems.push_back(healthy + " is not 1 after the restart: " + r["metrics_after"].dump());
  }
  // Where the server counts restarts, this one is counted.
  const json& rb = r["metrics_before"];
  const json& ra = r["metrics_after"];
  if (rb.is_object() && ra.is_object() && rb.value(restarts, json()).is_number() &&
      ra.value(restarts, json()).is_number() &&
      ra[restarts].get<double>() <= rb[restarts].get<double>()) {
    problems.push_back(restarts + " did not grow (" + rb[restarts].dump() + " before, " +
                       ra[restarts].dump() + " after)");
  }
  if (end.failed > 0) problems.push_back(std::to_string(end.failed) + " searches failed");
  if (end.wrong > 0) problems.push_back(std::to_string(end.wrong) + " searches answered wrong");
  if (end.answered - at_kill.answered == 0) problems.push_back("no search answered meanwhile");
  return Finish(r, problems, t0);
}

}  // namespace
}  // namespace vecgpu::bench

int main(int argc, char** argv) {
  using namespace vecgpu::bench;
  CLI::App app{"vecgpu-serve-check: checks a running vecgpu serve through FAISSx"};
  app.require_subcommand(1);
  Options o;
  app.add_option("--endpoint", o.endpoint, "FAISSx endpoint")->capture_default_str();
  app.add_option("--index", o.index, "Index the checks use")->capture_default_str();
  app.add_option("--dim", o.dim, "Its dimension")->capture_default_str();
  app.add_option("--expect", o.expect, "Device get_index_info must report")->capture_default_str();
  app.add_option("--seconds", o.seconds, "The command's own deadline")->capture_default_str();
  app.add_option("--threads", o.threads, "Searching clients")->capture_default_str();
  CLI::App* wait = app.add_subcommand("wait", "Until the server answers ping");
  CLI::App* setup = app.add_subcommand("setup", "Create and load the index, check searches");
  setup->add_option("--n", o.n, "Rows")->capture_default_str();
  setup->add_option("--device", o.device, "Placement hint (\"\": none)")->capture_default_str();
  CLI::App* rebuild = app.add_subcommand("rebuild", "Remove rows while clients search");
  rebuild->add_option("--remove", o.remove, "Rows removed")->capture_default_str();
  CLI::App* crash = app.add_subcommand("crash", "Kill the gpu-host child while clients search");
  crash->add_option("--server-pid", o.server_pid, "The vecgpu serve process")->required();
  crash->add_option("--metrics-port", o.metrics_port, "Its /metrics port (0: not read)");
  CLI11_PARSE(app, argc, argv);
  if (o.dim < 1 || o.threads < 1 || o.n < 1 || o.remove < 1) {
    std::cerr << "--dim, --threads, --n and --remove must be at least 1\n";
    return 2;
  }
  zmq::context_t ctx;
  if (*wait) return Wait(ctx, o);
  if (*setup) return Setup(ctx, o);
  if (*rebuild) return Rebuild(ctx, o);
  return Crash(ctx, o);
}
