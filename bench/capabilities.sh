#!/usr/bin/env bash
# Claims behind tasks the agent cannot take: AHEAD ready tasks that need `gpu` (priority 10)
# ahead of 2,000 that need nothing (priority 0), on a fresh store behind one `baton serve`;
# then CLAIMS claims, each completed at once, by one HTTP client as an agent without
# capabilities (which steps past all of them) and as one with `gpu`; claim p50 / p99.
# Usage: bench/capabilities.sh [embedded|postgres] [AHEAD] [CLAIMS]
# BATON_BIN=DIR runs the `baton` in DIR instead of building this checkout (for A/B runs).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-embedded} ahead=${2:-10000} claims=${3:-500}
if [ -z "${BATON_BIN:-}" ]; then
  cargo build --release --quiet --bin baton
fi
baton=${BATON_BIN:-./target/release}/baton
dir=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
store=(--data-dir "$dir/store")
if [ "$backend" = postgres ]; then
  source scripts/postgres.sh
  trap 'cleanup; stop_postgres' EXIT
  psql -q "$BATON_TEST_DATABASE_URL" -c "CREATE DATABASE capabilities"
  store=(--database "${BATON_TEST_DATABASE_URL%/*}/capabilities")
fi
python3 - "$dir" "$ahead" <<'PY'
import json, sys
d, ahead = sys.argv[1], int(sys.argv[2])
for start in range(0, ahead, 10000):  # a plan holds at most 10,000 tasks
    tasks = [{"ref": f"g{i}", "title": "gpu", "priority": 10, "required_capabilities": ["gpu"]}
             for i in range(start, min(ahead, start + 10000))]
    json.dump({"name": f"gpu{start}", "tasks": tasks}, open(f"{d}/gpu{start}.json", "w"))
json.dump({"name": "plain", "tasks": [{"ref": f"p{i}", "title": "plain"} for i in range(2000)]},
          open(f"{d}/plain.json", "w"))
PY
for plan in "$dir"/*.json; do "$baton" "${store[@]}" plan apply "$plan" >/dev/null; done
token=$("$baton" "${store[@]}" --json key create --role admin |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["key"]["token"])')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$baton" "${store[@]}" serve --listen "127.0.0.1:$port" >/dev/null 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done
python3 - "$port" "$token" "$claims" "$backend" "$ahead" <<'PY'
import http.client, json, sys, time
port, token, n, backend, ahead = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def post(path, body):
    conn.request("POST", path, json.dumps(body), headers)
    response = conn.getresponse()
    answer = json.loads(response.read())
    if response.status >= 300:
        sys.exit(f"{path}: {response.status} {answer}")
    return answer
for agent, caps in [("cpu", []), ("gpu", ["gpu"])]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        claim = post("/v1/tasks/claim", {"agent": agent, "capabilities": caps})["claims"][0]
        latencies.append((time.perf_counter() - start) * 1000)
        post(f"/v1/tasks/{claim['task']['id']}/complete", {"lease": claim["lease"]["token"]})
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(f"{backend}, {ahead} gpu tasks ahead, agent {agent} {caps}: claim p50 {p50:.2f} ms, p99 {p99:.2f} ms")
PY
