#!/usr/bin/env bash
# Builds FAISS from Debian's own `faiss` source package (the version of the installed
# libfaiss-dev, fetched with `apt-get source` from the same archive) with AVX2, and with GPU
# support when the CUDA toolkit is present, as one shared library installed into a cache
# outside the build tree, keyed by version and options. Reuses the cache when it is there.
# Prints the install prefix on its last line of standard output.
#
#   VECGPU_FAISS_GPU=auto|on|off    GPU support (auto: when nvcc is found)
#   VECGPU_CUDA_ARCHS="90"          GPU architectures, ";"- or ","-separated (default: the
#                                   GPU present, else 90 for H100/H200); each one adds about
#                                   as much build time again
#   VECGPU_CACHE_DIR                where builds are kept (default ~/.cache/vecgpu)
#   VECGPU_JOBS                     parallel compile jobs (default: nproc)
set -euo pipefail
log() { echo "build-faiss: $*" >&2; }

cache=${VECGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vecgpu}
jobs=${VECGPU_JOBS:-$(nproc)}
# The source version of the installed libfaiss-dev (a binNMU such as 1.7.3-2+b1 is built from
# source 1.7.3-2).
src_ver=$(dpkg-query -W -f='${source:Version}' libfaiss-dev 2>/dev/null || true)
[ -n "$src_ver" ] || { log "libfaiss-dev is not installed (scripts/setup.sh installs it)"; exit 1; }

nvcc=$(command -v nvcc || true)
[ -n "$nvcc" ] || { [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc; } || true
gpu=${VECGPU_FAISS_GPU:-auto}
case "$gpu" in
  auto) [ -n "$nvcc" ] && gpu=on || gpu=off ;;
  on) [ -n "$nvcc" ] || { log "VECGPU_FAISS_GPU=on but no nvcc was found"; exit 1; } ;;
  off) ;;
  *) log "VECGPU_FAISS_GPU must be auto, on or off"; exit 1 ;;
esac

key="faiss-${src_ver}-avx2-shared"
archs=""
if [ "$gpu" = on ]; then
  cuda_ver=$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
  archs=${VECGPU_CUDA_ARCHS:-}
  if [ -z "$archs" ] && command -v nvidia-smi > /dev/null; then
    archs=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null |
            tr -d '. ' | sort -u | paste -sd';' || true)
  fi
  archs=$(echo "${archs:-90}" | tr ',' ';')
  key="${key}-cuda${cuda_ver}-sm$(echo "$archs" | tr ';' '_')"
else
  key="${key}-cpu"
fi
prefix="$cache/$key"

if [ -f "$prefix/vecgpu-faiss.txt" ]; then
  log "cached: $prefix"
  echo "$prefix"
  exit 0
fi

start=$SECONDS
work="$cache/.work-$key"
rm -rf "$work"
mkdir -p "$work"
log "fetching Debian source faiss=$src_ver"
# apt-get source needs deb-src entries: add them for Debian's own archive (the entries of
# this release's suites, with "deb-src"), once; removed again if they do not work, so a
# later apt-get update is not left failing.
if ! apt-cache showsrc faiss 2>/dev/null | grep -q '^Package: faiss'; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  list=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    list=/etc/apt/sources.list.d/vecgpu-deb-src.sources
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources |
      $SUDO tee "$list" > /dev/null
  elif [ -n "$codename" ] && grep -qE "^deb .* ${codename}(-updates|-security)? " /etc/apt/sources.list 2>/dev/null; then
    list=/etc/apt/sources.list.d/vecgpu-deb-src.list
    grep -E "^deb .* ${codename}(-updates|-security)? " /etc/apt/sources.list |
      sed 's/^deb /deb-src /' | $SUDO tee "$list" > /dev/null
  fi
  [ -n "$list" ] || { log "no Debian archive entries found to add deb-src entries for; add them, or use VECGPU_FAISS=system"; exit 1; }
  log "added deb-src entries ($list); apt-get update"
  if ! $SUDO apt-get update -qq > /dev/null 2>&1 ||
     ! apt-cache showsrc faiss 2>/dev/null | grep -q '^Package: faiss'; then
    $SUDO rm -f "$list"
    $SUDO apt-get update -qq > /dev/null 2>&1 || true
    log "the deb-src entries did not work (removed $list); use VECGPU_FAISS=system"
    exit 1
  fi
fi
(cd "$work" && apt-get source -qq "faiss=$src_ver" > /dev/null 2>&1) ||
  { log "apt-get source faiss=$src_ver failed"; exit 1; }
src=$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'faiss-*' | head -1)

# FAISS 1.7.3 asks for C++11; CUDA 13's Thrust and CUB need C++17.
sed -i 's/set(CMAKE_CXX_STANDARD 11)/set(CMAKE_CXX_STANDARD 17)\nset(CMAKE_CUDA_STANDARD 17)/' \
  "$src/CMakeLists.txt"
grep -q 'set(CMAKE_CXX_STANDARD 17)' "$src/CMakeLists.txt" ||
  { log "could not raise FAISS $src_ver to C++17 (its CMakeLists.txt changed)"; exit 1; }

# One library, compiled for AVX2 (FAISS_OPT_LEVEL=avx2 would build the generic and the AVX2
# library, both with every CUDA kernel: twice the time). -mavx2 defines __AVX2__, which is
# what FAISS's SIMD code paths test.
args=(-S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON
      -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib
      -DCMAKE_CXX_FLAGS="-mavx2 -mfma -mf16c -mpopcnt"
      -DFAISS_OPT_LEVEL=generic -DFAISS_ENABLE_PYTHON=OFF -DFAISS_ENABLE_C_API=OFF
      -DBUILD_TESTING=OFF -DBLA_VENDOR=OpenBLAS)
if [ "$gpu" = on ]; then
  args+=(-DFAISS_ENABLE_GPU=ON -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$archs")
  log "configuring: AVX2 + CUDA $cuda_ver for sm_${archs//;/, sm_} (about 25 min a GPU architecture on 2 cores)"
else
  args+=(-DFAISS_ENABLE_GPU=OFF)
  log "configuring: AVX2, CPU only"
fi
command -v ninja > /dev/null && args+=(-G Ninja)
cmake "${args[@]}" > "$work/configure.log" 2>&1 || { tail -30 "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" --target faiss -j"$jobs" > "$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log" >&2; log "full log: $work/build.log"; exit 1; }
rm -rf "$prefix"
cmake --install "$work/build" > /dev/null

# What vecgpu --version reports about this build (read by CMakeLists.txt).
{
  echo "version=$src_ver"
  echo "simd=avx2"
  echo "gpu=$([ "$gpu" = on ] && echo "cuda-$cuda_ver sm_${archs//;/,sm_}" || echo none)"
  echo "blas=openblas"
} > "$prefix/vecgpu-faiss.txt"
rm -rf "$work"
log "built $key in $(( SECONDS - start )) s"
echo "$prefix"
