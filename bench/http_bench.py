"""REST API destination throughput against a local server that answers after 5 ms.

    python bench/http_bench.py [--records 100000] [--batch 500] [--concurrency 8] [--latency 0.005]

Prints achieved records/s as a fraction of the ideal ``batch x concurrency / latency`` and
of a bare httpx client sending the same requests (the same bodies, byte for byte, encoded
beforehand; the same headers) from the same number of threads (target >= 0.9 of it). The two are measured interleaved, each rep with
a fresh client (new connections), so their ratio compares the same moment of a shared
machine; one more instrumented rep prints where dfsync's time goes (plan, encode, send,
confirm). The server is a minimal asyncio HTTP/1.1 server in a separate process
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



def _dfsync_rep(dest, df, n: int, runner_batch: int, rep: int,
                phases: dict | None = None) -> tuple[float, float, float]:
    """One run's worth of records through a fresh session; seconds from the first write to the last
    answer, the CPU-seconds of this process meanwhile, and the CPU-seconds of opening the session
    (client, worker threads: not in the first two). With ``phases``, the session's encode / send /
    confirm steps are timed (summed over threads; the wrappers add a little time, so that rep is
    not one of the measured ones)."""
    from dfsync.destinations.base import DestinationContext, WriteBatch
    from dfsync.states import DestinationMode

    ctx = DestinationContext(sync_id=1, sync_name="bench", run_id=rep + 1,
                             mode=DestinationMode.UPSERT, primary_key=("id",))
    o0 = time.process_time()
    with dest.open(ctx) as session:
        opened = time.process_time() - o0
        session.prepare(df.schema)
        if phases is not None:
            _instrument(session, phases)
        t0, c0 = time.perf_counter(), time.process_time()
        if phases is not None:
            phases["start"] = t0
        for b, start in enumerate(range(0, n, runner_batch)):
            result = session.write(WriteBatch(b + 1, df.slice(start, runner_batch)))
            assert not result.failed, result.failed
        return time.perf_counter() - t0, time.process_time() - c0, opened


def _instrument(session, phases: dict) -> None:
    import threading

    lock = threading.Lock()

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                with lock:
                    phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    def timed_plan(*a, **k):  # a generator: time each step (a chunk encoded, a request made)
        gen = iter(session.__class__._plan(session, *a, **k))
        while True:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                req = next(gen)
            except StopIteration:
                return
            finally:
                for name, secs in (("encode (main thread)", time.perf_counter() - t0),
                                   ("  of which its CPU", time.thread_time() - c0)):
                    phases[name] = phases.get(name, 0.0) + secs
                phases["  last request ready at"] = time.perf_counter() - phases["start"]
            yield req

    session._plan = timed_plan
    for name, attr in (("bodies (workers)", "_body"), ("confirm (workers)", "_outcome")):
        setattr(session, attr, timed(name, getattr(session, attr)))
    body = session._body

    def counted(req):
        made = body(req)
        with lock:
            phases["body bytes"] = phases.get("body bytes", 0) + len(made[0] or b"")
        return made
    session._body = counted
    session.client.request = timed("send (workers)", session.client.request)


def _raw_rep(url: str, bodies: list[bytes], requests: int, concurrency: int,
             phases: dict | None = None) -> tuple[float, float, float]:
    """The same requests (headers, bodies), bodies encoded beforehand, through a fresh
    httpx.Client from ``concurrency`` threads: the ceiling of any httpx-based client on this
    machine at that moment. Its threads are started before the clock starts, as dfsync's
    session starts its workers when it opens (until 2026-12-06 they started in the timed part)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    o0 = time.process_time()
    client = httpx.Client(headers={"User-Agent": "dfsync", "Accept": "application/json"},
                          limits=httpx.Limits(max_connections=concurrency,
                                              max_keepalive_connections=concurrency))
    post = client.post if phases is None else _timed_post(client, phases)
    with ThreadPoolExecutor(concurrency) as pool:
        started = threading.Barrier(concurrency, timeout=10)
        list(pool.map(lambda _: started.wait(), range(concurrency)))
        opened = time.process_time() - o0
        t0, c0 = time.perf_counter(), time.process_time()
        list(pool.map(lambda i: post(url, content=bodies[i % len(bodies)], headers={
            "Idempotency-Key": f"dfsync-0123abcd-s1-r1-insert-{i:016x}", "Content-Type": "application/json"}),
            range(requests)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    client.close()
    return elapsed, cpu, opened


def _timed_post(client, phases: dict):
    import threading

    lock = threading.Lock()

    def post(*a, **k):
        t0 = time.perf_counter()
        r = client.post(*a, **k)
        with lock:
            phases["send (workers)"] = phases.get("send (workers)", 0.0) + time.perf_counter() - t0
        return r
    return post


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.005)
    ap.add_argument("--runner-batch", type=int, default=100_000, help="rows per WriteBatch (the sync's batch_size); 100,000: the "
                    "session alone, one batch (a sync without batch_size sends the destination's "
                    "default_batch_size, 50,000 rows here at 500 x 8)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import polars as pl

    import dfsync

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
    url = f"http://127.0.0.1:{port}/contacts"
    dest = dfsync.destinations.http(url, batch_size=args.batch, concurrency=args.concurrency, timeout=10)
    # the bare client's bodies: each request's records as dfsync sends them (ISO dates, nested),
    # written by polars' JSON writer beforehand (until 2026-12-06 it sent the first body 200 times:
    # 6% fewer bytes than dfsync, whose later records have longer ids, emails and names)
    from dfsync.destinations._http_parts import json_ready, nest_expressions

    flat = pl.from_arrow(df.drop_columns(["_action"]))
    flat = flat.select(json_ready(flat.schema)).select(nest_expressions(flat.columns))
    bodies = [flat.slice(a, args.batch).write_json().encode() for a in range(0, n, args.batch)]
    requests = -(-n // args.batch)
    ideal = args.batch * args.concurrency / args.latency
    ratios, ours, raws, cpus, cpu_s, opens = [], [], [], [], [], []
    try:
        # warm-up (imports, first connections, polars' thread pool), not measured
        _dfsync_rep(dest, df.slice(0, args.batch * args.concurrency), args.batch * args.concurrency,
                    args.runner_batch, -1)
        _raw_rep(url, bodies, args.concurrency * 2, args.concurrency)
        # interleaved, both with a fresh client (new connections) each rep: same moment, same load
        for rep in range(args.repeat):
            if rep % 2:
                raw, raw_cpu, raw_open = _raw_rep(url, bodies, requests, args.concurrency)
                mine, cpu, my_open = _dfsync_rep(dest, df, n, args.runner_batch, rep)
            else:
                mine, cpu, my_open = _dfsync_rep(dest, df, n, args.runner_batch, rep)
                raw, raw_cpu, raw_open = _raw_rep(url, bodies, requests, args.concurrency)
            opens.append((my_open, raw_open))
            cpus.append(cpu / raw_cpu)
            cpu_s.append((cpu, raw_cpu))
            ours.append(n / mine)
            raws.append(n / raw)
            ratios.append(raw / mine)
            print(f"rep {rep + 1}: dfsync {mine:.3f}s = {n / mine:,.0f} rec/s ({n / mine / ideal:.2f} of ideal); "
                  f"raw httpx {raw:.3f}s = {n / raw:,.0f} rec/s ({n / raw / ideal:.2f}); "
                  f"dfsync/raw = {raw / mine:.2f}; CPU-s {cpu:.3f} vs {raw_cpu:.3f}")
        phases: dict[str, float] = {}
        mine, *_ = _dfsync_rep(dest, df, n, args.runner_batch, args.repeat, phases)
        raw_phases: dict[str, float] = {}
        raw, *_ = _raw_rep(url, bodies, requests, args.concurrency, raw_phases)
    finally:
        proc.terminate()

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    print(f"ideal (batch {args.batch} x concurrency {args.concurrency} / {args.latency * 1000:g} ms) = "
          f"{ideal:,.0f} records/s")
    print(f"median dfsync {median(ours):,.0f} rec/s = {median(ours) / ideal:.2f} of ideal; raw httpx "
          f"{median(raws):,.0f} rec/s = {median(raws) / ideal:.2f} of ideal")
    print(f"dfsync / raw httpx, per rep: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {median(ratios):.2f} (target >= 0.9)")
    print(f"client CPU-seconds, dfsync / raw httpx, per rep: {', '.join(f'{r:.2f}' for r in cpus)}; "
          f"median {median(cpus):.2f}; CPU-s dfsync {median([c for c, _ in cpu_s]):.3f}, "
          f"raw {median([r for _, r in cpu_s]):.3f} (medians)")
    print(f"opening (not in the figures above; CPU-s, medians): dfsync session "
          f"{median([o for o, _ in opens]):.3f}, raw httpx client and threads {median([r for _, r in opens]):.3f}")
    print(f"phases of one instrumented rep (wall {mine:.3f}s; worker figures are summed over "
          f"{args.concurrency} threads):")
    phases.pop("start")
    print(f"  body bytes sent: dfsync {phases.pop('body bytes'):,}, raw httpx {sum(map(len, bodies)):,}")
    for name, secs in phases.items():
        print(f"  {name:22s} {secs * 1000:8.1f} ms")
    print(f"  raw httpx same rep: wall {raw:.3f}s, send (workers) {raw_phases['send (workers)'] * 1000:.1f} ms")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
