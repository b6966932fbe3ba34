#!/usr/bin/env bash
# Builds (when needed) and packs into ONE tarball, under 50 MiB, what a borrowed GPU machine
# needs to run scripts/gpu-check.sh: such a machine has the NVIDIA driver, the CUDA toolkit
# (cudart, cuBLAS), CMake and ninja, but no package registry. Inside, under vecgpu-gpu-check/:
#
#   gpu-check.sh       scripts/gpu-check.sh (run it from there)
#   bin/               vecgpu, gpu_test, vecgpu-gpu-bench, vecgpu-gpu-check, vecgpu-serve-check
#   lib/               libfaiss.so (the GPU FAISS build from the cache) and every other shared
#                      library the binaries need that a bare Debian 12 lacks (OpenBLAS,
#                      libgomp, ZeroMQ, spdlog, gRPC, ...), all stripped
#   faiss-build.txt    the FAISS build's description (its CUDA version and architectures,
#                      which gpu-check.sh's preflight compares with the machine's)
#   MANIFEST.txt       what came from where, and the commit
#
# Left out: glibc, libstdc++, libgcc_s and the CUDA libraries (the machine's own toolkit).
# Packed with xz; unpack with `tar -xJf FILE`, or `cmake -E tar xf FILE` where xz is missing.
# Prints the tarball's size, fails when it is over 50 MiB, and prints its path last.
#
#   scripts/gpu-bundle.sh [FILE]   FILE defaults to dist/vecgpu-gpu-check.tar.xz (replaced)
#   VECGPU_BUILD_DIR    build directory (default build, as scripts/setup.sh makes it)
#   VECGPU_FAISS_ROOT   GPU FAISS prefix (default: the build's, else scripts/build-faiss.sh)
#   VECGPU_JOBS         parallel build and compression jobs (default 2)
set -euo pipefail
log() { echo "gpu-bundle: $*" >&2; }
die() {
  log "$*"
  exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tarball=${1:-$root/dist/vecgpu-gpu-check.tar.xz}
build=${VECGPU_BUILD_DIR:-$root/build}
jobs=${VECGPU_JOBS:-2}
max_bytes=$((50 * 1024 * 1024))
targets=(vecgpu gpu_test vecgpu-gpu-bench vecgpu-gpu-check vecgpu-serve-check)

faiss_root=${VECGPU_FAISS_ROOT:-}
if [ -z "$faiss_root" ] && [ -f "$build/CMakeCache.txt" ]; then
  faiss_root=$(sed -n 's/^VECGPU_FAISS_ROOT:[A-Z]*=//p' "$build/CMakeCache.txt")
fi
if [ -z "$faiss_root" ]; then
  log "building (or finding) the GPU FAISS with scripts/build-faiss.sh"
  faiss_root=$(VECGPU_FAISS_GPU=on "$root/scripts/build-faiss.sh" | tail -1)
fi
[ -f "$faiss_root/vecgpu-faiss.txt" ] || die "no FAISS build at '$faiss_root'"
grep -q '^gpu=cuda' "$faiss_root/vecgpu-faiss.txt" || die "$faiss_root is a CPU-only FAISS build"

gen=()
[ -f "$build/CMakeCache.txt" ] || gen=(-G Ninja)
mkdir -p "$build"
stage_log=$build/gpu-bundle-configure.log  # inside the build directory, never in the tree
log "configuring $build with $faiss_root"
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DVECGPU_BUILD_TESTS=ON \
  -DVECGPU_BUILD_BENCH=ON -DVECGPU_FAISS_ROOT="$faiss_root" > "$stage_log" 2>&1 ||
  die "configure failed: see $stage_log"
log "building ${targets[*]} in $build"
cmake --build "$build" -j"$jobs" --target "${targets[@]}" > /dev/null ||
  die "build failed: run cmake --build $build --target ${targets[*]}"

bins=("$build/vecgpu" "$build/gpu/gpu_test" "$build/gpu/vecgpu-gpu-bench"
  "$build/gpu/vecgpu-gpu-check" "$build/vecgpu-serve-check")
for b in "${bins[@]}"; do [ -x "$b" ] || die "missing $b (was the GPU backend configured?)"; done
"$build/vecgpu" --version | grep -q 'GPU: yes' || die "$build/vecgpu was built without GPU support"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dest=$stage/vecgpu-gpu-check
mkdir -p "$dest/bin" "$dest/lib"
for b in "${bins[@]}"; do
  cp "$b" "$dest/bin/"
  strip --strip-unneeded "$dest/bin/$(basename "$b")"
done
cp "$faiss_root/lib/libfaiss.so" "$dest/lib/"
strip --strip-unneeded "$dest/lib/libfaiss.so"
cp "$faiss_root/vecgpu-faiss.txt" "$dest/faiss-build.txt"
cp "$root/scripts/gpu-check.sh" "$dest/gpu-check.sh"
chmod +x "$dest/gpu-check.sh"

# Libraries a bare Debian 12 plus the CUDA toolkit already has.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libutil\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda|libcudart|libcublas|libnvidia|libnvrtc|libnvJitLink|libfaiss\.so)'
missing=$(ldd "${bins[@]}" "$faiss_root/lib/libfaiss.so" | grep 'not found' || true)
[ -z "$missing" ] || die "unresolved libraries: $missing"
manifest=$dest/MANIFEST.txt
{
  echo "vecgpu GPU check bundle, made $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/gpu-bundle.sh"
  echo "commit: $(git -C "$root" rev-parse HEAD 2> /dev/null || echo unknown)$(git -C "$root" diff --quiet 2> /dev/null || echo ' (with uncommitted changes)')"
  echo "faiss: $faiss_root ($(tr '\n' ' ' < "$faiss_root/vecgpu-faiss.txt"))"
  echo "expects: the NVIDIA driver and CUDA $(sed -n 's/^gpu=cuda-\([0-9.]*\).*/\1/p' "$faiss_root/vecgpu-faiss.txt")'s cudart and cuBLAS"
  echo
  echo "lib/:"
} > "$manifest"
ldd "${bins[@]}" "$faiss_root/lib/libfaiss.so" |
  awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u |
  while read -r soname path; do
    if [[ "$soname" =~ $skip ]]; then continue; fi
    cp -L "$path" "$dest/lib/$soname"
    strip --strip-unneeded "$dest/lib/$soname" 2> /dev/null || true
    echo "  $soname <- $(readlink -f "$path")" >> "$manifest"
  done
{
  echo
  echo "files (bytes, unpacked):"
  (cd "$dest" && find . -type f ! -name MANIFEST.txt -printf '  %p %s\n' | sort)
} >> "$manifest"

mkdir -p "$(dirname "$tarball")"
rm -f "$tarball"
log "packing $(du -sb "$dest" | cut -f1) bytes with xz -9 ($jobs threads)"
(cd "$stage" && XZ_OPT="-9 -T$jobs" tar -cJf "$tarball" --owner=0 --group=0 vecgpu-gpu-check)
size=$(stat -c %s "$tarball")
log "$tarball: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB; the limit is 50 MiB)"
(cd "$dest" && find . -type f -printf '%10s  %p\n' | sort -k2) >&2
if [ "$size" -gt "$max_bytes" ]; then
  die "the tarball is $size bytes, over the 50 MiB limit"
fi
echo "$tarball"
