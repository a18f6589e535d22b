// Drain with graphile-worker (npm), for bench/peers.sh: adds N jobs (addJobs, 1,000 per
// call), then one worker pool of concurrency M runs a no-op task until all N have run and
// their completions are committed (runner.stop() flushes them). Prints one JSON line.
// Usage: node graphile.mjs URL N M batched|unbatched
// batched = the project's documented fastest settings (worker.graphile.org/docs/performance):
// a local queue that locks and fetches jobs in bulk, and completions committed in batches.
import { Logger, run, makeWorkerUtils } from "graphile-worker";

const silent = new Logger(() => () => {});

const [url, nArg, mArg, mode] = process.argv.slice(2);
const n = Number(nArg);
const m = Number(mArg);
const batched = mode === "batched";

const utils = await makeWorkerUtils({ connectionString: url, logger: silent });
await utils.migrate();
for (let i = 0; i < n; i += 1000) {
  const size = Math.min(1000, n - i);
  await utils.addJobs(Array.from({ length: size }, () => ({ identifier: "noop", payload: {} })));
}
await utils.release();

let ran = 0;
let allRan;
const finished = new Promise((resolve) => (allRan = resolve));
const worker = batched
  ? { localQueue: { size: 4 * m }, completeJobBatchDelay: 1, failJobBatchDelay: 1 }
  : {};
const started = process.hrtime.bigint();
const runner = await run({
  connectionString: url,
  concurrency: m,
  maxPoolSize: m + 4,
  noHandleSignals: true,
  logger: silent,
  pollInterval: 100,
  taskList: {
    noop: async () => {
      if (++ran === n) allRan();
    },
  },
  preset: { worker },
});
await finished;
await runner.stop();
const secs = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ peer: "graphile-worker", mode, n, m, secs, rate: n / secs }));
process.exit(0);
