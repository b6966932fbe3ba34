#!/usr/bin/env bash
# Builds (when needed) and gathers into one directory what a borrowed GPU machine needs to run
# scripts/gpu-check.sh there: such a machine has the NVIDIA driver, the CUDA toolkit (cudart,
# cuBLAS), CMake and ninja, but no package registry, and takes at most 64 MiB. The bundle:
#
#   gpu-check.sh       scripts/gpu-check.sh (run it from inside the bundle)
#   bin/               vecgpu, gpu_test, vecgpu-gpu-bench (stripped)
#   lib/libfaiss.so    the GPU FAISS build from the cache (stripped; its CUDA kernels are
#                      compressed already, so it is not packed again)
#   libs.tar.xz        every other shared library the binaries need that a bare Debian 12
#                      lacks (OpenBLAS, libgomp, ZeroMQ, spdlog, ...), stripped and packed:
#                      OpenBLAS alone is 36 MB unpacked. gpu-check.sh unpacks it with xz, or
#                      with `cmake -E tar` where xz is missing.
#   MANIFEST.txt       what came from where, and the commit
#
# Left out: glibc, libstdc++, libgcc_s and the CUDA libraries (the machine's own toolkit).
#
#   scripts/gpu-bundle.sh [DIR]       DIR defaults to dist/gpu-check (replaced)
#   VECGPU_BUILD_DIR    build directory (default build, as scripts/setup.sh makes it)
#   VECGPU_FAISS_ROOT   GPU FAISS prefix (default: the build's, else scripts/build-faiss.sh)
#   VECGPU_JOBS         parallel build jobs (default 2)
set -euo pipefail
log() { echo "gpu-bundle: $*" >&2; }
die() {
  log "$*"
  exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$root/dist/gpu-check}
build=${VECGPU_BUILD_DIR:-$root/build}
jobs=${VECGPU_JOBS:-2}
max_bytes=$((60 * 1024 * 1024))

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
log "configuring $build with $faiss_root"
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DVECGPU_FAISS_ROOT="$faiss_root" > "$build.configure.log" 2>&1 ||
  die "configure failed: see $build.configure.log"
log "building vecgpu, gpu_test and vecgpu-gpu-bench in $build"
cmake --build "$build" -j"$jobs" --target vecgpu gpu_test vecgpu-gpu-bench > /dev/null ||
  die "build failed: run cmake --build $build --target vecgpu gpu_test vecgpu-gpu-bench"

bins=("$build/vecgpu" "$build/gpu/gpu_test" "$build/gpu/vecgpu-gpu-bench")
for b in "${bins[@]}"; do [ -x "$b" ] || die "missing $b (was the GPU backend configured?)"; done
"$build/vecgpu" --version | grep -q 'GPU: yes' || die "$build/vecgpu was built without GPU support"

rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

for b in "${bins[@]}"; do
  cp "$b" "$dest/bin/"
  strip --strip-unneeded "$dest/bin/$(basename "$b")"
done
cp "$faiss_root/lib/libfaiss.so" "$dest/lib/"
strip --strip-unneeded "$dest/lib/libfaiss.so"

# Libraries a bare Debian 12 plus the CUDA toolkit already has.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libutil\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda|libcudart|libcublas|libnvidia|libnvrtc|libnvJitLink|libfaiss\.so)'
missing=$(ldd "${bins[@]}" "$faiss_root/lib/libfaiss.so" | grep 'not found' || true)
[ -z "$missing" ] || die "unresolved libraries: $missing"
manifest="$dest/MANIFEST.txt"
{
  echo "vecgpu GPU check bundle, made $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/gpu-bundle.sh"
  echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "faiss: $faiss_root ($(tr '\n' ' ' < "$faiss_root/vecgpu-faiss.txt"))"
  echo "expects: the NVIDIA driver and CUDA $(sed -n 's/^gpu=cuda-\([0-9.]*\).*/\1/p' "$faiss_root/vecgpu-faiss.txt") (libcudart.so.13, libcublas.so.13)"
  echo
  echo "libs.tar.xz:"
} > "$manifest"
ldd "${bins[@]}" "$faiss_root/lib/libfaiss.so" |
  awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u |
  while read -r soname path; do
    if [[ "$soname" =~ $skip ]]; then continue; fi
    cp -L "$path" "$stage/$soname"
    strip --strip-unneeded "$stage/$soname" 2> /dev/null || true
    echo "  $soname <- $(readlink -f "$path") ($(stat -c %s "$stage/$soname") bytes)" >> "$manifest"
  done
(cd "$stage" && XZ_OPT="-9 -T${jobs}" tar -cJf "$dest/libs.tar.xz" --owner=0 --group=0 ./*.so*)
cp "$root/scripts/gpu-check.sh" "$dest/gpu-check.sh"
chmod +x "$dest/gpu-check.sh"
{
  echo
  echo "files:"
  (cd "$dest" && find . -type f ! -name MANIFEST.txt -printf '  %p %s bytes\n' | sort)
} >> "$manifest"

total=$(du -sb "$dest" | cut -f1)
log "bundle: $dest, $total bytes ($((total / 1024 / 1024)) MiB)"
(cd "$dest" && find . -type f -printf '%10s  %p\n' | sort -k2) >&2
if [ "$total" -gt "$max_bytes" ]; then
  die "the bundle is $total bytes, over the 60 MiB limit"
fi
echo "$dest"
