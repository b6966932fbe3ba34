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
set -euo pipefail
cd "$(dirname "$0")/.."
B=${VECGPU_BENCH_BUILD:-build}
[ -x "$B/vecgpu-bench" ] || { echo "run scripts/setup.sh first (no $B/vecgpu-bench)"; exit 1; }
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(standard)
# "noisy-neighbour" (also part of "standard") is bench/noisy_neighbour.py: it starts servers of
# its own, with auth and a data directory.
noisy=0
rest=()
for n in "${names[@]}"; do
  case "$n" in
    noisy-neighbour) noisy=1 ;;
    standard) noisy=1; rest+=("$n") ;;
    *) rest+=("$n") ;;
  esac
done
names=("${rest[@]}")

# Three distinct free ports (ZeroMQ, gRPC, FAISSx), bound at once: two binds in a row can get
# the same port.
free_ports() {
  .venv/bin/python -c 'import socket; ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])'
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
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)-$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
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

if [ ${#names[@]} -gt 0 ]; then
  "$B/vecgpu-bench" run "${names[@]}" "${args[@]}" --data-dir bench/data \
    --time-scale "${VECGPU_BENCH_TIME_SCALE:-1}" --out "bench/results/$stamp.json"
  .venv/bin/python bench/plot.py "bench/results/$stamp.json" --out "bench/results/$stamp"
  echo "report: bench/results/$stamp.json, plots: bench/results/$stamp/"
fi
if [ "$noisy" = 1 ]; then
  cleanup  # the suite's servers stop first: the scenario measures a quiet machine
  mkdir -p "bench/results/$stamp"
  VECGPU_BIN="$B/vecgpu" .venv/bin/python bench/noisy_neighbour.py \
    --seconds "$(.venv/bin/python -c "print(8 * float('${VECGPU_BENCH_TIME_SCALE:-1}'))")" \
    --out "bench/results/$stamp-noisy-neighbour.json" \
    --plot "bench/results/$stamp/noisy-neighbour.png"
  echo "noisy neighbour: bench/results/$stamp-noisy-neighbour.json, plot bench/results/$stamp/noisy-neighbour.png"
fi
