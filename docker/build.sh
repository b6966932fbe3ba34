#!/usr/bin/env bash
# Builds vecgpu's container images from docker/Dockerfile.cpu and docker/Dockerfile.cuda.
#
#   docker/build.sh [cpu|cuda|all] [--bases local|pull] [--no-cache]
#
#   --bases local  (default when podman and debootstrap are here) makes the base images from
#                  Debian's own packages: debootstrap into a folder, then `podman import`; the
#                  CUDA runtime base adds libcudart, libcublas and libcublasLt from the CUDA
#                  toolkit installed here, and the CUDA build stage gets that toolkit mounted
#                  at /usr/local/cuda. For machines that reach no container registry.
#   --bases pull   uses debian:bookworm, debian:bookworm-slim and an NVIDIA CUDA 13 runtime
#                  image from the registry; the CUDA build stage installs the toolkit from the
#                  Python package index (docker/install-cuda-toolkit.sh).
#
# With podman it builds with `--storage-driver vfs --isolation chroot` (no overlay mounts or
# runtime needed: works inside a sandbox), keeps no intermediate layers, and mounts
# ~/.cache/vecgpu into the build stage: FAISS is built once for the host and the images, and
# ccache, the build directory and apt's downloads outlive the build. Prints each image's size
# and build time; tags vecgpu:cpu and vecgpu:cuda, and prunes the images they replaced.
#
#   VECGPU_CUDA_ARCHS   GPU architectures of the CUDA image (default 90; "80;90" for A100 too)
#   VECGPU_ENGINE       podman or docker (default: podman when installed)
#   VECGPU_CACHE_DIR    FAISS and build cache (default ~/.cache/vecgpu)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "build.sh: $*" >&2; }

variants=()
bases=""
no_cache=()
while [ $# -gt 0 ]; do
  case "$1" in
    cpu|cuda) variants+=("$1") ;;
    all) variants+=(cpu cuda) ;;
    --bases) bases=${2:?--bases needs local or pull}; shift ;;
    --bases=*) bases=${1#*=} ;;
    --no-cache) no_cache=(--no-cache) ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) log "unknown argument '$1'"; exit 2 ;;
  esac
  shift
done
[ ${#variants[@]} -gt 0 ] || variants=(cpu cuda)

engine=${VECGPU_ENGINE:-}
[ -n "$engine" ] || { command -v podman > /dev/null && engine=podman || engine=docker; }
command -v "$engine" > /dev/null || { log "neither podman nor docker is installed"; exit 1; }
if [ -z "$bases" ]; then
  if [ "$engine" = podman ] && command -v debootstrap > /dev/null; then bases=local; else bases=pull; fi
fi
case "$bases" in local|pull) ;; *) log "--bases must be local or pull"; exit 2 ;; esac
[ "$bases" = pull ] || [ "$engine" = podman ] || { log "--bases local needs podman"; exit 2; }

cache=${VECGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vecgpu}
mkdir -p "$cache"
ENGINE=("$engine")
BUILD_OPTS=()
if [ "$engine" = podman ]; then
  # vfs stores every layer as a full copy of the image's files (1.5 GB a layer in the build
  # stage), so podman keeps no intermediate layers: the caches mounted into the build stage
  # (FAISS, ccache, the build directory, apt's downloads) make a rebuild quick instead.
  mkdir -p "$cache/apt-archives"
  ENGINE+=(--storage-driver vfs)
  BUILD_OPTS+=(--isolation chroot --format docker --layers=false
               --volume "$cache:/var/cache/vecgpu"
               --volume "$cache/apt-archives:/var/cache/apt/archives")
fi
cuda_home=$(readlink -f "${CUDA_HOME:-/usr/local/cuda}" 2> /dev/null || true)
cuda_ver=""
[ -x "$cuda_home/bin/nvcc" ] &&
  cuda_ver=$("$cuda_home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
archs=$(echo "${VECGPU_CUDA_ARCHS:-90}" | tr ',' ';')

# --- base images made from Debian's packages -------------------------------------------------
image_exists() { "${ENGINE[@]}" image exists "$1" 2> /dev/null; }

make_rootfs() {  # a minimal Debian 12 tree, made once and kept in the cache
  local rootfs="$cache/bases/bookworm-rootfs"
  if [ ! -f "$rootfs/.complete" ]; then
    command -v debootstrap > /dev/null || { log "--bases local needs debootstrap"; exit 1; }
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    local mirror
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2> /dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2> /dev/null || true)
    log "debootstrap bookworm (minbase) into $rootfs"
    local t=$SECONDS
    debootstrap --variant=minbase bookworm "$rootfs" ${mirror:+"$mirror"} > "$cache/bases/debootstrap.log" 2>&1 ||
      { tail -20 "$cache/bases/debootstrap.log"; exit 1; }
    # The same archive suites as this machine (updates and security included).
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      rm -f "$rootfs/etc/apt/sources.list"
      cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    touch "$rootfs/.complete"
    log "debootstrap done in $((SECONDS - t)) s"
  fi
  echo "$rootfs"
}

import_dir() {  # import_dir DIR TAG [--change ...]
  local dir=$1 tag=$2
  shift 2
  tar --exclude=./.complete -C "$dir" -c . | "${ENGINE[@]}" import --quiet "$@" - "$tag" > /dev/null
  log "imported $tag ($("${ENGINE[@]}" image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
}

make_slim() {  # a copy of the tree without documentation, manuals, locales and apt's lists
  local rootfs=$1 slim=$2
  rm -rf "$slim"
  cp -a "$rootfs" "$slim"
  rm -rf "$slim"/usr/share/doc/* "$slim"/usr/share/man/* "$slim"/usr/share/info/* \
         "$slim"/usr/share/locale/* "$slim"/var/cache/debconf/*-old "$slim"/var/log/*.log
}

local_bases() {
  local t=$SECONDS rootfs
  rootfs=$(make_rootfs)
  local env=(--change "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
             --change "CMD=/bin/bash")
  image_exists localhost/vecgpu-base/debian:bookworm ||
    import_dir "$rootfs" localhost/vecgpu-base/debian:bookworm "${env[@]}"
  if ! image_exists localhost/vecgpu-base/debian:bookworm-slim; then
    make_slim "$rootfs" "$cache/bases/slim"
    import_dir "$cache/bases/slim" localhost/vecgpu-base/debian:bookworm-slim "${env[@]}"
    rm -rf "$cache/bases/slim"
  fi
  if [[ " ${variants[*]} " == *" cuda "* ]]; then
    [ -n "$cuda_ver" ] || { log "the CUDA image needs the CUDA toolkit here (nvcc in $cuda_home/bin)"; exit 1; }
    local tag="localhost/vecgpu-base/cuda-runtime:${cuda_ver}-bookworm-slim"
    if ! image_exists "$tag"; then
      local dir="$cache/bases/cuda-runtime"
      make_slim "$rootfs" "$dir"
      # What NVIDIA's "runtime" images hold for vecgpu: the CUDA runtime and cuBLAS. The
      # driver (libcuda) comes from the host, mounted by the NVIDIA Container Toolkit.
      mkdir -p "$dir/usr/local/cuda-$cuda_ver/lib"
      cp -a "$cuda_home"/lib/libcudart.so.* "$cuda_home"/lib/libcublas.so.* \
            "$cuda_home"/lib/libcublasLt.so.* "$dir/usr/local/cuda-$cuda_ver/lib/"
      ln -sfn "cuda-$cuda_ver" "$dir/usr/local/cuda"
      echo "/usr/local/cuda/lib" > "$dir/etc/ld.so.conf.d/cuda.conf"
      chroot "$dir" /sbin/ldconfig
      import_dir "$dir" "$tag" "${env[@]}" \
        --change "ENV=CUDA_VERSION=$cuda_ver" \
        --change "ENV=NVIDIA_VISIBLE_DEVICES=all" \
        --change "ENV=NVIDIA_DRIVER_CAPABILITIES=compute,utility" \
        --change "ENV=NVIDIA_REQUIRE_CUDA=cuda>=${cuda_ver}"
      rm -rf "$dir"
    fi
  fi
  log "base images ready ($((SECONDS - t)) s)"
}

# --- the images -------------------------------------------------------------------------------
version=$(sed -n 's/^project(vecgpu VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
revision=$(git rev-parse --short=12 HEAD 2> /dev/null || echo unknown)
[ -z "$(git status --porcelain 2> /dev/null)" ] || revision="$revision-dirty"
# The commit's time, not the clock's: an unchanged tree rebuilds from the layer cache alone.
created=$(git log -1 --format=%cI 2> /dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
faiss_ver=$(dpkg-query -W -f='${source:Version}' libfaiss-dev 2> /dev/null ||
            apt-cache show libfaiss-dev 2> /dev/null | awk '/^Version:/ {print $2; exit}' || true)

[ "$bases" = local ] && local_bases

for variant in "${variants[@]}"; do
  args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision"
        --build-arg "CREATED=$created")
  mounts=()
  if [ "$variant" = cpu ]; then
    args+=(--build-arg "FAISS_BUILD=faiss ${faiss_ver:-?} avx2 cpu")
    [ "$bases" = pull ] || args+=(--build-arg BUILD_BASE=localhost/vecgpu-base/debian:bookworm
                                   --build-arg RUNTIME_BASE=localhost/vecgpu-base/debian:bookworm-slim)
  else
    args+=(--build-arg "FAISS_BUILD=faiss ${faiss_ver:-?} avx2 cuda${cuda_ver:-13.0} sm_${archs//;/_}"
           --build-arg "VECGPU_CUDA_ARCHS=$archs")
    if [ "$bases" = local ]; then
      args+=(--build-arg BUILD_BASE=localhost/vecgpu-base/debian:bookworm
             --build-arg "RUNTIME_BASE=localhost/vecgpu-base/cuda-runtime:${cuda_ver}-bookworm-slim")
      mounts=(--volume "$cuda_home:/usr/local/cuda:ro")
    fi
  fi
  log "building vecgpu:$variant ($engine, bases: $bases)"
  t=$SECONDS
  "${ENGINE[@]}" build "${BUILD_OPTS[@]}" "${mounts[@]}" "${no_cache[@]}" "${args[@]}" \
    -f "docker/Dockerfile.$variant" -t "vecgpu:$variant" -t "vecgpu:$version-$variant" . \
    > "$cache/image-$variant.log" 2>&1 || { tail -40 "$cache/image-$variant.log"; exit 1; }
  size=$("${ENGINE[@]}" image inspect --format '{{.Size}}' "vecgpu:$variant")
  log "vecgpu:$variant built in $((SECONDS - t)) s, $(numfmt --to=iec "$size") ($size bytes)"
done
# The images these tags named before, and what they alone held.
"${ENGINE[@]}" image prune -f > /dev/null
