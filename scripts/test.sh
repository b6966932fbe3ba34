#!/usr/bin/env bash
# Runs the whole test suite: unit tests (ctest), a bounded libFuzzer run of the request
# decoder, and the Python integration tests against the real binary. Builds first if needed.
#   scripts/test.sh
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${VECGPU_FUZZ_SECONDS:-30}
failed=()

[ -x .venv/bin/python ] || { echo "test: run scripts/setup.sh first"; exit 1; }
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DVECGPU_BUILD_TESTS=ON > /dev/null && cmake --build build -j"$(nproc)" \
  > build.log 2>&1 || { tail -50 build.log; exit 1; }

echo "== unit tests (ctest)"
(cd build && ctest --output-on-failure --no-tests=error -j2) || failed+=(ctest)

echo "== fuzz: request decoder, ${FUZZ_SECONDS}s"
if cmake -S . -B build-fuzz -DVECGPU_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ \
     -DCMAKE_BUILD_TYPE=RelWithDebInfo > build-fuzz.log 2>&1 &&
   cmake --build build-fuzz -j"$(nproc)" >> build-fuzz.log 2>&1; then
  corpus=$(mktemp -d)
  if build-fuzz/request_decoder_fuzz -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 \
       -artifact_prefix="$corpus/" "$corpus" tests/fuzz/corpus > fuzz.log 2>&1; then
    tail -1 fuzz.log
  else
    tail -40 fuzz.log; failed+=(fuzz)
  fi
  rm -rf "$corpus"
else
  tail -30 build-fuzz.log; failed+=(fuzz-build)
fi

echo "== integration tests (pytest, real vecgpu binary and faissx client)"
.venv/bin/python -m pytest tests/python -q -p no:cacheprovider || failed+=(pytest)

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all test suites passed"
