#!/usr/bin/env bash
# Checks vecgpu on a GPU machine in under 5 minutes and writes two files: one JSON result
# and one log. Runs from the bundle scripts/gpu-bundle.sh makes (bin/ and lib/ beside this
# script) or from the repository (the binaries of build/, or VECGPU_BUILD_DIR). Needs only
# bash and coreutils (no jq, no Python); the CUDA libraries come from the machine's toolkit.
#
#   gpu-check.sh [--out FILE.json]   default: $OUT/gpu-check.json when $OUT is set, else
#                                    ./gpu-check.json; the log is FILE.log beside it
#
# Steps, in order, each under `timeout` with the budget printed at the start (the budgets sum
# to less than 300 s, the 2-second grace after each SIGTERM included):
#   preflight    binaries and their libraries, nvidia-smi (driver, devices, compute
#                capability), the driver's CUDA against the build's, the CUDA provider's probe
#   parity       gpu_test: every GPU kind against the CPU, k and nprobe of 2048
#   serve        `vecgpu serve --gpus 0 --data-dir ...`; through FAISSx: a flat index loaded,
#                get_index_info reporting device gpu:0 with a current copy, searches (k 2048)
#   rebuild      rows removed while clients search: the copy rebuilt, no search failed
#   crash        the server's gpu-host child SIGKILLed while clients search (skipped when the
#                server has no such child)
#   stop         the server stopped with SIGTERM
#   bench        vecgpu-gpu-bench: batch throughput and one-query latency, GPU against CPU
#   single_adds  10,000 single adds to a 1,000,000-vector flat GPU copy, cudaMemGetInfo around
#   oom          a forced out-of-memory: refused with ResourceExhausted, the index still served
# Without a GPU it prints "gpu-check: no GPU: skipped (<why>)", writes {"gpu": null,
# "skipped": "no GPU: <why>", ...} and exits 0. Exits 1 when a step failed or the preflight
# found something missing (in seconds), 2 on bad usage. README.md ("On a GPU machine") reads
# the JSON field by field.
#
#   VECGPU_CHECK_BUDGET_<STEP>   a step's budget in seconds (STEP upper case: PARITY, ...);
#                                refused when the budgets then sum to 300 s or more
#   VECGPU_CHECK_SERVE_N         rows the serve step loads (default 300000)
#   VECGPU_CHECK_SERVE_ARGS      more `vecgpu serve` flags (the tests give "--fake-gpus 1024"
#                                to run the server steps without a GPU)
#   VECGPU_CHECK_ADDS_N          vectors of the single-adds index (default 1000000)
#   VECGPU_CHECK_BENCH_N         bench vectors (default 1000000)
#   VECGPU_CHECK_BENCH_SECONDS   bench GPU seconds (default 8)
set -uo pipefail
start=$SECONDS
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a file}; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/{/^set/!s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$out" ]; then
  if [ -n "${OUT:-}" ]; then out=$OUT/gpu-check.json; else out=$PWD/gpu-check.json; fi
fi
log=${out%.json}.log
mkdir -p "$(dirname "$out")" || { echo "gpu-check: cannot create $(dirname "$out")" >&2; exit 2; }
: > "$log" || { echo "gpu-check: cannot write $log" >&2; exit 2; }
work=$(mktemp -d)
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ]; then kill -KILL "$serve_pid" 2> /dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

say() {
  echo "gpu-check: $*" >&2
  echo "gpu-check: $*" >> "$log"
}

# --- budgets (seconds): the hard limit of each step
steps=(preflight parity serve rebuild crash stop bench single_adds oom)
declare -A budget=([preflight]=15 [parity]=65 [serve]=35 [rebuild]=20 [crash]=25 [stop]=8
  [bench]=35 [single_adds]=45 [oom]=25)
grace=2  # seconds between timeout's SIGTERM and its SIGKILL
total=0
for s in "${steps[@]}"; do
  var=VECGPU_CHECK_BUDGET_${s^^}
  if [ -n "${!var:-}" ]; then
    [[ "${!var}" =~ ^[1-9][0-9]*$ ]] || { say "$var must be a whole number of seconds"; exit 2; }
    budget[$s]=${!var}
  fi
  total=$((total + budget[$s] + grace))
done
if [ "$total" -ge 300 ]; then
  say "the step budgets sum to $total s with the grace after each SIGTERM, not under 300 s"
  exit 2
fi
{
  printf 'gpu-check: budgets (seconds; each step gets SIGTERM at its budget, SIGKILL %d s later)\n' "$grace"
  for s in "${steps[@]}"; do printf '  %-12s %4d\n' "$s" "${budget[$s]}"; done
  printf '  %-12s %4d (with the grace: %d)\n' total $((total - grace * ${#steps[@]})) "$total"
} | tee -a "$log" >&2

# --- JSON helpers
jstr() {  # a JSON string literal of $1
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037')"
}
jarr() {  # a JSON array of the strings given
  local first=1 item
  printf '['
  for item in "$@"; do
    [ $first = 1 ] || printf ', '
    first=0
    jstr "$item"
  done
  printf ']'
}
# The last line of file $1 that is a JSON object, or "null".
json_line() {
  local line
  line=$(grep -E '^\{.*\}$' "$1" 2> /dev/null | tail -1)
  echo "${line:-null}"
}
# The value of field $2 (a string, number or boolean) in the one-line JSON object $1, or "".
jfield() {
  sed -n "s/.*\"$2\": *\(\"\([^\"\\\\]*\)\"\|\(true\|false\|null\|[-0-9.eE+][-0-9.eE+]*\)\).*/\2\3/p" <<< "$1" | head -1
}

# --- the result, rewritten after every step (a run cut short still leaves its JSON)
declare -A step_json
for s in "${steps[@]}"; do
  step_json[$s]="{\"status\": \"not run\", \"budget_s\": ${budget[$s]}}"
done
failures=()
gpu_json=null
skipped=""
mode=repo
commit=""
complete=false
write_result() {
  local ok=true body s budgets="" steps_out=""
  [ ${#failures[@]} -eq 0 ] || ok=false
  [ -z "$skipped" ] || ok=null  # nothing was checked
  for s in "${steps[@]}"; do
    budgets+="\"$s\": ${budget[$s]}, "
    steps_out+="${steps_out:+, }\"$s\": ${step_json[$s]}"
  done
  body="\"schema\": \"vecgpu-gpu-check/2\", \"ok\": $ok, \"complete\": $complete"
  [ -z "$skipped" ] || body+=", \"skipped\": $(jstr "$skipped")"
  body+=", \"gpu\": $gpu_json, \"failures\": $(jarr "${failures[@]+"${failures[@]}"}")"
  body+=", \"mode\": \"$mode\", \"commit\": $(jstr "$commit"), \"seconds\": $((SECONDS - start))"
  body+=", \"budget_s\": {${budgets}\"total\": $((total - grace * ${#steps[@]})), \"grace_per_step\": $grace, \"worst_case\": $total}"
  body+=", \"log\": $(jstr "$(basename "$log")"), \"steps\": {$steps_out}"
  printf '{%s}\n' "$body" > "$out.tmp" && mv "$out.tmp" "$out"
}
# record STEP STATUS SECONDS REASON [FIELDS]: FIELDS is more of the step's object ("k": v, ...).
record() {
  local s=$1 status=$2 secs=$3 reason=$4 fields=${5:-}
  step_json[$s]="{\"status\": \"$status\", \"seconds\": $secs, \"budget_s\": ${budget[$s]}"
  [ -z "$reason" ] || step_json[$s]+=", \"reason\": $(jstr "$reason")"
  [ -z "$fields" ] || step_json[$s]+=", $fields"
  step_json[$s]+="}"
  if [ "$status" = failed ] || [ "$status" = "timed out" ]; then failures+=("$s: $reason"); fi
  say "$s: $status${reason:+ ($reason)} in $secs s"
  write_result
}
# Appends file $2 to the log under the heading $1 (at most 4000 lines: the first 1000, the
# last 3000).
log_file() {
  local lines
  if [ ! -s "$2" ]; then
    echo "----- $1: (empty)" >> "$log"
    return
  fi
  lines=$(wc -l < "$2")
  {
    echo "----- $1"
    if [ "$lines" -le 4000 ]; then
      cat "$2"
    else
      head -1000 "$2"
      echo "[... $((lines - 4000)) lines left out ...]"
      tail -3000 "$2"
    fi
  } >> "$log" 2> /dev/null
}
# run STEP LIMIT CMD...: runs CMD under timeout (LIMIT seconds), stdout to $work/STEP.out and
# stderr to $work/STEP.err, both into the log; sets rc, secs and result (the last JSON line
# of stdout, or null).
run() {
  local s=$1 limit=$2 t0=$SECONDS
  shift 2
  echo "===== $s: $* (limit ${limit} s)" >> "$log"
  timeout -k "$grace" "$limit" "$@" > "$work/$s.out" 2> "$work/$s.err"
  rc=$?
  secs=$((SECONDS - t0))
  log_file "$s: stdout (exit $rc)" "$work/$s.out"
  log_file "$s: stderr" "$work/$s.err"
  result=$(json_line "$work/$s.out")
}
# Why exit code $1 of a step ran under `run` ended it.
exit_reason() {
  case "$1" in
    124 | 137) echo "timed out" ;;
    134) echo "aborted (SIGABRT: an assertion or abort in the process)" ;;
    139) echo "crashed (SIGSEGV)" ;;
    *) if [ "$1" -gt 128 ]; then echo "killed by signal $(($1 - 128))"; else echo "exit $1"; fi ;;
  esac
}
# Records a step run by `run` whose program prints {"ok": ..., "problems": [...]} or
# {"skipped": "..."}: passed, failed, timed out or skipped.
record_program() {
  local s=$1 why
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    record "$s" "timed out" "$secs" "timed out after ${budget[$s]} s" "\"result\": $result"
  elif [ "$result" != null ] && [ -n "$(jfield "$result" skipped)" ] && [ "$rc" = 0 ]; then
    record "$s" skipped "$secs" "$(jfield "$result" skipped)" "\"result\": $result"
  elif [ "$rc" = 0 ] && [ "$(jfield "$result" ok)" = true ]; then
    record "$s" passed "$secs" "" "\"result\": $result"
  else
    why=$(exit_reason "$rc")
    if [ "$result" != null ]; then
      why+=": $(sed -n 's/.*"problems": *\[\("[^]]*\)\].*/\1/p' <<< "$result" | head -c 600)"
    else
      why+=": $(tail -3 "$work/$s.err" | tr '\n' ' ' | head -c 600)"
    fi
    record "$s" failed "$secs" "$why" "\"result\": $result"
  fi
}
not_run() {  # not_run REASON STEP...
  local why=$1 s
  shift
  for s in "$@"; do
    step_json[$s]="{\"status\": \"not run\", \"budget_s\": ${budget[$s]}, \"reason\": $(jstr "$why")}"
  done
}
finish() {  # finish EXIT_CODE
  complete=true
  write_result
  say "wrote $out and $log ($((SECONDS - start)) s)"
  exit "$1"
}

# --- where the binaries and libraries are
cuda_libs=/usr/local/cuda/lib64:/usr/local/cuda/lib:/usr/local/cuda/targets/x86_64-linux/lib
if [ -x "$here/bin/vecgpu" ]; then
  mode=bundle
  bin=$here/bin
  vecgpu=$bin/vecgpu
  gpu_test=$bin/gpu_test
  bench=$bin/vecgpu-gpu-bench
  gpu_check=$bin/vecgpu-gpu-check
  serve_check=$bin/vecgpu-serve-check
  faiss_info=$here/faiss-build.txt
  commit=$(sed -n 's/^commit: //p' "$here/MANIFEST.txt" 2> /dev/null | head -1)
  export LD_LIBRARY_PATH=$here/lib:$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  repo=$(cd "$here/.." && pwd)
  build=${VECGPU_BUILD_DIR:-$repo/build}
  vecgpu=$build/vecgpu
  gpu_test=$build/gpu/gpu_test
  bench=$build/gpu/vecgpu-gpu-bench
  gpu_check=$build/gpu/vecgpu-gpu-check
  serve_check=$build/vecgpu-serve-check
  faiss_root=$(sed -n 's/^VECGPU_FAISS_ROOT:[A-Z]*=//p' "$build/CMakeCache.txt" 2> /dev/null)
  faiss_info=${faiss_root:+$faiss_root/vecgpu-faiss.txt}
  commit=$(git -C "$repo" rev-parse HEAD 2> /dev/null || true)
  export LD_LIBRARY_PATH=$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
say "mode: $mode; result: $out; log: $log"
write_result

# ===== preflight: seconds, never minutes
t0=$SECONDS
problems=()
pre=""
absent=()
for b in "$vecgpu" "$gpu_test" "$bench" "$gpu_check" "$serve_check"; do
  [ -x "$b" ] || absent+=("$b")
done
unresolved=""
if [ ${#absent[@]} -eq 0 ] && command -v ldd > /dev/null; then
  unresolved=$(ldd "$vecgpu" "$gpu_test" "$bench" "$gpu_check" "$serve_check" 2> /dev/null |
    awk '/not found/ { print $1 }' | sort -u | paste -sd' ')
fi
# The build: CUDA version and architectures (vecgpu-faiss.txt: "gpu=cuda-13.0 sm_90,sm_80").
build_gpu=$(sed -n 's/^gpu=//p' "${faiss_info:-/nonexistent}" 2> /dev/null)
build_cuda=$(sed -n 's/^cuda-\([0-9.]*\).*/\1/p' <<< "$build_gpu")
build_archs=$(grep -o 'sm_[0-9]*' <<< "$build_gpu" | tr -d 'sm_' | paste -sd,)
pre+="\"build\": {\"faiss_gpu\": $(jstr "$build_gpu"), \"cuda\": $(jstr "$build_cuda"), \"archs\": $(jstr "$build_archs")}"

# nvidia-smi: driver, devices, compute capability, and the CUDA version the driver supports.
smi=missing
smi_count=0
driver=""
driver_cuda=""
devices=()
caps=()
if command -v nvidia-smi > /dev/null; then
  if timeout -k 1 8 nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap \
    --format=csv,noheader,nounits > "$work/smi.csv" 2> "$work/smi.err"; then
    smi=ok
    while IFS=',' read -r idx name mem drv cap; do
      [ -n "$idx" ] || continue
      idx=${idx// /}
      mem=${mem// /}
      cap=${cap// /}
      driver=${drv// /}
      [[ "$mem" =~ ^[0-9]+$ ]] || mem=null
      name=$(sed 's/^ *//;s/ *$//' <<< "$name")
      devices+=("{\"index\": $idx, \"name\": $(jstr "$name"), \"memory_total_mib\": $mem, \"compute_cap\": $(jstr "$cap")}")
      caps+=("$cap")
    done < "$work/smi.csv"
    smi_count=${#devices[@]}
    driver_cuda=$(timeout -k 1 5 nvidia-smi 2> /dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)
  else
    smi="failed: $(tr '\n' ' ' < "$work/smi.err" | head -c 300)"
  fi
  log_file "nvidia-smi --query-gpu" "$work/smi.csv"
fi
say "nvidia-smi: $smi; $smi_count GPU(s); driver ${driver:-?} (CUDA ${driver_cuda:-?}); build: ${build_gpu:-unknown}"
pre+=", \"nvidia_smi\": $(jstr "$smi"), \"driver_version\": $(jstr "$driver"), \"driver_cuda\": $(jstr "$driver_cuda"), \"device_count\": $smi_count"
pre+=", \"libraries\": $(jstr "${unresolved:+not found: }${unresolved:-all found}")"
pre+=", \"missing_binaries\": $(jarr "${absent[@]+"${absent[@]}"}")"
if [ "$smi_count" -gt 0 ]; then
  gpu_json="{\"count\": $smi_count, \"source\": \"nvidia-smi\", \"driver_version\": $(jstr "$driver"), \"driver_cuda\": $(jstr "$driver_cuda"), \"devices\": [$(IFS=,; echo "${devices[*]}")]}"
fi

# The CUDA provider's own view (needs the binaries).
probe=null
if [ ${#absent[@]} -eq 0 ] && [ -z "$unresolved" ]; then
  timeout -k 1 10 "$gpu_check" probe > "$work/probe.out" 2> "$work/probe.err"
  probe_rc=$?
  log_file "vecgpu-gpu-check probe (exit $probe_rc)" "$work/probe.out"
  log_file "vecgpu-gpu-check probe: stderr" "$work/probe.err"
  probe=$(json_line "$work/probe.out")
  [ "$probe" != null ] || probe_rc=${probe_rc:-1}
fi
pre+=", \"probe\": $probe"
# Without nvidia-smi's view, the CUDA provider's.
probe_count=$(jfield "$probe" count)
if [ "$smi_count" -eq 0 ] && [ -n "$probe_count" ] && [ "$probe_count" -gt 0 ]; then
  gpu_json="{\"count\": $probe_count, \"source\": \"CUDA provider\", \"devices\": $(sed -n 's/.*"devices": *\(\[[^]]*\]\).*/\1/p' <<< "$probe")}"
  mapfile -t caps < <(grep -o '"compute_capability": *"[0-9.]*"' <<< "$probe" | grep -o '[0-9.]*"$' | tr -d '"')
fi

# No GPU at all: skip, exit 0.
probe_skip=$(jfield "$probe" skipped)
if [ "$smi_count" -eq 0 ] && { [ "$probe" = null ] || [ -n "$probe_skip" ]; }; then
  why="nvidia-smi: ${smi}"
  [ "$smi" != ok ] || why="nvidia-smi sees none"
  if [ -n "$probe_skip" ]; then why+="; CUDA provider: $probe_skip"; fi
  if [ ${#absent[@]} -gt 0 ]; then why+="; not built: ${absent[*]}"; fi
  if [ -n "$unresolved" ]; then why+="; libraries not found: $unresolved"; fi
  skipped="no GPU: $why"
  echo "gpu-check: no GPU: skipped ($why)"
  record preflight skipped $((SECONDS - t0)) "$skipped" "$pre"
  not_run "no GPU" parity serve rebuild crash stop bench single_adds oom
  finish 0
fi

# A GPU is there: everything below must hold, else the run ends here with the reason.
[ ${#absent[@]} -eq 0 ] || problems+=("not built: ${absent[*]} (build them, or run scripts/gpu-bundle.sh)")
[ -z "$unresolved" ] || problems+=("libraries not found: $unresolved (the CUDA ${build_cuda:-?} toolkit's lib64 on LD_LIBRARY_PATH?)")
if [ "$smi" != ok ]; then say "nvidia-smi: $smi (the CUDA provider's probe decides)"; fi
if [ -n "$probe_skip" ]; then problems+=("nvidia-smi sees $smi_count GPU(s) but CUDA does not: $probe_skip"); fi
if [ "$probe" != null ] && [ -z "$probe_skip" ] && [ "$(jfield "$probe" ok)" != true ]; then
  problems+=("the CUDA provider's probe failed: $probe")
fi
if [ ${#absent[@]} -eq 0 ] && [ -z "$unresolved" ] && [ "$probe" = null ]; then
  problems+=("the CUDA provider's probe printed nothing (exit ${probe_rc:-?}): $(tail -2 "$work/probe.err" | tr '\n' ' ')")
fi
# The driver must support the build's CUDA major version.
if [ -n "$driver_cuda" ] && [ -n "$build_cuda" ] && [ "${driver_cuda%%.*}" -lt "${build_cuda%%.*}" ]; then
  problems+=("the driver supports CUDA $driver_cuda; this build needs CUDA ${build_cuda%%.*}.x (a newer driver)")
fi
# Each device's compute capability must be one the build has code for (its PTX runs on newer ones).
if [ -n "$build_archs" ]; then
  lowest=$(tr ',' '\n' <<< "$build_archs" | sort -n | head -1)
  for cap in "${caps[@]+"${caps[@]}"}"; do
    c=${cap//./}
    if [[ "$c" =~ ^[0-9]+$ ]] && [ "$c" -lt "$lowest" ]; then
      problems+=("compute capability $cap is older than this build's lowest architecture sm_$lowest (rebuild FAISS with VECGPU_CUDA_ARCHS=$c)")
    fi
  done
fi
version=$(timeout -k 1 10 "$vecgpu" --version 2>&1 | tr '\n' ';')
pre+=", \"version\": $(jstr "$version")"
if [ ${#absent[@]} -eq 0 ] && [[ "$version" != *"GPU: yes"* ]]; then
  problems+=("vecgpu --version does not say 'GPU: yes': $version")
fi
pre+=", \"problems\": $(jarr "${problems[@]+"${problems[@]}"}")"
if [ ${#problems[@]} -gt 0 ]; then
  echo "gpu-check: preflight failed: ${problems[*]}"
  record preflight failed $((SECONDS - t0)) "${problems[*]}" "$pre"
  not_run "the preflight failed" parity serve rebuild crash stop bench single_adds oom
  finish 1
fi
record preflight passed $((SECONDS - t0)) "" "$pre"

# ===== parity: the gtest binary
run parity "${budget[parity]}" "$gpu_test" --gtest_color=no
gt=$(cat "$work/parity.out" "$work/parity.err")
passed=$(grep -c '^\[       OK \]' <<< "$gt")
failed_names=$(sed -n 's/^\[  FAILED  \] \([A-Za-z0-9_./]*\) (.*/\1/p' <<< "$gt" | sort -u)
mapfile -t failed_list < <(grep . <<< "$failed_names")
gskipped=$(grep -c '^\[  SKIPPED \] [A-Za-z0-9_./]* (' <<< "$gt")
# The test that was running when the binary died or ran out of time.
last_run=$(sed -n 's/^\[ RUN      \] \([A-Za-z0-9_./]*\).*/\1/p' <<< "$gt" | tail -1)
fields="\"exit_code\": $rc, \"passed\": $passed, \"failed\": ${#failed_list[@]}, \"skipped\": $gskipped, \"failed_tests\": $(jarr "${failed_list[@]+"${failed_list[@]}"}")"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  record parity "timed out" "$secs" "timed out after ${budget[parity]} s ($passed passed so far; running $last_run)" "$fields"
elif [ "$rc" -gt 128 ]; then
  record parity failed "$secs" "$(exit_reason "$rc") while running $last_run; failed before: ${failed_list[*]:-none}" "$fields"
elif [ "$rc" != 0 ] || [ ${#failed_list[@]} -gt 0 ]; then
  record parity failed "$secs" "$(exit_reason "$rc"); failed: ${failed_list[*]:-none named}" "$fields"
elif [ "$passed" -eq 0 ]; then
  record parity failed "$secs" "no test passed ($gskipped skipped)" "$fields"
else
  record parity passed "$secs" "" "$fields"
fi

# ===== serve: the real server, through FAISSx
# Below the kernel's ephemeral range (clients' local ports, which a listener cannot take
# even when nothing listens there).
read -r eph_lo _ < /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || eph_lo=32768
[ "${eph_lo:-0}" -gt 12000 ] || eph_lo=32768
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((10000 + RANDOM % (eph_lo - 10000)))
    if ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
      echo "$p"
      return
    fi
  done
  echo 45678
}
port=$(free_port)
mport=$(free_port)
while [ "$mport" = "$port" ]; do mport=$(free_port); done
endpoint=tcp://127.0.0.1:$port
serve_device=gpu:0
mkdir -p "$work/data"
serve_args=(serve --gpus 0 --data-dir "$work/data" --port "$port" --metrics-port "$mport"
  --log-level info)
if "$vecgpu" serve --help 2> /dev/null | grep -q -- --grpc-port; then serve_args+=(--grpc-port 0); fi
read -r -a extra_args <<< "${VECGPU_CHECK_SERVE_ARGS:-}"
serve_args+=("${extra_args[@]+"${extra_args[@]}"}")
t0=$SECONDS
echo "===== serve: $vecgpu ${serve_args[*]}" >> "$log"
"$vecgpu" "${serve_args[@]}" > "$work/server.log" 2>&1 &
serve_pid=$!
say "vecgpu serve: pid $serve_pid, FAISSx $endpoint, metrics port $mport"
serve_ok=false
run serve_wait $((budget[serve] / 2)) "$serve_check" --endpoint "$endpoint" --seconds $((budget[serve] / 2 - 1)) wait
# A port taken meanwhile (free_port's check races with the rest of the machine): the server
# exited saying so; it is started once more on other ports.
if ! kill -0 "$serve_pid" 2> /dev/null && grep -q "cannot bind" "$work/server.log"; then
  wait "$serve_pid" 2> /dev/null
  port=$(free_port)
  mport=$(free_port)
  while [ "$mport" = "$port" ]; do mport=$(free_port); done
  endpoint=tcp://127.0.0.1:$port
  for i in "${!serve_args[@]}"; do
    case "${serve_args[$i]}" in
      --port) serve_args[$((i + 1))]=$port ;;
      --metrics-port) serve_args[$((i + 1))]=$mport ;;
    esac
  done
  echo "===== serve (a port was taken; again): $vecgpu ${serve_args[*]}" >> "$log"
  "$vecgpu" "${serve_args[@]}" > "$work/server.log" 2>&1 &
  serve_pid=$!
  say "vecgpu serve (again, a port was taken): pid $serve_pid, FAISSx $endpoint, metrics port $mport"
  run serve_wait $((budget[serve] / 4)) "$serve_check" --endpoint "$endpoint" --seconds $((budget[serve] / 4 - 1)) wait
fi
server_fields="\"server\": {\"pid\": $serve_pid, \"port\": $port, \"metrics_port\": $mport}"
if [ "$rc" != 0 ] || ! kill -0 "$serve_pid" 2> /dev/null; then
  why="the server did not answer ping"
  if ! kill -0 "$serve_pid" 2> /dev/null; then
    wait "$serve_pid" 2> /dev/null
    why="vecgpu serve exited ($(exit_reason $?)): $(tail -3 "$work/server.log" | tr '\n' ' ' | head -c 500)"
  fi
  record serve failed $((SECONDS - t0)) "$why" "$server_fields"
else
  left=$((budget[serve] - (SECONDS - t0)))
  [ "$left" -ge 5 ] || left=5
  run serve "$left" "$serve_check" --endpoint "$endpoint" --expect "$serve_device" \
    --seconds $((left - 2)) setup --n "${VECGPU_CHECK_SERVE_N:-300000}" --device "$serve_device"
  secs=$((SECONDS - t0))
  gpu_lines=()
  mapfile -t gpu_lines < <(grep -E 'gpus: ' "$work/server.log" | sed 's/^\[[^]]*\] \[[^]]*\] \[[^]]*\] //' | head -5)
  server_fields+=", \"server_gpu_log\": $(jarr "${gpu_lines[@]+"${gpu_lines[@]}"}")"
  result_fields=$result
  record_program serve
  step_json[serve]=${step_json[serve]%\}}", $server_fields}"
  write_result
  [ "$(jfield "$result_fields" ok)" = true ] && serve_ok=true
fi

# After a server step: a server that died is a failure of its own (a CUDA fault that took the
# process down looks like this), and the steps that need it do not run.
server_alive() {  # server_alive STEP
  kill -0 "$serve_pid" 2> /dev/null && return 0
  wait "$serve_pid" 2> /dev/null
  local rc=$? why
  why="vecgpu serve died during the $1 step ($(exit_reason "$rc")): $(tail -3 "$work/server.log" | tr '\n' ' ' | head -c 500)"
  failures+=("server: $why")
  say "$why"
  serve_ok=false
  write_result
  return 1
}

# ===== rebuild and crash: while clients search
if [ "$serve_ok" = true ] && server_alive serve; then
  run rebuild "${budget[rebuild]}" "$serve_check" --endpoint "$endpoint" --expect "$serve_device" \
    --seconds $((budget[rebuild] - 4)) rebuild
  record_program rebuild
fi
if [ "$serve_ok" = true ] && server_alive rebuild; then
  run crash "${budget[crash]}" "$serve_check" --endpoint "$endpoint" --expect "$serve_device" \
    --seconds $((budget[crash] - 4)) crash --server-pid "$serve_pid" --metrics-port "$mport"
  record_program crash
  server_alive crash
fi
for s in rebuild crash; do
  if [[ "${step_json[$s]}" == *'"not run"'* ]]; then
    not_run "the server is not serving (see the serve step and failures)" "$s"
  fi
done
write_result

# ===== stop: SIGTERM, then SIGKILL after the budget
t0=$SECONDS
if kill -0 "$serve_pid" 2> /dev/null; then
  children=$(awk -v p="$serve_pid" '$4 == p { print $1 }' /proc/[0-9]*/stat 2> /dev/null | paste -sd' ')
  kill -TERM "$serve_pid"
  for _ in $(seq 1 $((budget[stop] * 5))); do
    kill -0 "$serve_pid" 2> /dev/null || break
    sleep 0.2
  done
  if kill -0 "$serve_pid" 2> /dev/null; then
    kill -KILL "$serve_pid" 2> /dev/null
    wait "$serve_pid" 2> /dev/null
    record stop failed $((SECONDS - t0)) "vecgpu serve did not stop within ${budget[stop]} s of SIGTERM"
  else
    wait "$serve_pid"
    stop_rc=$?
    if [ "$stop_rc" = 0 ]; then
      record stop passed $((SECONDS - t0)) "" "\"exit_code\": 0"
    else
      record stop failed $((SECONDS - t0)) "vecgpu serve exited $stop_rc after SIGTERM" "\"exit_code\": $stop_rc"
    fi
  fi
  for c in $children; do kill -KILL "$c" 2> /dev/null; done
else
  wait "$serve_pid" 2> /dev/null
  stop_rc=$?
  record stop failed 0 "vecgpu serve had already exited ($(exit_reason "$stop_rc"))" "\"exit_code\": $stop_rc"
fi
serve_pid=""
log_file "vecgpu serve log" "$work/server.log"

# ===== bench, single adds, forced out-of-memory
run bench "${budget[bench]}" "$bench" --n "${VECGPU_CHECK_BENCH_N:-1000000}" \
  --seconds "${VECGPU_CHECK_BENCH_SECONDS:-8}" --cpu-batches 2
if [ "$rc" = 0 ] && [ "$result" != null ] && [ -n "$(jfield "$result" gpu_qps)" ]; then
  record bench passed "$secs" "" "\"result\": $result"
elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  record bench "timed out" "$secs" "timed out after ${budget[bench]} s" "\"result\": $result"
else
  record bench failed "$secs" "$(exit_reason "$rc"): $(jfield "$result" error)$(jfield "$result" skipped)" "\"result\": $result"
fi

run single_adds "${budget[single_adds]}" "$gpu_check" single-adds \
  --n "${VECGPU_CHECK_ADDS_N:-1000000}" --adds 10000 --seconds $((budget[single_adds] - 15))
record_program single_adds

run oom "${budget[oom]}" "$gpu_check" oom --copy-mb 1024 --free-mb 256
record_program oom

if [ ${#failures[@]} -eq 0 ]; then
  say "all checks passed"
  finish 0
fi
say "FAILED: ${failures[*]}"
finish 1
