#!/usr/bin/env bash
# Drain, side by side on one throwaway PostgreSQL (scripts/postgres.sh, synchronous_commit
# on): N ready jobs, M workers claiming and completing with no work in between, for
# graphile-worker (npm), pgqueuer (PyPI) and Baton (`baton serve` on the same server, agents
# over HTTP, each completion call claiming the agent's next work: `--claim-next`), each
# unbatched and batched, each run on a fresh database. The peers are
# installed into target/bench-peers (never committed). Prints one table with Baton ÷ peer,
# and one of what each wrote to PostgreSQL per job.
# Usage: bench/peers.sh [N] [M]        e.g. bench/peers.sh 20000 16
# PEERS_TRANSPORT=unix connects every system through the cluster's Unix socket instead of
# TCP on loopback (only with the cluster this script starts).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
m=${2:-16}
peers=target/bench-peers
cargo build --release --quiet --bin baton --bin baton-bench
if [ ! -d "$peers/node_modules/graphile-worker" ]; then
  mkdir -p "$peers"
  (cd "$peers" && npm init -y >/dev/null && npm install --silent graphile-worker@0.18.0 >/dev/null)
fi
if [ ! -x "$peers/py/bin/python" ]; then
  python3 -m venv "$peers/py"
  "$peers/py/bin/pip" install --quiet "pgqueuer==1.6.0" "asyncpg"
fi
cp bench/peers/graphile.mjs "$peers/"
if [ -z "${BATON_TEST_DATABASE_URL:-}" ]; then
  source scripts/postgres.sh
  trap stop_postgres EXIT
fi
admin=$BATON_TEST_DATABASE_URL
base=${admin%/*}
transport=${PEERS_TRANSPORT:-tcp}
if [ "$transport" = unix ] && [ -z "${PG_DIR:-}" ]; then
  echo "PEERS_TRANSPORT=unix needs the cluster this script starts (unset BATON_TEST_DATABASE_URL)" >&2
  exit 2
fi
fresh() {
  local name="peer_$(date +%s%N)"
  psql -q "$admin" -c "CREATE DATABASE $name" >/dev/null
  if [ "$transport" = unix ]; then
    echo "postgres://baton@/$name?host=$PG_DIR&port=$PG_PORT"
  else
    echo "$base/$name"
  fi
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# What a drain wrote to PostgreSQL per job, from enqueue to done: rows inserted, updated or
# deleted (the database's statistics, flushed once its clients have gone) and WAL bytes.
wal_lsn() { psql -tA "$admin" -c "SELECT pg_current_wal_lsn()"; }
written() {
  local db=$1 lsn0=$2 rows wal
  sleep 1
  rows=$(psql -tA "$db" -c "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()")
  wal=$(psql -tA "$admin" -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')")
  python3 -c "print(f'{$rows / $n:.1f} rows, {$wal / $n / 1024:.1f} KB')"
}

declare -A rate work
for mode in unbatched batched; do
  db=$(fresh) lsn0=$(wal_lsn)
  rate[graphile-$mode]=$(node "$peers/graphile.mjs" "$db" "$n" "$m" "$mode" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rate"]))')
  work[graphile-$mode]=$(written "$db" "$lsn0")
  db=$(fresh) lsn0=$(wal_lsn)
  rate[pgqueuer-$mode]=$("$peers/py/bin/python" bench/peers/pgqueuer_drain.py "$db" "$n" "$m" "$mode" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rate"]))')
  work[pgqueuer-$mode]=$(written "$db" "$lsn0")
  db=$(fresh)
  ./target/release/baton migrate --database "$db" >/dev/null
  lsn0=$(wal_lsn)
  port=$(free_port)
  ./target/release/baton serve --database "$db" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done
  batch=1; [ "$mode" = batched ] && batch=10
  rate[baton-$mode]=$(./target/release/baton-bench --database "$db" --tasks "$n" --workers 0 \
    --drain-agents "$m" --claim-batch "$batch" --claim-next --server "http://127.0.0.1:$port" |
    awk -F'|' '/drain over HTTP/ { gsub(/[ \/s]/, "", $6); print $6 }')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  work[baton-$mode]=$(written "$db" "$lsn0")
done

mkdir -p bench/results
out="bench/results/peers-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "drain: $n jobs, $m workers, PostgreSQL $(psql -tA "$admin" -c 'SHOW server_version') over $transport, synchronous_commit on, $(nproc) cores"
  echo
  echo "| mode | Baton (HTTP) | graphile-worker 0.18.0 | pgqueuer 1.6.0 | Baton ÷ graphile-worker | Baton ÷ pgqueuer |"
  echo "| --- | --- | --- | --- | --- | --- |"
  for mode in unbatched batched; do
    b=${rate[baton-$mode]} g=${rate[graphile-$mode]} p=${rate[pgqueuer-$mode]}
    echo "| $mode | $b/s | $g/s | $p/s | $(python3 -c "print(f'{$b/$g:.2f}×')") | $(python3 -c "print(f'{$b/$p:.2f}×')") |"
  done
  echo
  echo "Written to PostgreSQL per job, enqueue to done (rows inserted, updated or deleted; WAL):"
  echo
  echo "| mode | Baton | graphile-worker | pgqueuer |"
  echo "| --- | --- | --- | --- |"
  for mode in unbatched batched; do
    echo "| $mode | ${work[baton-$mode]} | ${work[graphile-$mode]} | ${work[pgqueuer-$mode]} |"
  done
} | tee "$out"
echo "saved to $out" >&2
