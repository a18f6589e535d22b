#!/usr/bin/env bash
# PostgreSQL benchmark: claim → complete in-process, and claim → heartbeat → complete over
# HTTP with 1 and 3 `baton serve` replicas, on a throwaway cluster (scripts/postgres.sh),
# each run on a fresh database. Prints markdown rows (also saved under bench/results/).
# Usage: bench/postgres.sh [ready tasks] [agents]     e.g. bench/postgres.sh 10000 "16 64"
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-10000}
agents=${2:-"16 64"}
cargo build --release --quiet --bin baton --bin baton-bench
if [ -z "${BATON_TEST_DATABASE_URL:-}" ]; then
  source scripts/postgres.sh
  trap stop_postgres EXIT
fi
admin=$BATON_TEST_DATABASE_URL
base=${admin%/*}
fresh() { # a new empty database; prints its URL
  local name="bench_$(date +%s%N)"
  psql -q "$admin" -c "CREATE DATABASE $name" >/dev/null
  echo "$base/$name"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p bench/results
out="bench/results/postgres-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "machine: $(nproc) cores, PostgreSQL $(psql -tA "$admin" -c 'SHOW server_version'), synchronous_commit $(psql -tA "$admin" -c 'SHOW synchronous_commit')"
  echo
  ./target/release/baton-bench --print-header
  ./target/release/baton-bench --database "$(fresh)" --tasks "$tasks" --workers "${agents// /,}"
  # replicas × writer connections each (BATON_PG_WRITERS): one writer, one replica at the
  # default, three replicas of one writer, three at the default.
  for setup in 1x1 1x3 3x1 3x3; do
    replicas=${setup%x*}
    export BATON_PG_WRITERS=${setup#*x}
    for n in $agents; do
      db=$(fresh)
      ./target/release/baton migrate --database "$db" >/dev/null
      urls=() pids=()
      for _ in $(seq "$replicas"); do
        port=$(free_port)
        ./target/release/baton serve --database "$db" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
        pids+=($!) urls+=("http://127.0.0.1:$port")
      done
      for u in "${urls[@]}"; do
        until curl -sf "$u/healthz" >/dev/null; do sleep 0.1; done
      done
      ./target/release/baton-bench --database "$db" --tasks "$tasks" --workers 0 --http-agents "$n" \
        --server "$(IFS=,; echo "${urls[*]}")" | grep -v '^| preload' | sed "s/complete[^|]*|/complete, ${replicas}×${BATON_PG_WRITERS} |/"
      kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
    done
  done
} | tee "$out"
echo "saved to $out" >&2
