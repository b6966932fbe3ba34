// The model-based, differential test: random sequences of every FAISSx action across several
// tenants and indexes, each reply checked against a plain model of what every index holds.
// It runs twice: against the FAISSx service and Engine in this process, and against the real
// `vecgpu` binary over ZeroMQ. A failing sequence is shrunk and printed as a reproducer
// (JSON lines) that VECGPU_MODEL_REPLAY=file replays.
//
// Environment: VECGPU_MODEL_OPS (ops per test; in-process default 20,000, wire 3,000),
// VECGPU_MODEL_SECONDS (time bound, default 240), VECGPU_MODEL_SEED (default 1),
// VECGPU_BIN (the binary for the wire form).
#include "tests/model/model.h"

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "tests/model/drivers.h"
#include "tests/model/generator.h"
#include "tests/model/ops.h"

namespace vecgpu::model {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kOpsPerSequence = 300;

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : fallback;
}

bool IsRead(OpKind k) {
  return k == OpKind::kSearch || k == OpKind::kRangeSearch || k == OpKind::kReconstruct ||
         k == OpKind::kReconstructN || k == OpKind::kGetVectors ||
         k == OpKind::kSearchAndReconstruct || k == OpKind::kStats || k == OpKind::kList;
}

struct Failure {
  size_t index;  // the op after which the mismatch showed
  std::string message;
};

// Sends `op`, checks its reply, and after a mutation (refused or not) re-reads every
// collection sharing its storage. Returns the first mismatch; `requests` counts what was sent.
std::optional<std::string> Execute(Driver& d, Model& m, const Op& op, const std::string& prefix,
                                   int64_t* requests) {
  std::string err;
  try {
    ++*requests;
    err = m.Step(op, Reply(d.Call(EncodeRequest(op, prefix))));
    if (!err.empty()) return err;
    if (IsRead(op.kind)) return std::nullopt;
    for (const Op& check : m.ChecksAfter(op)) {
      ++*requests;
      err = m.Step(check, Reply(d.Call(EncodeRequest(check, prefix))));
      if (!err.empty()) return "after " + std::string(ActionName(op.kind)) + ": " + err;
    }
  } catch (const std::exception& e) {
    return std::string(ActionName(op.kind)) + ": " + e.what();
  }
  return std::nullopt;
}

// Replays ops from a fresh state.
std::optional<Failure> Replay(Driver& d, const std::vector<Op>& ops, int64_t* requests) {
  const std::string prefix = d.Fresh();
  Model m;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (auto err = Execute(d, m, ops[i], prefix, requests)) return Failure{i, *err};
  }
  return std::nullopt;
}

// A failure's kind: its message without numbers and quoted names, cut short, so shrinking keeps
// the same failure rather than finding another one.
std::string Signature(const std::string& message) {
  std::string out;
  bool quoted = false;
  for (char ch : message) {
    if (ch == '\'') quoted = !quoted;
    if (!quoted && !std::isdigit(static_cast<unsigned char>(ch))) out += ch;
    if (out.size() >= 48) break;
  }
  return out;
}

// Drops chunks of ops while the sequence still fails the same way (delta debugging), within
// `budget`.
std::vector<Op> Shrink(Driver& d, std::vector<Op> ops, const std::string& signature,
                       std::chrono::seconds budget) {
  const auto deadline = Clock::now() + budget;
  int64_t requests = 0;
  for (size_t chunk = ops.size() / 2; chunk >= 1 && Clock::now() < deadline; chunk /= 2) {
    for (size_t at = 0; at + chunk <= ops.size() && Clock::now() < deadline;) {
      std::vector<Op> trial(ops.begin(), ops.begin() + at);
      trial.insert(trial.end(), ops.begin() + at + chunk, ops.end());
      if (auto f = Replay(d, trial, &requests); f && Signature(f->message) == signature) {
        trial.resize(f->index + 1);
        ops = std::move(trial);
      } else {
        at += chunk;
      }
    }
  }
  return ops;
}

void Report(Driver& d, uint64_t seed, std::vector<Op> ops, const Failure& f) {
  ops.resize(f.index + 1);
  std::vector<Op> small = Shrink(d, ops, Signature(f.message), std::chrono::seconds(120));
  int64_t requests = 0;
  auto again = Replay(d, small, &requests);
  const std::string file = "model_failure_" + d.name() + "_" + std::to_string(seed) + ".jsonl";
  std::ofstream(file) << "# " << (again ? again->message : f.message) << "\n" << ToJsonLines(small);
  ADD_FAILURE() << d.name() << " model test, seed " << seed << ": " << f.message << "\n"
                << "shrunk from " << ops.size() << " to " << small.size() << " ops"
                << (again ? " (" + again->message + ")" : std::string(" (flaky)"))
                << "; reproducer in " << file << ":\n"
                << ToJsonLines(small);
}

// Generates and runs sequences until `max_ops` ops or the time bound; stops at the first
// failure.
void RunModel(Driver& d, int64_t max_ops) {
  const uint64_t seed0 = EnvInt("VECGPU_MODEL_SEED", 1);
  const auto deadline = Clock::now() + std::chrono::seconds(EnvInt("VECGPU_MODEL_SECONDS", 240));
  int64_t ops_run = 0, requests = 0, sequences = 0;
  const auto start = Clock::now();
  while (ops_run < max_ops && Clock::now() < deadline) {
    const uint64_t seed = seed0 + sequences++;
    Generator gen(seed);
    Model m;
    const std::string prefix = d.Fresh();
    std::vector<Op> ops;
    for (int i = 0; i < kOpsPerSequence && ops_run < max_ops; ++i, ++ops_run) {
      ops.push_back(gen.Next(m));
      if (auto err = Execute(d, m, ops.back(), prefix, &requests)) {
        Report(d, seed, ops, Failure{ops.size() - 1, *err});
        return;
      }
    }
  }
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  std::cout << "model test (" << d.name() << "): " << ops_run << " ops (" << requests
            << " requests with the checks) in " << sequences << " sequences, " << s << " s, "
            << static_cast<int64_t>(ops_run / std::max(s, 1e-9)) << " ops/s, no mismatch\n";
}

TEST(ModelTest, InProcess) {
  auto d = MakeInProcessDriver();
  RunModel(*d, EnvInt("VECGPU_MODEL_OPS", 20000));
}

// GPU placement must change no reply: the same model, every index placed on fake GPUs.
TEST(ModelTest, InProcessPlaced) {
  auto d = MakePlacedInProcessDriver();
  RunModel(*d, EnvInt("VECGPU_MODEL_OPS", 20000) / 4);
}

TEST(ModelTest, Wire) {
  const char* bin = std::getenv("VECGPU_BIN");
  if (!bin || !*bin) GTEST_SKIP() << "VECGPU_BIN names no vecgpu binary";
  auto d = MakeWireDriver(bin);
  RunModel(*d, EnvInt("VECGPU_MODEL_WIRE_OPS", EnvInt("VECGPU_MODEL_OPS", 3000)));
}

TEST(ModelTest, Replay) {
  const char* file = std::getenv("VECGPU_MODEL_REPLAY");
  if (!file || !*file) GTEST_SKIP() << "VECGPU_MODEL_REPLAY names no reproducer";
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  auto d = MakeInProcessDriver();
  int64_t requests = 0;
  auto f = Replay(*d, FromJsonLines(text.str()), &requests);
  EXPECT_FALSE(f) << "op " << f->index << ": " << f->message;
}

}  // namespace
}  // namespace vecgpu::model
