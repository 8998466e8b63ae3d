"""Settlement tiers: does a cross-chain order's payout wait for its pull, or not?

- **standard**: the payout enters the buy chain's log once the pull has settled on the
  sell chain (the vault holds the trader's funds before anything is paid).
- **fast**: the settlement worker appends the payout at its next tick after the order is
  confirmed (every 0.5 s), so pull and payout settle in parallel, as Across fills small
  deposits before their origin chain is final. If the pull then fails on chain (allowance
  revoked, balance moved), the recipient has been paid and nothing was taken: that payout
  is the operator's loss.

Two limits of the **sell** chain (its pull is the risk) bound that loss. Both are in one
canonical value, USD with 6 decimals (`usd6`, like USDC base units), priced at the
manifest's fixed reference prices, so that the quote and the worker decide alike and the
decision never depends on a moving book:

- `max_value`: an order whose payout is worth at most this is fast-eligible;
- `exposure_cap`: the sum of fast payouts whose pulls have neither settled nor failed
  stays at most this; an eligible order that would exceed it settles standard.

Only cross-chain orders qualify (a same-chain payout is linked to its pull by the vault
and needs no fronting), and not orders filled by a maker's firm quote (their maker legs
follow the standard path). Everything here is pure; `settlement.lifecycle` applies it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

from app.manifest import Manifest

__all__ = [
    "TICK_SECONDS",
    "FastTierLimits",
    "Tier",
    "TierDecision",
    "TierRules",
    "exposure_key",
    "load_rules",
    "losses_key",
    "order_eta",
    "usd6",
]

# The settle tick's period: how long a fast payout waits for its append at most.
TICK_SECONDS = 0.5
USD6 = 10**6


class Tier(StrEnum):
    FAST = "fast"
    STANDARD = "standard"


def usd6(usd: float | str | int) -> int:
    """A dollar amount (as written in the devnet config) in usd6, exactly."""
    return int(Fraction(str(usd)) * USD6)


def exposure_key(chain: int) -> str:
    """usd6 of fast payouts enqueued whose pulls on `chain` have not settled or failed."""
    return f"stl:{chain}:fastexposure"


def losses_key(chain: int) -> str:
    """hash token index -> base units the vault on `chain` paid for pulls that failed."""
    return f"stl:{chain}:losses"


@dataclass(frozen=True, slots=True)
class FastTierLimits:
    max_value: int  # usd6 per order; 0: no fast tier for pulls on this chain
    exposure_cap: int  # usd6 outstanding


@dataclass(frozen=True, slots=True)
class TierDecision:
    tier: Tier
    value: int  # the payout's value in usd6 (0 when the asset has no price)
    reason: str


@dataclass(frozen=True, slots=True)
class TierRules:
    prices: Mapping[str, int]  # asset symbol -> usd6 per whole token
    limits: Mapping[int, FastTierLimits]  # sell chain -> limits
    decimals: Mapping[tuple[int, str], int] = field(default_factory=dict)  # (chain, symbol) -> decimals

    @classmethod
    def from_manifest(cls, m: Manifest, *, enabled: bool = True) -> TierRules:
        limits = {} if not enabled else {
            c.chain_id: FastTierLimits(c.fast_tier_usd6, c.fast_exposure_usd6) for c in m.chains if c.fast_tier_usd6 > 0
        }
        decimals = {(c.chain_id, s): t.decimals for c in m.chains for s, t in c.tokens.items()}
        return cls(dict(m.prices), limits, decimals)

    def value(self, symbol: str, amount: int, decimals: int) -> int | None:
        """usd6 of `amount` base units, rounded up (never undervalue a risk); None without a price."""
        price = self.prices.get(symbol)
        if price is None:
            return None
        return -(-amount * price // 10**decimals)

    def eligible(
        self, sell_chain: int, buy_chain: int, symbol: str, amount: int, decimals: int, *, rfq: bool = False
    ) -> TierDecision:
        """The tier by size alone (what a quote shows; exposure is the worker's to check)."""
        limits = self.limits.get(sell_chain)
        if sell_chain == buy_chain:
            return TierDecision(Tier.STANDARD, 0, "same-chain order")
        if rfq:
            return TierDecision(Tier.STANDARD, 0, "filled by a maker's firm quote")
        if limits is None:
            return TierDecision(Tier.STANDARD, 0, f"no fast tier for pulls on chain {sell_chain}")
        value = self.value(symbol, amount, decimals)
        if value is None:
            return TierDecision(Tier.STANDARD, 0, f"no reference price for {symbol}")
        if value > limits.max_value:
            return TierDecision(Tier.STANDARD, value, f"payout worth {value} usd6 is above the fast-tier cap {limits.max_value}")
        return TierDecision(Tier.FAST, value, f"payout worth {value} usd6 is within the fast-tier cap {limits.max_value}")

    def decide(
        self, sell_chain: int, buy_chain: int, symbol: str, amount: int, decimals: int, exposure: int, *, rfq: bool = False
    ) -> TierDecision:
        """The tier at settlement: eligible by size, and room under the chain's exposure cap."""
        d = self.eligible(sell_chain, buy_chain, symbol, amount, decimals, rfq=rfq)
        if d.tier is Tier.FAST:
            cap = self.limits[sell_chain].exposure_cap
            if exposure + d.value > cap:
                return TierDecision(
                    Tier.STANDARD, d.value, f"chain {sell_chain}'s fast-tier exposure {exposure} + {d.value} would exceed {cap} usd6"
                )
        return d

    def decide_order(self, doc: dict[str, Any], exposure: int) -> TierDecision:
        """`decide` for a ledger order document (decimals from the manifest)."""
        o = doc["order"]
        sell, buy, symbol = int(o["sellChainId"]), int(o["buyChainId"]), doc["buySymbol"]
        dec = self.decimals.get((buy, symbol))
        if dec is None and sell != buy:
            return TierDecision(Tier.STANDARD, 0, f"{symbol} on chain {buy} is not in the manifest")
        return self.decide(sell, buy, symbol, int(doc["buyAmount"]), dec or 0, exposure, rfq=doc.get("rfq") is not None)


def order_eta(tier: Tier, sell_eta: float, buy_eta: float, *, cross_chain: bool) -> float:
    """Seconds from confirmation until every leg is final (each chain's window ETA being
    `max_wait + proof + finality`). Standard: the payout starts once the pull has settled,
    so the ETAs add up; fast: both legs settle in parallel, one tick apart."""
    if not cross_chain:
        return sell_eta
    if tier is Tier.FAST:
        return max(sell_eta, buy_eta + TICK_SECONDS)
    return sell_eta + buy_eta


_cache: dict[str, tuple[float, bool, TierRules]] = {}


def load_rules(path: Path | str, *, enabled: bool = True) -> TierRules:
    """The rules of the manifest at `path`, re-read when the file changes."""
    p = str(path)
    mtime = os.stat(p).st_mtime
    hit = _cache.get(p)
    if hit is not None and hit[0] == mtime and hit[1] == enabled:
        return hit[2]
    rules = TierRules.from_manifest(Manifest.load(p), enabled=enabled)
    _cache[p] = (mtime, enabled, rules)
    return rules
