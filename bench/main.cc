// vecgpu-bench: load generator and benchmark runner. See bench/README.md.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>

#include "bench/runner.h"

int main(int argc, char** argv) {
  using namespace vecgpu::bench;
  CLI::App app{"vecgpu-bench: measures vecgpu beside in-process FAISS and the FAISSx server"};
  app.require_subcommand(1);
  std::string scenarios_path = "bench/scenarios.json";
  app.add_option("--scenarios", scenarios_path, "Scenarios file")->capture_default_str();

  CLI::App* list = app.add_subcommand("list", "List scenarios and suites");
  CLI::App* run = app.add_subcommand("run", "Run scenarios or suites by name");
  std::vector<std::string> names;
  RunOptions opts;
  std::string out_path;
  bool no_faiss = false;
  bool no_echo = false;
  run->add_option("names", names, "Scenario or suite names")->required();
  run->add_option("--vecgpu", opts.vecgpu_endpoint, "vecgpu endpoint, e.g. tcp://127.0.0.1:45678");
  run->add_option("--faissx", opts.faissx_endpoint, "FAISSx server endpoint");
  run->add_option("--vecgpu-grpc", opts.grpc_endpoint,
                  "vecgpu's Vald v1 gRPC endpoint, e.g. 127.0.0.1:8081 (the target 'grpc')");
  run->add_flag("--no-faiss", no_faiss, "Leave out the in-process FAISS baseline");
  run->add_flag("--no-echo", no_echo,
                "Leave out the echo target (a bare ZeroMQ ROUTER in this process: the "
                "transport's floor)");
  run->add_option("--data-dir", opts.data_dir, "Ground-truth cache folder")->capture_default_str();
  run->add_option("--time-scale", opts.time_scale, "Multiply every duration")
      ->capture_default_str();
  run->add_option("--out", out_path, "Write the JSON report here");
  CLI11_PARSE(app, argc, argv);

  std::ifstream in(scenarios_path);
  if (!in) {
    std::cerr << "cannot read " << scenarios_path << "\n";
    return 2;
  }
  nlohmann::json scenarios;
  try {
    in >> scenarios;
  } catch (const std::exception& e) {
    std::cerr << scenarios_path << ": " << e.what() << "\n";
    return 2;
  }
  if (*list) {
    for (auto& [name, sc] : scenarios["scenarios"].items()) {
      std::cout << name << ": " << sc.value("about", "") << "\n";
    }
    for (auto& [name, members] : scenarios["suites"].items()) {
      std::cout << "suite " << name << ": " << members.dump() << "\n";
    }
    return 0;
  }
  opts.in_process = !no_faiss;
  opts.echo = !no_echo;
#if VECGPU_BENCH_HAVE_GRPC
  opts.make_grpc_target = [](const std::string& endpoint, int timeout_ms) {
    return MakeGrpcTarget("grpc", endpoint, timeout_ms);
  };
#else
  if (!opts.grpc_endpoint.empty()) {
    std::cerr << "# --vecgpu-grpc ignored: this vecgpu-bench was built without gRPC "
                 "(VECGPU_WITH_GRPC)\n";
  }
#endif
  Runner runner(scenarios, opts);
  auto expanded = runner.Expand(names);
  if (!expanded.ok()) {
    std::cerr << expanded.status().message() << "\n";
    return 2;
  }
  int failures = 0;
  for (const auto& name : *expanded) {
    vecgpu::Status st = runner.Run(name);
    if (!st.ok()) {
      std::cerr << name << ": " << st.ToString() << "\n";
      ++failures;
    }
  }
  if (!out_path.empty()) {
    std::ofstream(out_path) << runner.Report().dump(2) << "\n";
    std::cout << "# wrote " << out_path << "\n";
  }
  return failures ? 1 : 0;
}
