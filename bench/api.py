"""HTTP benchmarks of the API, measured from a separate load process.

1. `/v1/quote` at a fixed concurrency (default 50), closed loop (each client sends its
   next request when the last one answers: the saturation throughput), beside a
   `/healthz` baseline at the same concurrency in the same run (the server's floor on
   this machine); then open loop at the goal's rate (1,000/s over 50 connections) for the
   latency at that load. By Little's law a closed loop of 50 clients at 1,000 req/s has a
   mean latency of 50 ms whatever the server does, so the p99 goal is read at the rate.
2. `/v1/swap` at a fixed arrival rate (default 200/s for 60 s), each swap preceded by
   its quote, after 2 s of warm-up at a quarter of the rate (each trader's first order
   reads its funds from the chain; reported apart); then the ledger is checked, the
   warm-up's orders included: every receipt in Redis at its log index, no
   index twice, holds equal to the sums of what was receipted.

The stack is the real one: a 3-chain devnet, an embedded Redis (AOF, fsync always) and
`crossbook api` as its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

from app.settings import Settings
from bench.machine import (
    CpuTimes,
    busy,
    disk_watch,
    fsync_probe,
    process_cpu_seconds,
    tree_cpu_seconds,
)
from scripts.devnet.ports import free_port
from scripts.stack import Stack

ROOT = Path(__file__).resolve().parent.parent


def _load(mode: str, url: str, manifest: Path, *args: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, "-m", "bench.http_load", mode, "--url", url, "--manifest", str(manifest), "--out", out.name, *args],
            cwd=ROOT,
            check=True,
        )
        return dict(json.loads(Path(out.name).read_text()))


def _roots(stack: Stack) -> dict[str, int]:
    """The stack's processes by name: each service, Redis, and every Anvil as `anvil`."""
    roots = {s.name: s.proc.pid for s in stack.services if s.proc is not None}
    if stack.redis is not None and stack.redis.proc is not None:
        roots["redis"] = stack.redis.proc.pid
    if stack.devnet is not None:
        for cid, node in stack.devnet.nodes.items():
            if node.proc is not None:
                roots[f"anvil-{cid}"] = node.proc.pid
        if stack.devnet.producer_proc is not None:  # mines the chains with sub-second block times
            roots["blockProducer"] = stack.devnet.producer_proc.pid
    return roots


def _measured(pid: int, fn: Any, roots: dict[str, int] | None = None, disk: Path | None = None) -> dict[str, Any]:
    """Run a load and add the API's CPU per request: its CPU time over the load's whole
    run divided by every request the load sent (`sent`: warm-up included, and for the
    swap load its quotes too, as the CPU counts them all). Add what the machine did
    meanwhile (`machine`): its CPU by kind, steal included, and each process's share of
    one core (`roots`: name -> pid, each with its descendants), the load generator's too,
    and how long an fdatasync took meanwhile on the disk of directory `disk`."""
    roots = roots or {}
    # The API's own CPU (user + system, from /proc): a cost per request that holds up on a
    # noisy machine where wall-clock latency does not.
    c0, m0, p0 = process_cpu_seconds(pid, reaped_children=False), CpuTimes(), tree_cpu_seconds(roots)
    g0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    with disk_watch(disk) if disk is not None else contextlib.nullcontext({}) as syncs:
        doc = fn()
    used = process_cpu_seconds(pid, reaped_children=False) - c0
    wall = time.monotonic() - t0
    g1, p1 = resource.getrusage(resource.RUSAGE_CHILDREN), tree_cpu_seconds(roots)
    sent = doc.get("sent") or 0
    doc["serverCpuMsPerRequest"] = round(used * 1000 / sent, 3) if sent else None
    per = {name: p1[name] - p0[name] for name in roots}
    anvil = sum(v for k, v in per.items() if k.startswith("anvil-"))
    per = {k: v for k, v in per.items() if not k.startswith("anvil-")} | {"anvil": anvil}
    per["loadGenerator"] = (g1.ru_utime + g1.ru_stime) - (g0.ru_utime + g0.ru_stime)
    shares = CpuTimes().shares_since(m0)
    busy_cores = (100 - shares["idle"] - shares["iowait"] - shares["steal"]) / 100 * (os.cpu_count() or 1)
    doc["machine"] = {
        "cpuPercent": shares,
        "processPercentOfOneCore": {k: round(v * 100 / wall, 1) for k, v in sorted(per.items(), key=lambda kv: -kv[1])},
        # Busy CPU no process above accounts for: anything else running on the machine.
        "otherPercentOfOneCore": round(max(0.0, busy_cores - sum(per.values()) / wall) * 100, 1),
    }
    if disk is not None:
        doc["machine"]["diskFdatasync"] = syncs
    return doc


def _metrics(url: str) -> dict[str, float]:
    """The API's Prometheus samples, by full sample name with labels."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and not line.startswith("#")}


def _swap_pricing(after: dict[str, float]) -> dict[str, float]:
    """How the API priced the swaps (its Prometheus counter): the quote reused on the same
    book version, or re-priced on a newer one."""
    return {
        k.split('how="', 1)[1].split('"', 1)[0]: v for k, v in after.items() if k.startswith("crossbook_swap_pricing_total{")
    }


def _histogram(before: dict[str, float], after: dict[str, float], name: str, label: str = "") -> dict[str, Any]:
    """Count, mean and bucket-bound p50/p90/p99 (ms) of a histogram between two snapshots:
    the server's own view of where the time went during one part of the benchmark."""
    buckets: list[tuple[float, float]] = []
    for k, v in after.items():
        if k.startswith(name + "_bucket{") and label in k:
            le = k.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), v - before.get(k, 0.0)))
    buckets.sort()
    sel = "{" + label + "}" if label else ""
    n = after.get(name + "_count" + sel, 0.0) - before.get(name + "_count" + sel, 0.0)
    total = after.get(name + "_sum" + sel, 0.0) - before.get(name + "_sum" + sel, 0.0)

    def upto(q: float) -> float | None:
        for le, c in buckets:
            if c >= q * n:
                return None if math.isinf(le) else le * 1000
        return None

    return {"count": int(n), "meanMs": round(total / n * 1000, 3) if n else None, "p50AtMostMs": upto(0.5), "p90AtMostMs": upto(0.9), "p99AtMostMs": upto(0.99)}


def _server_view(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    steps = ("checks", "quote", "price", "funds", "reserve", "ledger", "receipt")
    return {
        "swapSteps": {p: _histogram(before, after, "crossbook_swap_phase_seconds", f'phase="{p}"') for p in steps},
        "eventLoopLag": _histogram(before, after, "crossbook_event_loop_lag_seconds"),
        "routing": _histogram(before, after, "crossbook_route_seconds"),
        "gcPauses": {g: _histogram(before, after, "crossbook_gc_pause_seconds", f'generation="{g}"') for g in "012"},
    }


def _check_ledger(redis_url: str, manifest: dict[str, Any], receipts: list[dict[str, Any]]) -> dict[str, Any]:
    r = redis.Redis.from_url(redis_url)
    lost = [rc["orderId"] for rc in receipts if not r.exists("order:" + rc["orderId"])]
    wrong_index = 0
    for rc in receipts:
        leg = r.hget(f"log:{rc['log']['chainId']}:legs", str(rc["log"]["index"]))
        if leg is None or json.loads(leg)["orderId"] != rc["orderId"]:
            wrong_index += 1
    double = len(receipts) - len({rc["orderId"] for rc in receipts})
    gaps = 0
    for c in manifest["chains"]:
        idx = sorted(int(k) for k in r.hkeys(f"log:{c['chainId']}:legs"))
        gaps += int(idx != list(range(len(idx))))
    paid: dict[int, int] = defaultdict(int)
    for rc in receipts:
        paid[rc["buyChainId"]] += int(rc["buyAmount"])
    # Inventory holds equal the payouts of stored orders not yet paid out. The stack's
    # settlement workers run during the check and release the holds they pay, so the
    # orders are read between two reads of the holds; if a payout settled in between,
    # the snapshot is not consistent and is taken again.
    def holds() -> dict[int, int]:
        return {c["chainId"]: int(r.get(f"invheld:{c['chainId']}:{c['tokens']['USDC']['address'].lower()}") or 0) for c in manifest["chains"]}

    attempt = 0
    while attempt < 10:
        attempt += 1
        held_before = holds()
        stored_paid: dict[int, int] = defaultdict(int)
        for key in r.scan_iter(match="order:*", count=1000):
            doc = json.loads(r.get(key) or "{}")
            if doc and doc["state"] in ("confirmed", "pull_settled"):
                stored_paid[doc["legs"][1]["chainId"]] += int(doc["buyAmount"])
        held = holds()
        diff = {c: held[c] - stored_paid[c] for c in held}
        if held == held_before:
            break
    holds_exact = all(v == 0 for v in diff.values())
    settled = sum(1 for key in r.scan_iter(match="order:*", count=1000) if json.loads(r.get(key) or "{}").get("state") not in ("confirmed", "pull_settled"))
    stored = sum(1 for _ in r.scan_iter(match="order:*", count=1000))
    return {
        # Orders stored without a receipt reaching the client (its connection dropped
        # before the reply) are not lost: they are confirmed, the client just never heard.
        "receipts": len(receipts),
        "ordersStored": stored,
        "lost": len(lost),
        "doubleBooked": double,
        "wrongLogIndex": wrong_index,
        "logsWithGaps": gaps,
        "inventoryHoldsExact": holds_exact,
        "inventoryHoldDiff": {str(k): str(v) for k, v in diff.items()},
        "inventoryCheckAttempts": attempt,
        "ordersPaidOutDuringTheRun": settled,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (CI smoke)")
    ap.add_argument("--quote-seconds", type=float, default=20)
    ap.add_argument("--swap-seconds", type=float, default=60)
    ap.add_argument("--swap-rate", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--quote-rate", type=float, default=1000, help="open-loop quote rate for the latency goal")
    ap.add_argument(
        "--busy", type=int, default=0, help="busy loops in sessions of their own during the loads (the goals' margin)"
    )
    args = ap.parse_args()
    if args.quick:
        args.quote_seconds, args.swap_seconds = 4, 5
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(state_dir=Path(tmp), api_port=free_port(), redis_url=None, log_level="WARNING")
        stack = Stack(settings, chains=3, base_port=0, progress=lambda _m: None)
        stack.start()
        try:
            api = next(s for s in stack.services if s.name == "api")
            assert api.url and stack.devnet is not None
            manifest_path = stack.devnet.manifest_path
            manifest = json.loads(manifest_path.read_text())
            c = str(args.concurrency)
            assert api.proc is not None
            pid = api.proc.pid
            roots = _roots(stack)
            data_dir = stack.redis.data_dir if stack.redis is not None else None
            disk = fsync_probe(data_dir) if data_dir is not None else None
            compiled = bool(json.loads(urllib.request.urlopen(api.url + "/healthz", timeout=10).read())["routerCompiled"])
            with busy(args.busy) as loops:  # none by default
                roots |= {f"busy-{i}": loop for i, loop in enumerate(loops)}
                baseline = _measured(pid, lambda: _load("healthz", api.url, manifest_path, "--concurrency", c, "--seconds", str(args.quote_seconds / 2)), roots, data_dir)
                quotes = _measured(pid, lambda: _load("quote", api.url, manifest_path, "--concurrency", c, "--seconds", str(args.quote_seconds)), roots, data_dir)
                at_rate = _measured(
                    pid,
                    lambda: _load("quote-rate", api.url, manifest_path, "--rate", str(args.quote_rate), "--concurrency", c, "--seconds", str(args.quote_seconds)),
                    roots,
                    data_dir,
                )
                before = _metrics(api.url)
                swaps = _measured(
                    pid,
                    lambda: _load("swap", api.url, manifest_path, "--rate", str(args.swap_rate), "--seconds", str(args.swap_seconds), "--concurrency", "64"),
                    roots,
                    data_dir,
                )
                after = _metrics(api.url)
            receipts = swaps.pop("receipts")
            swaps["pricing"] = _swap_pricing(after)
            swaps["server"] = _server_view(before, after)
            ledger = _check_ledger(stack.redis_url, manifest, receipts)
        finally:
            stack.stop()
    print(
        json.dumps(
            {
                "routerCompiled": compiled,
                "redisDiskFdatasync": disk,
                "busyLoops": args.busy,
                "quote": {**quotes, "goal": {"throughputPerSecond": 1000}},
                "quoteAtRate": {**at_rate, "goal": {"achievedRate": 1000, "p99Ms": 25}},
                "baselineHealthz": baseline,
                "swap": {**swaps, "goal": {"p99Ms": 50, "lost": 0, "doubleBooked": 0}},
                "ledgerCheck": ledger,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
