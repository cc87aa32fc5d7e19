"""Load for ``notifier bench``, run as a process of its own so that neither the daemon nor
the receiver shares an event loop (or a core's time slice) with it.

    python -m notifier.devtools.load steady RATE COUNT ACCOUNTS
    python -m notifier.devtools.load burst WRITERS ROWS ACCOUNTS
    python -m notifier.devtools.load ceiling TARGET CONCURRENCY COUNT < body

The database is ``NOTIFIER_DATABASE_URL``'s (from the environment: a command line is
shown to every user by ps, and a database URL may carry a password).
Each prints one JSON object on standard output: for ``steady``, each transaction id with
the time its COMMIT returned; for ``burst``, when the first and last COMMIT returned; for
``ceiling``, how long ``COUNT`` POSTs of the body took with ``CONCURRENCY`` in flight.
Times are ``time.time()``, the clock the receiver stamps arrivals with.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

import aiohttp
import asyncpg

INSERT = "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1) RETURNING id"


async def steady(url: str, rate: float, count: int, accounts: int) -> dict[str, Any]:
    """``count`` single-row commits at ``rate`` per second, on one connection."""
    conn = await asyncpg.connect(url)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        committed: list[tuple[int, float]] = []
        for n in range(count):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            committed.append((await conn.fetchval(INSERT, 1 + n % accounts), time.time()))
        return {"rate": count / (loop.time() - start), "committed": committed}
    finally:
        await conn.close()


async def burst(url: str, writers: int, rows: int, accounts: int) -> dict[str, Any]:
    """``rows`` single-row commits, as fast as ``writers`` connections can make them."""
    conns = [await asyncpg.connect(url) for _ in range(writers)]
    times: list[float] = []

    async def write(conn: asyncpg.Connection, n: int, seed: int) -> None:
        chance = random.Random(seed)
        for _ in range(n):
            await conn.execute(INSERT, chance.randint(1, accounts))
            times.append(time.time())

    try:
        share = [rows // writers + (1 if w < rows % writers else 0) for w in range(writers)]
        started = time.time()
        await asyncio.gather(
            *(write(c, n, w) for w, (c, n) in enumerate(zip(conns, share, strict=True)))
        )
        return {"started": started, "first": min(times), "last": max(times), "rows": len(times)}
    finally:
        for conn in conns:
            await conn.close()


async def ceiling(target: str, concurrency: int, count: int, body: bytes) -> dict[str, Any]:
    """How fast a plain aiohttp client POSTs ``body`` to ``target``: the HTTP ceiling."""
    headers = {"content-type": "application/json"}
    left = count
    failures = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal left, failures
        while left > 0:
            left -= 1
            async with http.post(target, data=body, headers=headers) as response:
                await response.read()
                failures += response.status >= 300

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {"requests": count, "seconds": seconds, "failures": failures}


def main(argv: list[str]) -> int:
    mode, *args = argv
    url = os.environ.get("NOTIFIER_DATABASE_URL", "")
    if mode == "steady":
        result = asyncio.run(steady(url, float(args[0]), int(args[1]), int(args[2])))
    elif mode == "burst":
        result = asyncio.run(burst(url, int(args[0]), int(args[1]), int(args[2])))
    elif mode == "ceiling":
        body = sys.stdin.buffer.read()
        result = asyncio.run(ceiling(args[0], int(args[1]), int(args[2]), body))
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
