"""Drain with pgqueuer (PyPI), for bench/peers.sh: enqueues N jobs, then M queue managers
(one asyncpg connection each, in one process) run a no-op entrypoint in drain mode until
the queue is empty. Prints one JSON line.

Usage: python pgqueuer_drain.py URL N M batched|unbatched
batched fetches up to 10 jobs per dequeue (pgqueuer's default batch_size, its documented
throughput setting); unbatched fetches one.
"""

import asyncio
import json
import sys
import time

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode


async def main() -> None:
    url, n, m, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    setup = AsyncpgDriver(await asyncpg.connect(url))
    queries = Queries(setup)
    await queries.install()
    for i in range(0, n, 1000):
        size = min(1000, n - i)
        await queries.enqueue(["noop"] * size, [None] * size, [0] * size)

    managers = []
    for _ in range(m):
        qm = QueueManager(Queries(AsyncpgDriver(await asyncpg.connect(url))))

        @qm.entrypoint("noop")
        async def noop(job) -> None:  # noqa: ARG001
            return None

        managers.append(qm)
    batch = 10 if mode == "batched" else 1
    started = time.perf_counter()
    await asyncio.gather(
        *(qm.run(batch_size=batch, mode=QueueExecutionMode.drain) for qm in managers)
    )
    secs = time.perf_counter() - started
    left = await setup._connection.fetchval("SELECT count(*) FROM pgqueuer")
    print(json.dumps({"peer": "pgqueuer", "mode": mode, "n": n, "m": m, "secs": secs,
                      "rate": n / secs, "left": left}))


asyncio.run(main())
