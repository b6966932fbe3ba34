#!/usr/bin/env bash
# Copies the vecgpu binary and every shared library it loads into DEST (DEST/bin/vecgpu,
# DEST/lib/*.so*), for a runtime image that holds them and nothing else.
#   docker/collect-runtime.sh build/vecgpu /opt/vecgpu
# Left out, because the runtime base provides them: the C library family and the C++ runtime
# (libc, libm, libpthread, libdl, librt, ld-linux, libstdc++, libgcc_s), and the CUDA
# libraries (libcudart, libcublas, libcublasLt: the CUDA runtime base; libcuda and
# libnvidia-*: the host's driver, mounted by the NVIDIA Container Toolkit).
set -euo pipefail
bin=${1:?usage: collect-runtime.sh BINARY DEST}
dest=${2:?usage: collect-runtime.sh BINARY DEST}
mkdir -p "$dest/bin" "$dest/lib"
install -m 0755 "$bin" "$dest/bin/vecgpu"
strip --strip-unneeded "$dest/bin/vecgpu"

skip='^(libc|libm|libpthread|libdl|librt|libresolv|libutil|ld-linux-x86-64|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnvidia-.*)\.so'
missing=$(ldd "$bin" | awk '/not found/ {print $1}')
if [ -n "$missing" ]; then
  echo "collect-runtime: $bin needs libraries that are not installed: $missing" >&2
  exit 1
fi
count=0
while read -r name path; do
  [[ "$name" =~ $skip ]] && continue
  cp -L "$path" "$dest/lib/$name"
  chmod 0644 "$dest/lib/$name"
  count=$((count + 1))
done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
strip --strip-unneeded "$dest"/lib/*.so* 2> /dev/null || true
echo "collect-runtime: $dest/bin/vecgpu and $count libraries ($(du -sh "$dest" | cut -f1))"
