#!/usr/bin/env bash
# Scale: claim cost at N ready tasks over a history of H×N finished ones (created, claimed
# and completed first, so their rows, runs and events are in the store), in-process (1 and
# 16 workers), then over HTTP against a separate `baton serve` on the same store, whose CPU
# and memory are reported. Usage: bench/scale.sh [embedded|postgres] ["N:H ..."]
#   bench/scale.sh embedded "10000:10 100000:10 1000000:1"
# A 1M-task store with 10× history needs ~50 GB; pick H to fit the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-embedded}
grid=${2:-"10000:10 100000:10 1000000:1"}
cargo build --release --quiet --bin baton --bin baton-bench
bench=./target/release/baton-bench
baton=./target/release/baton
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT
if [ "$backend" = postgres ] && [ -z "${BATON_TEST_DATABASE_URL:-}" ]; then
  source scripts/postgres.sh
  trap 'cleanup; stop_postgres' EXIT
fi
mkdir -p bench/results
out="bench/results/scale-$backend-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); $backend"
  echo
  "$bench" --print-header
  for point in $grid; do
    n=${point%:*} h=${point#*:}
    if [ "$backend" = postgres ]; then
      name="scale_$(date +%s%N)"
      psql -q "$BATON_TEST_DATABASE_URL" -c "CREATE DATABASE $name" >/dev/null
      store=(--database "${BATON_TEST_DATABASE_URL%/*}/$name")
      "$baton" migrate "${store[@]}" >/dev/null
    else
      dir=$(mktemp -d target/bench-scale.XXXXXX)
      store=(--data-dir "$dir")
    fi
    echo "| **$n ready over $((n * h)) finished** | | | | | | | | | |"
    "$bench" "${store[@]}" --tasks "$n" --history "$h" --workers 1,16 --cycles 5000
    port=$(free_port)
    "$baton" "${store[@]}" serve --listen "127.0.0.1:$port" >/dev/null 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done
    # Over HTTP: the store already holds the N ready tasks (the row's "ready tasks" is what
    # this run adds for its own cycles).
    "$bench" "${store[@]}" --tasks 0 --workers 0 --http-agents 16 --cycles 10000 \
      --server "http://127.0.0.1:$port" --server-pid "$pid" | grep -v "long-poll"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    [ "$backend" = postgres ] || rm -rf "$dir"
  done
} | tee "$out"
echo "saved to $out" >&2
