"""REST API destination throughput against a local server that answers after 5 ms.

    python bench/http_bench.py [--records 100000] [--batch 500] [--concurrency 8] [--latency 0.005]

Prints achieved records/s as a fraction of the ideal ``batch x concurrency / latency``
(target >= 0.7). The server is a minimal asyncio HTTP/1.1 server in a separate process
(so it does not share the client's GIL); it reads every body and answers 200 after
``latency`` seconds. The client side is the real session: encoding, threads, httpx,
idempotency keys, outcome parsing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def serve(port_queue: mp.Queue, latency: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(latency)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 11\r\n\r\n{\"ok\":true}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.005)
    ap.add_argument("--runner-batch", type=int, default=100_000, help="rows per WriteBatch (the sync's batch_size)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import polars as pl

    import dfsync
    from dfsync.destinations.base import DestinationContext, WriteBatch
    from dfsync.states import DestinationMode

    q: mp.Queue = mp.Queue()
    proc = mp.Process(target=serve, args=(q, args.latency), daemon=True)
    proc.start()
    port = q.get(timeout=10)
    n = args.records
    df = pl.DataFrame({
        "id": range(n),
        "email": [f"user{i}@example.com" for i in range(n)],
        "name": [f"Name {i}" for i in range(n)],
        "score": [i * 0.5 for i in range(n)],
        "created_at": [dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(n)],
        "address.city": ["Oslo"] * n,
        "_action": ["insert"] * n,
    }).to_arrow()
    dest = dfsync.destinations.http(f"http://127.0.0.1:{port}/contacts", batch_size=args.batch,
                                    concurrency=args.concurrency, timeout=10)
    ideal = args.batch * args.concurrency / args.latency
    rates = []
    try:
        for rep in range(args.repeat):
            ctx = DestinationContext(sync_id=1, sync_name="bench", run_id=rep + 1,
                                     mode=DestinationMode.UPSERT, primary_key=("id",))
            with dest.open(ctx) as session:
                session.prepare(df.schema)
                t0 = time.perf_counter()
                for b, start in enumerate(range(0, n, args.runner_batch)):
                    result = session.write(WriteBatch(b + 1, df.slice(start, args.runner_batch)))
                    assert not result.failed, result.failed
                elapsed = time.perf_counter() - t0
            rates.append(n / elapsed)
            print(f"run {rep + 1}: {n:,} records in {elapsed:.3f}s = {n / elapsed:,.0f} records/s")
        # the ceiling of any httpx-based client on this machine: the same number of requests
        # with bodies encoded beforehand, straight through httpx.Client from the same threads
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        body = pl.from_arrow(df.slice(0, args.batch).drop_columns(["_action"])).write_json().encode()
        client = httpx.Client(limits=httpx.Limits(max_connections=args.concurrency,
                                                  max_keepalive_connections=args.concurrency))
        url = f"http://127.0.0.1:{port}/contacts"
        requests = -(-n // args.batch)
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(lambda i: client.post(url, content=body), range(args.concurrency * 2)))
            raw = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                list(pool.map(lambda i: client.post(url, content=body), range(requests)))
                raw.append(n / (time.perf_counter() - t0))
        client.close()
    finally:
        proc.terminate()
    best = sorted(rates)[len(rates) // 2]
    raw_best = sorted(raw)[len(raw) // 2]
    print(f"raw httpx, pre-encoded bodies, same threads: {raw_best:,.0f} records/s = "
          f"{raw_best / ideal:.2f} of ideal (the ceiling for an httpx client on this machine now)")
    print(f"ideal (batch {args.batch} x concurrency {args.concurrency} / {args.latency * 1000:g} ms) = "
          f"{ideal:,.0f} records/s")
    print(f"median achieved = {best:,.0f} records/s = {best / ideal:.2f} of ideal (target >= 0.7); "
          f"{best / raw_best:.2f} of raw httpx")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
