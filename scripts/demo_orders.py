"""`crossbook demo`: a stream of realistic orders from the devnet's traders, and a live
view of each one going from confirmed to finalized (or failed, with the reason).

Orders pick a random trader, pair, sell and buy chain and a size between a few hundred
and a few thousand dollars; they are quoted, signed with the trader's devnet key and
confirmed through the public API, exactly as a trader's client would.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.client import ApiCallError, CrossbookClient
from app.manifest import Manifest

__all__ = ["DemoResult", "run_demo"]

PAIRS = [("WETH", "USDC", 18, 3000), ("USDC", "WETH", 6, 1), ("WBTC", "USDC", 8, 60000), ("DAI", "USDT", 18, 1), ("USDC", "DAI", 6, 1)]
TERMINAL = {"finalized", "failed", "refunded"}


@dataclass
class DemoResult:
    sent: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)  # order id -> last state
    confirm_ms: list[float] = field(default_factory=list)
    trust_window_s: dict[str, float] = field(default_factory=dict)


def run_demo(
    api_url: str,
    manifest: Manifest,
    *,
    orders: int = 20,
    rate: float = 2.0,
    wait: float = 180.0,
    seed: int | None = None,
    show: Callable[[str], None] = print,
) -> DemoResult:
    rnd = random.Random(seed)
    client = CrossbookClient(api_url, timeout=20)
    res = DemoResult()
    started: dict[str, float] = {}
    chains = [c.chain_id for c in manifest.chains]
    for _ in range(orders):
        trader = rnd.choice(manifest.traders)
        sell, buy, dec, usd = rnd.choice(PAIRS)
        sell_chain, buy_chain = rnd.choice(chains), rnd.choice(chains)
        amount = rnd.randint(200, 3000) * 10**dec // usd
        t0 = time.perf_counter()
        try:
            q = client.quote(sell_chain, sell, buy_chain, buy, taker=trader.address, sell_amount=amount)
            receipt = client.swap(q, trader.private_key)
        except ApiCallError as e:
            res.refused[str(e.code)] = res.refused.get(str(e.code), 0) + 1
            show(f"refused  {sell}@{sell_chain} → {buy}@{buy_chain}: {e}")
            continue
        res.confirm_ms.append((time.perf_counter() - t0) * 1000)
        oid = receipt["orderId"]
        res.sent += 1
        res.states[oid] = "confirmed"
        started[oid] = time.time()
        show(f"confirmed {oid[:12]}… {trader.name} sells {sell}@{sell_chain} for {receipt['buyAmount']} {buy}@{buy_chain} (log #{receipt['log']['index']})")
        time.sleep(1 / rate)
    deadline = time.time() + wait
    while time.time() < deadline and any(s not in TERMINAL for s in res.states.values()):
        for oid, prev in list(res.states.items()):
            if prev in TERMINAL:
                continue
            st = client.order(oid)
            if st["state"] != prev:
                res.states[oid] = st["state"]
                legs = ", ".join(f"{leg['kind']}@{leg['chainId']} {leg.get('state')} {leg['confirmations']}/{leg['finalityDepth']}" for leg in st["legs"])
                show(f"{st['state']:<13} {oid[:12]}… {legs}{' — ' + st['reason'] if st.get('reason') else ''}")
                if st["state"] in TERMINAL:
                    res.trust_window_s[oid] = time.time() - started[oid]
        time.sleep(1.0)
    return res
