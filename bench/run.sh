#!/usr/bin/env bash
# Runs the embedded-store benchmark grid and prints a markdown table (also saved under
# bench/results/). Usage: bench/run.sh [sizes] [durabilities]
#   bench/run.sh "10000 100000 1000000" "full normal"
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-"10000 100000 1000000"}
modes=${2:-"full normal"}
cargo build --release --quiet --bin baton --bin baton-bench
# SSE fan-out holds two descriptors per subscriber (client and server side, in-process).
sse=${SSE_SUBSCRIBERS:-1000}
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt $((2 * sse + 256)) ]; then
  ulimit -Sn $((2 * sse + 256)) || { echo "raise ulimit -n to $((2 * sse + 256)) for $sse subscribers" >&2; exit 1; }
fi
mkdir -p bench/results
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), rustc $(rustc --version | cut -d' ' -f2)"
  echo
  ./target/release/baton-bench --print-header
  for mode in $modes; do
    for n in $sizes; do
      ./target/release/baton-bench --tasks "$n" --cycles 10000 --workers 1,8,32 --http-agents 16 --durability "$mode" --cli target/release/baton
    done
  done
  # SSE fan-out, in a workspace of its own (independent of the store size).
  ./target/release/baton-bench --tasks 1000 --workers 0 --sse-subscribers "$sse" --durability full
} | tee "$out"
echo "saved to $out" >&2
