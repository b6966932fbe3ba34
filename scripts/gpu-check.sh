#!/usr/bin/env bash
# Checks vecgpu on a GPU machine and writes one JSON result file. Runs from the repository
# (the binaries of build/, or VECGPU_BUILD_DIR) or from inside the bundle that
# scripts/gpu-bundle.sh makes (bin/, lib/, libs.tar.xz beside this script).
#
# Without a GPU it prints "gpu-check: no GPU: skipped (<why>)", writes
# {"gpu": null, "skipped": "<why>", ...} and exits 0. With one it runs, each under `timeout`:
#   1. the GPU parity tests (gpu_test, straight from the gtest binary),
#   2. `vecgpu --version`,
#   3. `vecgpu serve --gpus all` on a free port, briefly, checking its log reports the GPU,
#   4. vecgpu-gpu-bench (GPU copy vs CPU host, batch-1024 searches of a flat index),
# and merges nvidia-smi's view, the test counts and the bench numbers into the file. Exits 1
# when a step failed. Under 8 minutes in all. Needs only bash and coreutils (no jq, no Python).
#
#   gpu-check.sh [--out FILE]   default: $OUT/gpu-check.json when $OUT is set, else
#                               ./gpu-check.json; logs go to FILE's name minus .json + -logs/
#   VECGPU_CHECK_BENCH_N        bench vectors (default 1000000)
#   VECGPU_CHECK_BENCH_SECONDS  bench GPU seconds (default 15)
set -uo pipefail
start=$SECONDS
say() { echo "gpu-check: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a file}; shift 2 ;;
    -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) say "unknown argument $1"; exit 2 ;;
  esac
done
if [ -z "$out" ]; then
  if [ -n "${OUT:-}" ]; then out=$OUT/gpu-check.json; else out=$PWD/gpu-check.json; fi
fi
logs=${out%.json}-logs
rm -rf "$logs"
mkdir -p "$logs" || { say "cannot create $logs"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- where the binaries and libraries are
cuda_libs=/usr/local/cuda/lib64:/usr/local/cuda/lib:/usr/local/cuda/targets/x86_64-linux/lib
if [ -x "$here/bin/vecgpu" ]; then
  mode=bundle
  vecgpu=$here/bin/vecgpu
  gpu_test=$here/bin/gpu_test
  bench=$here/bin/vecgpu-gpu-bench
  mkdir -p "$work/lib"
  if [ -f "$here/libs.tar.xz" ]; then
    if command -v xz > /dev/null; then
      timeout 120 tar -xJf "$here/libs.tar.xz" -C "$work/lib"
    else
      (cd "$work/lib" && timeout 120 cmake -E tar xf "$here/libs.tar.xz")
    fi || { say "cannot unpack libs.tar.xz (needs xz or cmake)"; exit 1; }
  fi
  export LD_LIBRARY_PATH=$here/lib:$work/lib:$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  mode=repo
  repo=$(cd "$here/.." && pwd)
  build=${VECGPU_BUILD_DIR:-$repo/build}
  vecgpu=$build/vecgpu
  gpu_test=$build/gpu/gpu_test
  bench=$build/gpu/vecgpu-gpu-bench
  export LD_LIBRARY_PATH=$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

# A JSON string literal of $1.
jstr() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037')"
}
jbool() { if [ "$1" = 0 ]; then echo true; else echo false; fi; }
# The last line of $1 that looks like a JSON object, or "".
json_line() { grep -E '^\{.*\}$' "$1" 2> /dev/null | tail -1; }

finish() {  # finish EXIT_CODE JSON_BODY
  printf '{%s, "mode": %s, "seconds": %d}\n' "$2" "$(jstr "$mode")" $((SECONDS - start)) > "$out"
  say "wrote $out"
  exit "$1"
}

# --- is there a GPU? nvidia-smi first, then the CUDA provider itself
gpus_json="[]"
smi_count=0
if command -v nvidia-smi > /dev/null &&
  timeout 30 nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap \
    --format=csv,noheader,nounits > "$logs/nvidia-smi.csv" 2> "$logs/nvidia-smi.err"; then
  items=()
  while IFS=',' read -r idx name mem driver cap; do
    [ -n "$idx" ] || continue
    mem=${mem// /}
    [[ "$mem" =~ ^[0-9]+$ ]] || mem=null
    items+=("{\"index\": ${idx// /}, \"name\": $(jstr "$(echo "$name" | sed 's/^ *//;s/ *$//')"), \"memory_total_mib\": $mem, \"driver_version\": $(jstr "${driver// /}"), \"compute_cap\": $(jstr "${cap// /}")}")
  done < "$logs/nvidia-smi.csv"
  smi_count=${#items[@]}
  gpus_json="[$(IFS=,; echo "${items[*]}")]"
  say "nvidia-smi: $smi_count GPU(s): $(cut -d, -f2 "$logs/nvidia-smi.csv" | paste -sd, -)"
else
  say "nvidia-smi: not available or failed"
fi

# --- the binaries and their libraries (without a GPU, missing ones are no error)
absent=""
for b in "$vecgpu" "$gpu_test" "$bench"; do [ -x "$b" ] || absent+=" $b"; done
missing=""
[ -n "$absent" ] || missing=$(ldd "$vecgpu" "$gpu_test" "$bench" 2> /dev/null | grep 'not found' | sort -u)
if [ -n "$absent$missing" ]; then
  why="missing:$absent${missing:+ unresolved libraries: $missing}"
  if [ "$smi_count" -eq 0 ]; then
    echo "gpu-check: no GPU: skipped (nvidia-smi sees none; $why)"
    finish 0 "\"gpu\": null, \"skipped\": $(jstr "no GPU: nvidia-smi sees none ($why)")"
  fi
  say "$why (build them, or run scripts/gpu-bundle.sh)"
  finish 1 "\"gpu\": {\"count\": $smi_count, \"devices\": $gpus_json}, \"ok\": false, \"error\": $(jstr "$why")"
fi

if [ "$smi_count" -eq 0 ]; then
  # The provider's own answer (the bench prints {"skipped": "<why>"} without a device).
  timeout 60 "$bench" --n 1000 --batch 4 --seconds 0 --cpu-batches 1 > "$logs/probe.out" \
    2> "$logs/probe.err"
  probe_rc=$?
  probe=$(json_line "$logs/probe.out")
  if [ -z "$probe" ]; then
    say "the CUDA provider probe failed (exit $probe_rc): $(tail -3 "$logs/probe.err")"
    finish 1 "\"gpu\": null, \"ok\": false, \"error\": $(jstr "provider probe failed (exit $probe_rc): $(tail -3 "$logs/probe.err")")"
  fi
  if [[ "$probe" == *'"skipped"'* ]]; then
    why=${probe#\{\"skipped\": \"}
    why=${why%\"\}}
    echo "gpu-check: no GPU: skipped ($why)"
    finish 0 "\"gpu\": null, \"skipped\": $(jstr "no GPU: $why")"
  fi
  say "nvidia-smi saw no GPU, but the CUDA provider did: $probe"
fi

failures=()

# --- 1. the parity tests
say "running gpu_test"
t0=$SECONDS
timeout 240 "$gpu_test" --gtest_output="json:$logs/gpu_test.json" > "$logs/gpu_test.log" 2>&1
test_rc=$?
passed=$(grep -c '^\[       OK \]' "$logs/gpu_test.log")
failed_names=$(sed -n 's/^\[  FAILED  \] \([A-Za-z0-9_./]*\) (.*/\1/p' "$logs/gpu_test.log" | sort -u)
failed=$(printf '%s' "$failed_names" | grep -c . || true)
skipped=$(grep -c '^\[  SKIPPED \] [A-Za-z0-9_./]* (' "$logs/gpu_test.log")
failed_json="[$(printf '%s\n' "$failed_names" | grep . | while read -r n; do printf '%s,' "$(jstr "$n")"; done | sed 's/,$//')]"
[ "$test_rc" = 0 ] || failures+=("gpu_test exited $test_rc")
if [ "$passed" -eq 0 ]; then failures+=("gpu_test passed no test (skipped: $skipped)"); fi
say "gpu_test: $passed passed, $failed failed, $skipped skipped (exit $test_rc)"
test_json="{\"exit_code\": $test_rc, \"passed\": $passed, \"failed\": $failed, \"skipped\": $skipped, \"failed_tests\": $failed_json, \"seconds\": $((SECONDS - t0))}"

# --- 2. the version
version=$(timeout 20 "$vecgpu" --version 2>&1)
version_rc=$?
[ "$version_rc" = 0 ] || failures+=("vecgpu --version exited $version_rc")
grep -q 'GPU: yes' <<< "$version" || failures+=("vecgpu --version reports no GPU support")

# --- 3. the server finds the GPU
port=""
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 40000))
  if ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
    port=$p
    break
  fi
done
say "starting vecgpu serve --gpus all on port ${port:-45678}"
timeout 40 "$vecgpu" serve --gpus all --port "${port:-45678}" --metrics-port 0 \
  > "$logs/serve.log" 2>&1 &
serve_pid=$!
serving=1
for _ in $(seq 1 60); do
  if grep -q 'serving FAISSx' "$logs/serve.log"; then serving=0; break; fi
  kill -0 "$serve_pid" 2> /dev/null || break
  sleep 0.5
done
kill -TERM "$serve_pid" 2> /dev/null
wait "$serve_pid" 2> /dev/null
gpu_lines=$(grep -E 'gpus: ' "$logs/serve.log" | sed 's/^\[[^]]*\] \[[^]]*\] \[[^]]*\] //')
reported=1
grep -qE 'gpus: GPU [0-9]+ .*budget' "$logs/serve.log" && reported=0
[ "$serving" = 0 ] || failures+=("vecgpu serve did not start (see serve.log)")
[ "$reported" = 0 ] || failures+=("vecgpu serve did not report a GPU: $gpu_lines")
workers=$(grep -o '[0-9]* GPU workers' "$logs/serve.log" | head -1)
serve_json="{\"started\": $(jbool $serving), \"gpu_reported\": $(jbool $reported), \"gpu_log\": $(jstr "$gpu_lines"), \"workers\": $(jstr "$workers")}"

# --- 4. the bench
say "running vecgpu-gpu-bench"
timeout 150 "$bench" --n "${VECGPU_CHECK_BENCH_N:-1000000}" \
  --seconds "${VECGPU_CHECK_BENCH_SECONDS:-15}" --cpu-batches 2 > "$logs/bench.out" \
  2> "$logs/bench.err"
bench_rc=$?
bench_json=$(json_line "$logs/bench.out")
if [ "$bench_rc" != 0 ] || [ -z "$bench_json" ] || [[ "$bench_json" == *'"error"'* ]] ||
  [[ "$bench_json" == *'"skipped"'* ]]; then
  failures+=("vecgpu-gpu-bench exited $bench_rc: ${bench_json:-no output}")
  [ -n "$bench_json" ] || bench_json="{\"error\": $(jstr "exit $bench_rc, no output")}"
fi
say "bench: $bench_json"

failures_json="[$(for f in "${failures[@]+"${failures[@]}"}"; do printf '%s,' "$(jstr "$f")"; done | sed 's/,$//')]"
ok=$([ ${#failures[@]} -eq 0 ] && echo true || echo false)
body="\"gpu\": {\"count\": $smi_count, \"devices\": $gpus_json}, \"ok\": $ok, \"failures\": $failures_json"
body+=", \"gpu_test\": $test_json, \"version\": $(jstr "$version"), \"serve\": $serve_json"
body+=", \"bench\": $bench_json"
if [ "$ok" = true ]; then
  say "all checks passed"
  finish 0 "$body"
fi
say "FAILED: ${failures[*]}"
finish 1 "$body"
