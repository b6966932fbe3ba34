#!/bin/bash
# vecgpu's container entrypoint.
#   (no arguments) or flags only   vecgpu serve [flags], with the container's defaults
#   serve|gateway|import-faissx|healthcheck|--version|--help ...   that vecgpu command
#   anything else                  run as given (a shell, for instance)
# Defaults, each used only when neither its VECGPU_ nor its FAISSX_ variable is set: data
# directory /data, FAISSx and gRPC bound on 0.0.0.0, the metrics listener on 0.0.0.0 (for
# probes and Prometheus). Like the binary, it refuses to serve a non-loopback address without
# authentication unless VECGPU_ALLOW_UNAUTHENTICATED_REMOTE=true (or the flag) says so, and
# it says which variables turn authentication on.
set -euo pipefail

if [ $# -eq 0 ] || [[ "$1" == -* && "$1" != --version && "$1" != --help && "$1" != -h ]]; then
  set -- serve "$@"
fi
case "$1" in
  serve|gateway|import-faissx|healthcheck|--version|--help|-h) ;;
  *) exec "$@" ;;
esac

# The value the binary will see for a setting: the command line, else VECGPU_*, else FAISSX_*.
setting() {  # setting NAME ENVNAME ARGS...
  local name=$1 env=$2 value=""
  shift 2
  local fx="FAISSX_$env" vg="VECGPU_$env"
  [ -n "${!fx:-}" ] && value=${!fx}
  [ -n "${!vg:-}" ] && value=${!vg}
  while [ $# -gt 0 ]; do
    case "$1" in
      "--$name") if [ $# -gt 1 ] && [[ "$2" != -* ]]; then value=$2; shift; else value=true; fi ;;
      "--$name="*) value=${1#*=} ;;
    esac
    shift
  done
  printf '%s' "$value"
}
truthy() { case "${1,,}" in 1|true|yes|on|y) return 0 ;; *) return 1 ;; esac; }
unset_both() { local fx="FAISSX_$1" vg="VECGPU_$1"; [ -z "${!fx:-}" ] && [ -z "${!vg:-}" ]; }

if [ "$1" = serve ] || [ "$1" = gateway ]; then
  # A gateway keeps no indexes: no data directory.
  [ "$1" = serve ] && unset_both DATA_DIR && export VECGPU_DATA_DIR=/data
  unset_both BIND_ADDRESS && export VECGPU_BIND_ADDRESS=0.0.0.0
  unset_both METRICS_ADDRESS && export VECGPU_METRICS_ADDRESS=0.0.0.0

  bind=$(setting bind-address BIND_ADDRESS "$@")
  auth=$(setting enable-auth ENABLE_AUTH "$@")
  allow=$(setting allow-unauthenticated-remote ALLOW_UNAUTHENTICATED_REMOTE "$@")
  case "$bind" in
    127.*|localhost|::1|"[::1]") loopback=1 ;;
    *) loopback=0 ;;
  esac
  # A config file may turn auth on where this script cannot read it: the binary decides then
  # (it refuses the same way, naming the flags).
  config=$(setting config CONFIG "$@")
  if [ -z "$config" ] && [ "$loopback" = 0 ] && ! truthy "${auth:-false}" &&
     ! truthy "${allow:-false}"; then
    cat >&2 <<MSG
vecgpu: refusing to serve $bind without authentication: anyone who reaches this container's
ports could read and change every index. Either turn authentication on:
  VECGPU_ENABLE_AUTH=true with VECGPU_AUTH_KEYS="key1:tenant1,key2:tenant2"
  or VECGPU_AUTH_FILE=/run/secrets/vecgpu-keys.json ({"key1": "tenant1"})
  (FAISSX_ENABLE_AUTH, FAISSX_AUTH_KEYS and FAISSX_AUTH_FILE work too)
or accept the risk on a trusted network: VECGPU_ALLOW_UNAUTHENTICATED_REMOTE=true.
MSG
    exit 2
  fi
fi
exec /usr/local/bin/vecgpu "$@"
