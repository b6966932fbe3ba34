#!/usr/bin/env bash
# Runs a benchmark suite (default: standard) against vecgpu, in-process FAISS and the FAISSx
# server, all on this machine over loopback, then plots it.
#   bench/run_suite.sh [suite-or-scenario ...]
# Writes bench/results/<UTC time>-<commit>.json and bench/results/<same>/ (PNGs, summary.md).
# Environment: VECGPU_BENCH_TIME_SCALE (default 1) multiplies every duration;
# VECGPU_BENCH_NO_FAISSX=1 leaves the FAISSx server out; VECGPU_BENCH_SERVER_ARGS adds flags to
# `vecgpu serve` (e.g. "--max-batch-rows 1" to measure with batching off); VECGPU_BENCH_BUILD
# picks the build directory (default build; e.g. build-debian for one on Debian's libfaiss-dev).
# vecgpu serves gRPC (the Vald v1 API) on a free port too, for scenarios with the target "grpc".
# "cluster" (and any scenario whose entry has a "cluster" key) runs each scenario twice on a
# cluster of its own: etcd, `vecgpu serve --join` agents and one `vecgpu gateway`, once through
# the gateway and once against the first agent directly (see cluster_scenario below).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${VECGPU_BENCH_BUILD:-build}
[ -x "$B/vecgpu-bench" ] || { echo "run scripts/setup.sh first (no $B/vecgpu-bench)"; exit 1; }
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(standard)
# "noisy-neighbour" (also part of "standard") is bench/noisy_neighbour.py: it starts servers of
# its own, with auth and a data directory.
noisy=0
# "cluster-recall" is bench/cluster_recall.py: a cluster (S=3, R=2) of its own against one node.
recall=0
rest=()
for n in "${names[@]}"; do
  case "$n" in
    noisy-neighbour) noisy=1 ;;
    cluster-recall) recall=1 ;;
    standard) noisy=1; rest+=("$n") ;;
    *) rest+=("$n") ;;
  esac
done
# Scenarios with a "cluster" key (and suites of them) run on a cluster: split them off.
cluster_names=()
names=()
if [ ${#rest[@]} -gt 0 ]; then
  while read -r kind n; do
    if [ "$kind" = cluster ]; then cluster_names+=("$n"); else names+=("$n"); fi
  done < <(.venv/bin/python - "${rest[@]}" <<'PY'
import json, sys
cfg = json.load(open("bench/scenarios.json"))
for n in sys.argv[1:]:
    members = cfg["suites"].get(n, [n])
    on_cluster = [m for m in members if "cluster" in cfg["scenarios"].get(m, {})]
    if on_cluster and len(on_cluster) == len(members):
        print("cluster", n)
    else:  # unknown names go to vecgpu-bench, which says what is wrong
        print("plain", n)
PY
  )
fi

# N (default 3) distinct free ports, bound at once: two binds in a row can get the same port.
free_ports() {
  .venv/bin/python -c 'import socket, sys; ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "${1:-3}"
}
wait_ping() {
  .venv/bin/python - "$1" <<'PY'
import sys, time, msgpack, zmq
deadline = time.time() + 60
while time.time() < deadline:
    s = zmq.Context.instance().socket(zmq.REQ); s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 500); s.connect(sys.argv[1])
    try:
        s.send(msgpack.packb({"action": "ping"}))
        if msgpack.unpackb(s.recv()).get("success"): sys.exit(0)
    except zmq.Again:
        pass
    finally:
        s.close()
    time.sleep(0.2)
sys.exit(1)
PY
}

pids=()
tmpdirs=()
# Stops what this script started, the last started first (a cluster's gateway and agents before
# its etcd, so agents leave the cluster instead of waiting on a dead etcd).
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  pids=()
  for d in "${tmpdirs[@]}"; do rm -rf "$d"; done
  tmpdirs=()
}
trap cleanup EXIT

mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)-$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
time_scale=${VECGPU_BENCH_TIME_SCALE:-1}

if [ ${#names[@]} -gt 0 ]; then
  read -r vport gport fport < <(free_ports)
  # shellcheck disable=SC2086
  "$B/vecgpu" serve --port "$vport" --grpc-port "$gport" --metrics-port 0 --log-level warning ${VECGPU_BENCH_SERVER_ARGS:-} \
    > "bench/results/$stamp-vecgpu.log" 2>&1 &
  pids+=($!)
  # The gRPC target (Vald v1 API on the same server) runs only in scenarios that name it ("grpc").
  args=(--vecgpu "tcp://127.0.0.1:$vport" --vecgpu-grpc "127.0.0.1:$gport")
  if [ "${VECGPU_BENCH_NO_FAISSX:-0}" != 1 ]; then
    .venv/bin/faissx.server run --port "$fport" --bind-address 127.0.0.1 --log-level ERROR \
      > "bench/results/$stamp-faissx.log" 2>&1 &
    pids+=($!)
    args+=(--faissx "tcp://127.0.0.1:$fport")
    wait_ping "tcp://127.0.0.1:$fport" || { echo "the FAISSx server did not start"; exit 1; }
  fi
  wait_ping "tcp://127.0.0.1:$vport" || { echo "vecgpu did not start"; exit 1; }

  "$B/vecgpu-bench" run "${names[@]}" "${args[@]}" --data-dir bench/data \
    --time-scale "$time_scale" --out "bench/results/$stamp.json"
  .venv/bin/python bench/plot.py "bench/results/$stamp.json" --out "bench/results/$stamp"
  echo "report: bench/results/$stamp.json, plots: bench/results/$stamp/"
  cleanup  # later parts measure a quiet machine
fi

# ---------------------------------------------------------------------------------------------
# Cluster scenarios. Each gets a cluster of its own on free loopback ports: etcd (a temporary
# data directory, --unsafe-no-fsync, as tests/python/test_cluster_agent.py runs it), the
# scenario's `cluster.agents` agents (`vecgpu serve --join`, ids a1, a2, ...; default 1) and
# one `vecgpu gateway`. vecgpu-bench runs the scenario against agent a1 directly and then
# through the gateway, on the same dataset (same seed); bench/merge_reports.py merges the two
# reports into one whose targets are "direct" and "gateway" (target "grpc" becomes
# "direct-grpc" / "gateway-grpc"). VECGPU_BENCH_SERVER_ARGS goes to the agents,
# VECGPU_BENCH_GATEWAY_ARGS to the gateway.
wait_etcd() {
  local deadline=$((SECONDS + 30))
  until ETCDCTL_API=3 etcdctl --endpoints "$1" --dial-timeout 1s --command-timeout 2s \
      endpoint health > /dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}
# Until `vecgpu cluster status` lists $2 agents and an index can be created (and dropped)
# through the gateway at $3: the gateway then routes to them.
wait_cluster() {
  local deadline=$((SECONDS + 60)) n
  while :; do
    # (Its exit status says whether every shard is served: only the member count matters here.)
    n=$({ "$B/vecgpu" cluster status --etcd "$1" --json 2>/dev/null || true; } |
          .venv/bin/python -c 'import json, sys; print(len(json.load(sys.stdin)["members"]))' \
            2>/dev/null) || n=0
    [ "$n" = "$2" ] && break
    [ $SECONDS -lt $deadline ] || { echo "etcd lists $n of $2 agents"; return 1; }
    sleep 0.2
  done
  .venv/bin/python - "$3" <<'PY'
import os, sys, time, msgpack, zmq
name = f"bench-probe-{os.getpid()}"
deadline = time.time() + 60
while time.time() < deadline:
    s = zmq.Context.instance().socket(zmq.REQ); s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000); s.connect(sys.argv[1])
    try:
        s.send(msgpack.packb({"action": "create_index", "index_id": name, "dimension": 4,
                              "index_type": "L2"}))
        if msgpack.unpackb(s.recv()).get("success"):
            s.send(msgpack.packb({"action": "delete_index", "index_id": name}))
            s.recv()
            sys.exit(0)
    except zmq.Again:
        pass
    finally:
        s.close()
    time.sleep(0.2)
print("the gateway did not create an index", file=sys.stderr)
sys.exit(1)
PY
}
cpu_seconds() {  # user + system CPU seconds of process $1 so far
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat" \
    2>/dev/null || echo "-"
}
thread_cpu() {  # CPU seconds of process $1's threads so far, summed by thread name, largest first
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s\t%s\n' "$(cat "$t/comm" 2>/dev/null)" "$(cpu_seconds "$1/task/${t##*/}")"
  done | awk -F'\t' '$2 != "-" { s[$1] += $2; n[$1]++ }
    END { for (k in s) printf "    %8.2f s  %3d thread(s)  %s\n", s[k], n[k], k }' | sort -nr
}
save_metrics() {  # GET $1/metrics into $2 (best effort)
  .venv/bin/python -c 'import sys, urllib.request
open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=5).read())' \
    "$1" "$2" 2>/dev/null || true
}
# cluster_scenario SCENARIO DIR: runs one scenario on a fresh cluster; parts and logs go in DIR.
cluster_scenario() {
  local sc=$1 dir=$2 agents tmp i t a1_pid
  agents=$(.venv/bin/python -c 'import json, sys
cluster = json.load(open("bench/scenarios.json"))["scenarios"][sys.argv[1]]["cluster"]
print(cluster.get("agents", 1))' "$sc")
  local -a p
  read -r -a p < <(free_ports $((2 + 4 * agents + 3)))
  tmp=$(mktemp -d /tmp/vecgpu-bench-etcd-XXXXXX)
  tmpdirs+=("$tmp")
  local etcd="http://127.0.0.1:${p[0]}" peer="http://127.0.0.1:${p[1]}"
  etcd --name m --data-dir "$tmp/data" --unsafe-no-fsync \
    --listen-client-urls "$etcd" --advertise-client-urls "$etcd" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "m=$peer" \
    > "$dir/logs/$sc-etcd.log" 2>&1 &
  pids+=($!)
  wait_etcd "$etcd" || { echo "etcd did not start (see $dir/logs/$sc-etcd.log)"; return 1; }
  # Agent i: FAISSx, gRPC, metrics and agent-API (advertised) ports.
  for ((i = 0; i < agents; i++)); do
    local o=$((2 + 4 * i))
    # shellcheck disable=SC2086
    "$B/vecgpu" serve --join "$etcd" --advertise "127.0.0.1:${p[o + 3]}" --agent-id "a$((i + 1))" \
      --port "${p[o]}" --grpc-port "${p[o + 1]}" --metrics-port "${p[o + 2]}" \
      --log-level warning ${VECGPU_BENCH_SERVER_ARGS:-} > "$dir/logs/$sc-a$((i + 1)).log" 2>&1 &
    pids+=($!)
    [ "$i" -gt 0 ] || a1_pid=$!
  done
  local g=$((2 + 4 * agents))
  # shellcheck disable=SC2086
  "$B/vecgpu" gateway --etcd "$etcd" --port "${p[g]}" --grpc-port "${p[g + 1]}" \
    --metrics-port "${p[g + 2]}" --log-level warning ${VECGPU_BENCH_GATEWAY_ARGS:-} \
    > "$dir/logs/$sc-gateway.log" 2>&1 &
  pids+=($!)
  local gw_pid=$!
  wait_ping "tcp://127.0.0.1:${p[2]}" || { echo "agent a1 did not start"; return 1; }
  wait_ping "tcp://127.0.0.1:${p[g]}" || { echo "the gateway did not start"; return 1; }
  wait_cluster "$etcd" "$agents" "tcp://127.0.0.1:${p[g]}" || return 1

  local -A fx=([direct]=${p[2]} [gateway]=${p[g]}) grpc=([direct]=${p[3]} [gateway]=${p[g + 1]})
  for t in direct gateway; do
    "$B/vecgpu-bench" run "$sc" --no-faiss --vecgpu "tcp://127.0.0.1:${fx[$t]}" \
      --vecgpu-grpc "127.0.0.1:${grpc[$t]}" --data-dir bench/data --time-scale "$time_scale" \
      --out "$dir/parts/$sc-$t.json" || return 1
    merge_args+=("$t=$dir/parts/$sc-$t.json")
    # a1's counters and both processes' CPU time after each part: the differences are what
    # the gateway's part cost.
    save_metrics "http://127.0.0.1:${p[4]}" "$dir/logs/$sc-a1-after-$t.metrics"
    {
      echo "after $t: a1 $(cpu_seconds "$a1_pid") s, gateway $(cpu_seconds "$gw_pid") s CPU"
      echo "  a1 by thread:"; thread_cpu "$a1_pid"
      echo "  gateway by thread:"; thread_cpu "$gw_pid"
    } >> "$dir/logs/$sc-cpu.txt"
  done
  save_metrics "http://127.0.0.1:${p[g + 2]}" "$dir/logs/$sc-gateway.metrics"
  cleanup
}

if [ ${#cluster_names[@]} -gt 0 ]; then
  if ! command -v etcd > /dev/null || ! command -v etcdctl > /dev/null; then
    echo "cluster scenarios need etcd and etcdctl (Debian: etcd-server, etcd-client)"
    exit 1
  fi
  cdir="bench/results/$stamp-cluster"
  mkdir -p "$cdir/parts" "$cdir/logs"
  mapfile -t cluster_scenarios < <(.venv/bin/python - "${cluster_names[@]}" <<'PY'
import json, sys
cfg = json.load(open("bench/scenarios.json"))
for n in sys.argv[1:]:
    for m in cfg["suites"].get(n, [n]):
        print(m)
PY
  )
  merge_args=()
  for sc in "${cluster_scenarios[@]}"; do
    echo "# cluster scenario $sc"
    cluster_scenario "$sc" "$cdir" ||
      { echo "cluster scenario $sc failed (logs: $cdir/logs/)"; exit 1; }
  done
  .venv/bin/python bench/merge_reports.py --out "bench/results/$stamp-cluster.json" \
    "${merge_args[@]}"
  .venv/bin/python bench/plot.py "bench/results/$stamp-cluster.json" --out "$cdir"
  echo "cluster report: bench/results/$stamp-cluster.json, plots: $cdir/"
fi

if [ "$noisy" = 1 ]; then
  mkdir -p "bench/results/$stamp"
  VECGPU_BIN="$B/vecgpu" .venv/bin/python bench/noisy_neighbour.py \
    --seconds "$(.venv/bin/python -c "print(8 * float('$time_scale'))")" \
    --out "bench/results/$stamp-noisy-neighbour.json" \
    --plot "bench/results/$stamp/noisy-neighbour.png"
  echo "noisy neighbour: bench/results/$stamp-noisy-neighbour.json, plot bench/results/$stamp/noisy-neighbour.png"
fi

if [ "$recall" = 1 ]; then
  VECGPU_BIN="$B/vecgpu" .venv/bin/python bench/cluster_recall.py \
    --json "bench/results/$stamp-cluster-recall.json" < /dev/null
fi
