#!/usr/bin/env bash
# Installs everything vecgpu needs on a fresh Debian 12 machine and builds it in Release.
# Idempotent: when nothing is missing it only re-runs the (incremental) build.
#   scripts/setup.sh            # then: build/vecgpu serve
#
# FAISS is built from Debian's own source package for AVX2, with GPU support when the CUDA
# toolkit is present, and cached outside the build tree (scripts/build-faiss.sh; the CUDA
# part takes about 25 minutes on 2 cores, once). VECGPU_FAISS=system keeps Debian's
# libfaiss-dev instead (quick, CPU only, generic SIMD). VECGPU_CUDA_ARCHS picks the GPU
# architectures (default: the GPU present, else 90).
#
#   scripts/setup.sh --server     only what the server needs: no test, sanitizer or Python
#                                 packages, no virtualenv, only the vecgpu target (the
#                                 container images' build stage runs this)
#   scripts/setup.sh --deps-only  packages and FAISS, no build (an image layer of its own)
#   VECGPU_BUILD_DIR              build directory (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
server_only=0
deps_only=0
for arg in "$@"; do
  case "$arg" in
    --server) server_only=1 ;;
    --deps-only) deps_only=1 ;;
    *) echo "setup: unknown argument '$arg' (--server, --deps-only)"; exit 2 ;;
  esac
done
build_dir=${VECGPU_BUILD_DIR:-build}

APT_PACKAGES=(
  build-essential cmake pkg-config ninja-build
  ccache                                  # one compiler cache for every build directory
  dpkg-dev                                # apt-get source: FAISS from Debian's source package
  libfaiss-dev libopenblas-dev            # FAISS on OpenBLAS, not the slow reference BLAS
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev
  libspdlog-dev libcli11-dev nlohmann-json3-dev
  libcpp-httplib-dev                      # the /metrics, /healthz, /readyz listener
  libgrpc++-dev protobuf-compiler-grpc    # the gRPC front end (Vald API); optional in CMake
  libprotobuf-dev protobuf-compiler
  golang-etcd-server-dev                  # etcd's .proto files: the cluster's etcd client
)
DEV_PACKAGES=(
  libgtest-dev libgmock-dev libbenchmark-dev libhdf5-dev
  clang libclang-rt-14-dev                # libFuzzer, ASan/UBSan/TSan runtimes (sanitizer stages)
  libomp-14-dev llvm-14                   # OpenMP for clang builds; llvm-symbolizer for reports
  python3 python3-venv
  etcd-server etcd-client                 # a real etcd for the cluster tests
  podman debootstrap                      # container images: bases from Debian, built and
                                          # smoke-tested here (docker/build.sh, tests/images)
)
[ "$server_only" = 1 ] || APT_PACKAGES+=("${DEV_PACKAGES[@]}")

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: packages ready ($(( SECONDS - start )) s)"

# Project-local virtualenv for the Python tests (the real faissx client) and bench plots.
if [ "$server_only" = 0 ]; then
  REQ=tests/python/requirements.txt
  STAMP=.venv/.requirements.sha256
  want=$(sha256sum "$REQ" | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating .venv"
    /usr/bin/python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r "$REQ"
    echo "$want" > "$STAMP"
  fi
  echo "setup: .venv ready ($(( SECONDS - start )) s)"
fi

faiss_root=""
case "${VECGPU_FAISS:-source}" in
  system) echo "setup: VECGPU_FAISS=system: using Debian's libfaiss-dev" ;;
  source)
    if grep -qw avx2 /proc/cpuinfo; then
      faiss_root=$(scripts/build-faiss.sh | tail -1)
    else
      echo "setup: this CPU has no AVX2: using Debian's libfaiss-dev (generic SIMD)"
    fi ;;
  *) echo "setup: VECGPU_FAISS must be source or system"; exit 1 ;;
esac
echo "setup: FAISS ready ($(( SECONDS - start )) s)"
[ "$deps_only" = 0 ] || exit 0

with_dev=ON
target=()
if [ "$server_only" = 1 ]; then with_dev=OFF; target=(--target vecgpu); fi
log="$build_dir.log"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DVECGPU_BUILD_TESTS=$with_dev \
  -DVECGPU_BUILD_BENCH=$with_dev -DVECGPU_FAISS_ROOT="$faiss_root" > "$log" 2>&1 ||
  { cat "$log"; exit 1; }
cmake --build "$build_dir" -j"$(nproc)" "${target[@]}" >> "$log" 2>&1 || { tail -50 "$log"; exit 1; }
echo "setup: built $build_dir/vecgpu ($(( SECONDS - start )) s)"
