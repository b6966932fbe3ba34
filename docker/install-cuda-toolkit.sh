#!/usr/bin/env bash
# Installs the CUDA 13.0 toolkit vecgpu builds with (nvcc, the CUDA runtime, cuBLAS, CCCL) from
# NVIDIA's wheels on the Python package index into /usr/local/cuda-13.0, linked from
# /usr/local/cuda: for image builds on machines with no toolkit of their own.
#   docker/install-cuda-toolkit.sh   (CUDA_PREFIX=/usr/local/cuda-13.0, CUDA_LINK=/usr/local/cuda)
set -euo pipefail
prefix=${CUDA_PREFIX:-/usr/local/cuda-13.0}
link=${CUDA_LINK:-/usr/local/cuda}
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.1.0.3 nvidia-cuda-cccl==13.0.85
)
if ! command -v pip3 > /dev/null && ! python3 -m venv --help > /dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3 python3-venv ca-certificates > /dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check --no-deps --target "$work/site" \
  "${wheels[@]}"
mkdir -p "$prefix"
cp -a "$work/site/nvidia/cu13/." "$prefix/"
# What a toolkit install has and wheels cannot carry: unversioned library links, lib64 and
# the targets/ layout CMake's FindCUDAToolkit looks in.
for lib in "$prefix"/lib/*.so.*; do
  base=${lib%%.so.*}.so
  [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
done
[ -e "$prefix/lib64" ] || ln -s lib "$prefix/lib64"
mkdir -p "$prefix/targets/x86_64-linux"
ln -sfn ../../include "$prefix/targets/x86_64-linux/include"
ln -sfn ../../lib "$prefix/targets/x86_64-linux/lib"
[ "$prefix" = "$link" ] || ln -sfn "$prefix" "$link"
"$prefix/bin/nvcc" --version | tail -2
