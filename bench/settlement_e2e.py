"""End-to-end settlement on the real stack (`make up`'s: devnet, Redis, API, a settle and
a prove worker, beat).

1. Trust window at light load: orders one at a time (1 every 2 s), each followed from
   confirmation to `finalized`; p50/p95 beside each order's goal from SPEC §7,
   window + proof time + depth × block time + 5 s, summed over both chains for a
   cross-chain order (its payout waits for its pull).
2. Sustained settlement: a burst of orders confirmed as fast as the API takes them, then
   the time until every one is final: settled swaps per second and the backlog's peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.manifest import Manifest
from app.settings import Settings
from scripts.demo_orders import run_demo
from scripts.devnet.ports import free_port
from scripts.stack import Stack


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p * len(s)))], 2)


def _goal(api: str, order: dict[str, Any]) -> float:
    chains = {c["chainId"]: c for c in httpx.get(api + "/v1/chains").json()["chains"]}
    ids = {leg["chainId"] for leg in order["legs"]}
    return sum(chains[c]["settlementWindow"]["etaSeconds"] for c in ids) + 5.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--light", type=int, default=12, help="orders at light load")
    ap.add_argument("--burst", type=int, default=60, help="orders in the burst")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.light, args.burst = 4, 12
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(state_dir=Path(tmp), api_port=free_port(), redis_url=None, log_level="WARNING")
        stack = Stack(settings, chains=3, base_port=0, progress=lambda _m: None)
        stack.start()
        try:
            api = next(s.url for s in stack.services if s.name == "api")
            assert api is not None and stack.devnet is not None
            manifest = Manifest.load(stack.devnet.manifest_path)
            client = httpx.Client(base_url=api, timeout=20)
            light = run_demo(api, manifest, orders=args.light, rate=0.5, wait=300, seed=1, show=lambda _l: None)
            windows = list(light.trust_window_s.values())
            goals = [_goal(api, client.get(f"/v1/orders/{oid}").json()) for oid in light.trust_window_s]
            within = sum(1 for oid, w in light.trust_window_s.items() if w <= _goal(api, client.get(f"/v1/orders/{oid}").json()))
            t0 = time.perf_counter()
            burst = run_demo(api, manifest, orders=args.burst, rate=50, wait=600, seed=2, show=lambda _l: None)
            elapsed = time.perf_counter() - t0
            finalized = sum(1 for s in burst.states.values() if s == "finalized")
        finally:
            stack.stop()
    print(
        json.dumps(
            {
                "lightLoad": {
                    "orders": light.sent,
                    "finalized": sum(1 for s in light.states.values() if s == "finalized"),
                    "trustWindowSeconds": {"p50": _pct(windows, 0.5), "p95": _pct(windows, 0.95), "max": _pct(windows, 1.0)},
                    "goalSeconds": {"median": round(statistics.median(goals), 2) if goals else None},
                    "withinGoal": within,
                    "confirmMs": {"p50": _pct(light.confirm_ms, 0.5), "p95": _pct(light.confirm_ms, 0.95)},
                },
                "burst": {
                    "orders": burst.sent,
                    "refused": burst.refused,
                    "finalized": finalized,
                    "secondsToAllFinal": round(elapsed, 1),
                    "settledSwapsPerSecond": round(finalized / elapsed, 3) if elapsed else None,
                    "trustWindowSeconds": {"p50": _pct(list(burst.trust_window_s.values()), 0.5), "max": _pct(list(burst.trust_window_s.values()), 1.0)},
                },
                "workers": 2,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
