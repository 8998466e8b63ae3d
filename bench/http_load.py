"""A lean HTTP/1.1 load generator (raw asyncio streams, keep-alive), run as its own
process so the server under test is measured from outside.

    python -m bench.http_load quote --url http://127.0.0.1:8000 --manifest M --concurrency 50 --seconds 20
    python -m bench.http_load quote-rate --url ... --manifest M --rate 1000 --concurrency 50   (open loop)
    python -m bench.http_load healthz --url ... --concurrency 50 --seconds 10      (baseline)
    python -m bench.http_load swap --url ... --manifest M --rate 200 --seconds 60

Prints one JSON document: requests, throughput, latency percentiles, status counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["Conn", "percentiles"]


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    s = sorted(samples)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 3)

    return {"p50Ms": q(0.50), "p90Ms": q(0.90), "p99Ms": q(0.99), "maxMs": round(s[-1] * 1000, 3), "meanMs": round(statistics.fmean(s) * 1000, 3)}


class Conn:
    """One keep-alive connection; `request` returns (status, body bytes)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        line = await self.reader.readline()
        if not line:
            self.writer = None
            raise ConnectionError("closed")
        status = int(line.split()[1])
        length = 0
        while True:
            h = await self.reader.readline()
            if h in (b"\r\n", b""):
                break
            k, _, v = h.partition(b":")
            if k.lower() == b"content-length":
                length = int(v)
        data = await self.reader.readexactly(length) if length else b""
        return status, data


async def closed_loop(host: str, port: int, make: Any, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    lat: list[float] = []
    codes: Counter[int] = Counter()
    sent = 0  # every request, the warm-up's too (the server's CPU pays for all of them)
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + seconds

    async def worker(k: int) -> None:
        nonlocal sent
        c = Conn(host, port)
        i = k
        while True:
            now = time.perf_counter()
            if now >= t_end:
                return
            method, path, body = make(i)
            i += concurrency
            sent += 1
            t0 = time.perf_counter()
            try:
                status, _ = await c.request(method, path, body)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                status = -1
                c = Conn(host, port)
            t1 = time.perf_counter()
            if t0 >= t_measure:
                lat.append(t1 - t0)
                codes[status] += 1

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    n = len(lat)
    return {"requests": n, "sent": sent, "concurrency": concurrency, "seconds": seconds, "throughputPerSecond": round(n / seconds, 1), **percentiles(lat), "status": dict(codes)}


async def open_loop(host: str, port: int, make: Any, rate: float, seconds: float, connections: int, warmup: float) -> dict[str, Any]:
    """Requests arrive at a fixed rate whatever the server does (open loop), spread over
    `connections` keep-alive connections. Latency runs from a request's due time, so time
    spent waiting for a free connection counts (no coordinated omission)."""
    lat: list[float] = []
    codes: Counter[int] = Counter()
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    sent = 0
    t0 = time.perf_counter() + 0.05
    t_measure = t0 + warmup

    async def scheduler() -> None:
        for k in range(int(rate * (seconds + warmup))):
            due = t0 + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((k, due))
        for _ in range(connections):
            queue.put_nowait((-1, 0.0))

    async def worker() -> None:
        nonlocal sent
        c = Conn(host, port)
        await c.open()
        while True:
            k, due = await queue.get()
            if k < 0:
                return
            method, path, body = make(k)
            sent += 1
            try:
                status, _ = await c.request(method, path, body)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                status = -1
                c = Conn(host, port)
            if due >= t_measure:
                lat.append(time.perf_counter() - due)
                codes[status] += 1

    started = time.perf_counter()
    await asyncio.gather(scheduler(), *(worker() for _ in range(connections)))
    measured = time.perf_counter() - max(started, t_measure)
    return {
        "requests": len(lat),
        "sent": sent,
        "connections": connections,
        "targetRate": rate,
        "achievedRate": round(len(lat) / measured, 1) if measured > 0 else None,
        **percentiles(lat),
        "status": dict(codes),
    }


def quote_maker(manifest: dict[str, Any], amount: int) -> Any:
    chains = [c["chainId"] for c in manifest["chains"]]
    traders = [t["address"] for t in manifest["accounts"]["traders"]]
    pairs = [("WETH", "USDC"), ("USDC", "WETH"), ("WBTC", "USDC"), ("DAI", "USDT"), ("WETH", "DAI")]
    bodies = []
    rnd = random.Random(7)
    for k in range(256):
        sell, buy = pairs[k % len(pairs)]
        sc, bc = rnd.choice(chains), rnd.choice(chains)
        dec = {"USDC": 6, "USDT": 6, "DAI": 18, "WETH": 18, "WBTC": 8}[sell]
        usd = {"USDC": 1, "USDT": 1, "DAI": 1, "WETH": 3000, "WBTC": 60000}[sell]
        # Sizes vary (0.5x to 1.5x) so no two requests of a pair price the same amount.
        amt = max(1, int(amount * 10**dec * (0.5 + rnd.random())) // usd)
        bodies.append(json.dumps({"sellChainId": sc, "sellToken": sell, "buyChainId": bc, "buyToken": buy, "sellAmount": str(amt), "taker": traders[k % len(traders)]}).encode())
    return lambda i: ("POST", "/v1/quote", bodies[i % len(bodies)])


async def swap_load(
    host: str, port: int, manifest: dict[str, Any], rate: float, seconds: float, workers: int, warmup: float = 0.0
) -> dict[str, Any]:
    """Swaps at `rate` for `seconds`, each after its quote, latency from send to reply.

    First, `warmup` seconds at a quarter of the rate, not in the latencies (as the quote
    loads leave out their first seconds), going through every trader on every sell
    chain: a fresh API reads a trader's balance and allowance on a chain from the chain
    on their first order there, and those one-time reads would otherwise be the
    measured tail. The warm-up's orders are in `receipts` (the ledger
    check covers them) and its latencies are reported apart."""
    from app.client import order_from_quote, sign_order, swap_body
    from app.domain.eip712 import Domain

    traders = manifest["accounts"]["traders"]
    chains = [c["chainId"] for c in manifest["chains"]]
    lat: list[float] = []
    warm: list[float] = []
    codes: Counter[int] = Counter()
    receipts: list[dict[str, Any]] = []
    queue: asyncio.Queue[tuple[float, int]] = asyncio.Queue()  # (due, warm-up pair or -1)
    pairs = [(t, c) for t in range(len(traders)) for c in chains]  # each trader on each sell chain
    lag: list[float] = []
    measured_from = 0.0
    sent = 0  # quotes and swaps, the warm-up's too

    async def scheduler() -> None:
        nonlocal measured_from
        t0 = time.perf_counter()
        for phase_rate, phase_seconds, measured in ((rate / 4, warmup, False), (rate, seconds, True)):
            if measured:
                measured_from = t0
            for k in range(int(phase_rate * phase_seconds)):
                due = t0 + k / phase_rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                queue.put_nowait((due, -1 if measured else k % len(pairs)))
            t0 += phase_seconds
        for _ in range(workers):
            queue.put_nowait((-1.0, -1))

    async def worker(k: int) -> None:
        nonlocal sent
        qc, sc = Conn(host, port), Conn(host, port)
        n = 0
        while True:
            due, pair = await queue.get()
            if due < 0:
                return
            measured = pair < 0
            if measured:
                lag.append(time.perf_counter() - due)
            t = traders[(k + n) % len(traders)]
            n += 1
            sell_chain = chains[n % len(chains)]
            buy_chain = chains[(n + k) % len(chains)]
            if not measured:  # the warm-up goes through every trader on every sell chain
                t, sell_chain = traders[pairs[pair][0]], pairs[pair][1]
            body = json.dumps({"sellChainId": sell_chain, "sellToken": "WETH", "buyChainId": buy_chain, "buyToken": "USDC", "sellAmount": str(10**13), "taker": t["address"]}).encode()
            sent += 1
            try:
                status, raw = await qc.request("POST", "/v1/quote", body)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                codes[-1] += 1
                qc = Conn(host, port)
                continue
            if status != 200:
                codes[1000 + status] += 1
                continue
            quote = json.loads(raw)
            d = quote["eip712"]["domain"]
            order = order_from_quote(quote, nonce=random.getrandbits(63))
            sig = sign_order(order, Domain(chain_id=d["chainId"], verifying_contract=d["verifyingContract"]), t["privateKey"])
            payload = json.dumps(swap_body(quote, order, sig)).encode()
            sent += 1
            t0 = time.perf_counter()
            try:
                status, raw = await sc.request("POST", "/v1/swap", payload)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                # No reply: the order may or may not be confirmed (the ledger check counts it).
                codes[-1] += 1
                sc = Conn(host, port)
                continue
            (lat if measured else warm).append(time.perf_counter() - t0)
            codes[status] += 1
            if status == 200:
                r = json.loads(raw)
                receipts.append({"orderId": r["orderId"], "buyAmount": r["buyAmount"], "log": r["log"], "buyChainId": buy_chain, "trader": t["address"], "sellChainId": sell_chain})

    await asyncio.gather(scheduler(), *(worker(k) for k in range(workers)))
    elapsed = time.perf_counter() - measured_from
    return {
        "targetRate": rate,
        "seconds": seconds,
        "achievedRate": round(len(lat) / elapsed, 1),
        "swaps": len(lat),
        "sent": sent,
        **percentiles(lat),
        "scheduleLagP99Ms": percentiles(lag).get("p99Ms"),
        "warmup": {"seconds": warmup, "rate": rate / 4, "swaps": len(warm), **percentiles(warm)},
        "status": {str(k): v for k, v in codes.items()},
        "receipts": receipts,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["quote", "quote-rate", "healthz", "swap"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--manifest")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--usd", type=int, default=5000, help="quote size in USD")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    args = ap.parse_args()
    u = urlparse(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    manifest = json.loads(Path(args.manifest).read_text()) if args.manifest else {}
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "healthz":
        doc = asyncio.run(closed_loop(host, port, lambda i: ("GET", "/healthz", b""), args.concurrency, args.seconds, args.warmup))
    elif args.mode == "quote":
        doc = asyncio.run(closed_loop(host, port, quote_maker(manifest, args.usd), args.concurrency, args.seconds, args.warmup))
    elif args.mode == "quote-rate":
        doc = asyncio.run(open_loop(host, port, quote_maker(manifest, args.usd), args.rate, args.seconds, args.concurrency, args.warmup))
    else:
        doc = asyncio.run(swap_load(host, port, manifest, args.rate, args.seconds, args.concurrency, args.warmup))
    text = json.dumps(doc)
    if args.out:
        # A file, not stdout: the event loop may leave stdout non-blocking, and a large
        # document to a pipe then comes out truncated.
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
