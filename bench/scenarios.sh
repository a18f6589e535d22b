#!/usr/bin/env bash
# The job-queue scenarios against separate `baton serve` processes (two replicas on one
# store), so the server's CPU and memory are its own: drain (unbatched and batched), open
# loop (a sweep of arrival rates), DAG fan-out/fan-in, failures (agents vanish mid-lease and
# one replica is killed with SIGKILL). Durability modes run separately, never mixed:
# embedded full and normal; PostgreSQL synchronous_commit on and off (`--durability
# normal`, which the store applies to its writers' connections).
# Usage: bench/scenarios.sh [embedded|postgres|all]
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
cargo build --release --quiet --bin baton --bin baton-bench
bench=./target/release/baton-bench
baton=./target/release/baton
ulimit -Sn 16384 2>/dev/null || true
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
urls="" pids=""
# start_replicas N STORE-ARGS...: N `baton serve` processes on one store.
start_replicas() {
  local n=$1; shift
  urls="" pids=""
  for _ in $(seq "$n"); do
    local port; port=$(free_port)
    "$baton" "$@" serve --listen "127.0.0.1:$port" >/dev/null 2>&1 &
    pids="${pids:+$pids,}$!"
    urls="${urls:+$urls,}http://127.0.0.1:$port"
    until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done
  done
}
stop_replicas() { for p in ${pids//,/ }; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap stop_replicas EXIT
# scenarios LABEL STORE-ARGS...: every scenario against fresh replicas on one store.
scenarios() {
  local label=$1; shift
  echo "| **$label** | | | | | | | | | |"
  start_replicas 2 "$@"
  local on=(--server "$urls" --server-pid "$pids" --workers 0 "$@")
  "$bench" "${on[@]}" --tasks 20000 --drain-agents 16
  "$bench" "${on[@]}" --tasks 20000 --drain-agents 16 --claim-batch 10
  "$bench" "${on[@]}" --open-rate "${OPEN_RATES:-250,500,1000,1500}" --open-secs 10 --open-agents 128 --service-ms 1,2,5,10,500 --lease-ttl 1s
  "$bench" "${on[@]}" --dag 3x1,3x1000,10x1,10x100 --agents 16
  "$bench" "${on[@]}" --tasks 5000 --kill-agents 4 --agents 16
  stop_replicas
}
# single_drain STORE-ARGS...: the drain against one replica (the embedded store's natural
# deployment: two processes on one SQLite file take turns on its write lock), claims and
# completions in batches of 1, 10 and 50, and in batches of 1 and 10 with the next claim in
# the completion call.
single_drain() {
  start_replicas 1 "$@"
  for run in "1" "10" "50" "1 --claim-next" "10 --claim-next"; do
    # shellcheck disable=SC2086 # "$run" is a batch size and maybe a flag
    "$bench" --server "$urls" --server-pid "$pids" --workers 0 "$@" --tasks 20000 --drain-agents 16 --claim-batch $run |
      sed 's/^| drain over HTTP/| one replica: drain over HTTP/'
  done
  stop_replicas
}
mkdir -p bench/results
out="bench/results/scenarios-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); agents and two \`baton serve\` replicas on the same machine"
  echo
  "$bench" --print-header
  if [ "$which" != postgres ]; then
    for mode in full normal; do
      dir=$(mktemp -d target/bench-scenarios.XXXXXX)
      scenarios "embedded, $mode durability" --data-dir "$dir" --durability "$mode"
      rm -rf "$dir"
      dir=$(mktemp -d target/bench-scenarios.XXXXXX)
      single_drain --data-dir "$dir" --durability "$mode"
      rm -rf "$dir"
    done
  fi
  if [ "$which" != embedded ]; then
    if [ -z "${BATON_TEST_DATABASE_URL:-}" ]; then
      source scripts/postgres.sh
      trap 'stop_replicas; stop_postgres' EXIT
    fi
    admin=$BATON_TEST_DATABASE_URL
    name="scenarios_$(date +%s%N)"
    psql -q "$admin" -c "CREATE DATABASE $name" >/dev/null
    db="${admin%/*}/$name"
    "$baton" migrate --database "$db" >/dev/null
    scenarios "PostgreSQL, synchronous_commit on" --database "$db"
    name="${name}_off"
    psql -q "$admin" -c "CREATE DATABASE $name" >/dev/null
    db="${admin%/*}/$name"
    "$baton" migrate --database "$db" >/dev/null
    scenarios "PostgreSQL, synchronous_commit off" --database "$db" --durability normal
  fi
} | tee "$out"
echo "saved to $out" >&2
