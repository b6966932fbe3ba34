#!/usr/bin/env bash
# Runs the whole test suite, printing each stage's time:
#   1. the Release build's unit tests and the model-based test (ctest: in process, and against
#      the real binary over the wire);
#   2. ASan + UBSan: clang build with -Wthread-safety as an error, its unit and model tests,
#      then a bounded live fuzz of the ASan server (crash or stall fails);
#   3. TSan: the scheduler and engine tests, including the concurrent engine test;
#   4. a bounded libFuzzer run of the request decoder;
#   5. the Python integration tests against the real binary and the faissx client;
#   6. container images: docker/build.sh builds the CPU image (and the CUDA image where the
#      CUDA toolkit is installed) from Debian-made bases, then tests/images lints docker/ and
#      deploy/kubernetes/ and smoke-tests the images unpacked under chroot. Without podman
#      and debootstrap the build is skipped, and so are the smoke tests, saying why.
# Builds what is missing first.
#   scripts/test.sh
# Environment: VECGPU_FUZZ_SECONDS (libFuzzer, 30), VECGPU_LIVE_FUZZ_SECONDS (60),
#   VECGPU_SKIP_SANITIZERS=1 (stages 2 and 3 off, for quick local runs),
#   VECGPU_SKIP_IMAGES=1 (stage 6's image builds off; its lint still runs).
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${VECGPU_FUZZ_SECONDS:-30}
LIVE_FUZZ_SECONDS=${VECGPU_LIVE_FUZZ_SECONDS:-60}
JOBS=$(nproc)
failed=()
suite_start=$SECONDS

[ -x .venv/bin/python ] || { echo "test: run scripts/setup.sh first"; exit 1; }

stage_start=0
stage() { stage_start=$SECONDS; echo "== $1"; }
stage_done() { echo "   ($(( SECONDS - stage_start )) s)"; }

# build DIR LOG cmake-args... -- targets...: configures and builds, printing the log tail on error.
build() {
  local dir=$1 log=$2; shift 2
  local args=() targets=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  targets=("$@")
  local t=()
  for x in "${targets[@]}"; do t+=(--target "$x"); done
  if cmake -S . -B "$dir" "${args[@]}" > "$log" 2>&1 && cmake --build "$dir" -j"$JOBS" "${t[@]}" >> "$log" 2>&1; then
    return 0
  fi
  tail -40 "$log"
  return 1
}

stage "build (Release)"
build build build.log -DCMAKE_BUILD_TYPE=Release -DVECGPU_BUILD_TESTS=ON || { echo "FAILED: build"; exit 1; }
stage_done

stage "unit tests and model test (ctest)"
(cd build && ctest --output-on-failure --no-tests=error -j2) || failed+=(ctest)
stage_done

if [ "${VECGPU_SKIP_SANITIZERS:-0}" != 1 ]; then
  export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp"
  export UBSAN_OPTIONS="print_stacktrace=1"
  stage "ASan + UBSan build (clang, -Wthread-safety)"
  if build build-asan build-asan.log -DCMAKE_BUILD_TYPE=RelWithDebInfo \
       -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DVECGPU_SANITIZE=address \
       -DVECGPU_FAISS_ROOT= -DVECGPU_BUILD_BENCH=OFF -DVECGPU_MODEL_OPS=30000 -DVECGPU_MODEL_WIRE_OPS=3000; then
    stage_done
    stage "ASan + UBSan: unit tests and model test"
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --no-tests=error -j2) ||
      failed+=(asan-ctest)
    stage_done
    stage "ASan + UBSan: live fuzz of the server, ${LIVE_FUZZ_SECONDS}s"
    fuzz_data=$(mktemp -d)  # with a data directory: every write is logged, then replayed
    .venv/bin/python tests/fuzz/live_fuzz.py --binary build-asan/vecgpu \
      --seconds "$LIVE_FUZZ_SECONDS" --clients 4 --artifacts live-fuzz-artifacts \
      --data-dir "$fuzz_data" || failed+=(live-fuzz)
    rm -rf "$fuzz_data"
    stage_done
  else
    failed+=(asan-build)
  fi

  stage "TSan: scheduler and engine tests"
  if build build-tsan build-tsan.log -DCMAKE_BUILD_TYPE=RelWithDebInfo \
       -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DVECGPU_SANITIZE=thread \
       -DVECGPU_FAISS_ROOT= -DVECGPU_BUILD_BENCH=OFF -- core_test cpu_backend_test; then
    (cd build-tsan &&
       TSAN_OPTIONS="halt_on_error=1 ignore_noninstrumented_modules=1" OMP_NUM_THREADS=1 \
       ctest --output-on-failure --no-tests=error -L "core_test|cpu_backend_test") || failed+=(tsan)
  else
    failed+=(tsan-build)
  fi
  stage_done
fi

stage "fuzz: request decoder, ${FUZZ_SECONDS}s"
if build build-fuzz build-fuzz.log -DVECGPU_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ \
     -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
  corpus=$(mktemp -d)
  if build-fuzz/request_decoder_fuzz -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 \
       -artifact_prefix="$corpus/" "$corpus" tests/fuzz/corpus > fuzz.log 2>&1; then
    tail -1 fuzz.log
  else
    tail -40 fuzz.log; failed+=(fuzz)
  fi
  rm -rf "$corpus"
else
  failed+=(fuzz-build)
fi
stage_done

stage "integration tests (pytest, real vecgpu binary and faissx client)"
.venv/bin/python -m pytest tests/python -q -p no:cacheprovider || failed+=(pytest)
stage_done

images_built=""
if [ "${VECGPU_SKIP_IMAGES:-0}" = 1 ]; then
  echo "== container images: build skipped (VECGPU_SKIP_IMAGES=1)"
elif command -v podman > /dev/null && command -v debootstrap > /dev/null; then
  variants=(cpu)
  if command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
    variants+=(cuda)
  else
    echo "   (no CUDA toolkit here: the CUDA image is not built)"
  fi
  stage "container images: build ${variants[*]} (docker/build.sh, Debian-made bases)"
  if docker/build.sh "${variants[@]}"; then images_built="${variants[*]}"; else failed+=(images-build); fi
  stage_done
else
  echo "== container images: build skipped: podman and debootstrap are not installed" \
       "(scripts/setup.sh installs them)"
fi
stage "container images: lint and smoke tests (pytest tests/images)"
VECGPU_IMAGES_BUILT="$images_built" .venv/bin/python -m pytest tests/images -q -rs \
  -p no:cacheprovider || failed+=(images)
stage_done

echo "== test suite: $(( SECONDS - suite_start )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all test suites passed"
