"""Settlement tiers: does a cross-chain order's payout wait for its pull, or not?

- **standard**: the payout enters the buy chain's log once the pull has settled on the
  sell chain (the vault holds the trader's funds before anything is paid).
- **fast**: the settlement worker appends the payout at its next tick after the order is
  confirmed (every 0.5 s), so pull and payout settle in parallel, as Across fills small
  deposits before their origin chain is final. If the pull then fails on chain (allowance
  revoked, balance moved), the recipient has been paid and nothing was taken: that payout
  is the operator's loss.

Limits of the **sell** chain (its pull is the risk) bound that loss. They are in one
canonical value, USD with 6 decimals (`usd6`, like USDC base units), priced at the
manifest's fixed reference prices, so that the quote and the worker decide alike and the
decision never depends on a moving book:

- `max_value`: an order whose payout is worth at most this is fast-eligible;
- `exposure_cap`: the sum of fast payouts whose pulls have neither settled nor failed
  stays at most this; an eligible order that would exceed it settles standard;
- `trader_cap`: the same sum for one trader (one trader cannot take the whole cap);
- `loss_budget` over `loss_window` seconds: once the fast payouts whose pulls failed
  within the window are worth more than this, the chain's fast tier turns itself off
  (a `Switch` kept in Redis, `switch_key`) until an operator turns it on again; losses
  booked before that moment no longer count (`Switch.count_from`).

Only cross-chain orders qualify (a same-chain payout is linked to its pull by the vault
and needs no fronting), and not orders filled by a maker's firm quote (their maker legs
follow the standard path). Everything here is pure; `settlement.lifecycle` applies it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

from app.manifest import Manifest

__all__ = [
    "DEFAULT_LOSS_WINDOW",
    "TICK_SECONDS",
    "FastTierLimits",
    "Switch",
    "Tier",
    "TierDecision",
    "TierRules",
    "exposure_key",
    "fast_losses_key",
    "load_rules",
    "loss_entry",
    "losses_key",
    "order_eta",
    "switch_key",
    "trader_exposure_key",
    "usd6",
    "usd_text",
    "window_losses",
]

# The settle tick's period: how long a fast payout waits for its append at most.
TICK_SECONDS = 0.5
USD6 = 10**6
DEFAULT_LOSS_WINDOW = 86_400  # seconds


class Tier(StrEnum):
    FAST = "fast"
    STANDARD = "standard"


def usd6(usd: float | str | int) -> int:
    """A dollar amount (as written in the devnet config) in usd6, exactly."""
    return int(Fraction(str(usd)) * USD6)


def usd_text(value: int) -> str:
    """usd6 as a decimal dollar string: 100000000 -> "100", 500000 -> "0.5"."""
    whole, frac = divmod(value, USD6)
    return f"{whole}.{frac:06d}".rstrip("0") if frac else str(whole)


def exposure_key(chain: int) -> str:
    """usd6 of fast payouts enqueued whose pulls on `chain` have not settled or failed."""
    return f"stl:{chain}:fastexposure"


def trader_exposure_key(chain: int) -> str:
    """hash trader (lowercase) -> its share of `exposure_key(chain)`, usd6 (no field: 0)."""
    return f"stl:{chain}:fasttraders"


def losses_key(chain: int) -> str:
    """hash token index -> base units the vault on `chain` paid for pulls that failed."""
    return f"stl:{chain}:losses"


def fast_losses_key(chain: int) -> str:
    """sorted set of fast payouts whose pulls on `chain` failed: member `loss_entry`,
    score the ms it was booked. What the loss budget counts."""
    return f"stl:{chain}:fastlosses"


def switch_key(chain: int) -> str:
    """hash: the fast tier's switch for pulls on `chain` (`Switch`); absent: on."""
    return f"stl:{chain}:fasttier"


def loss_entry(order_id: str, value: int) -> str:
    return f"{order_id}:{value}"


def window_losses(entries: Sequence[str | bytes]) -> int:
    """usd6 sum of `loss_entry` members."""
    return sum(int((e.decode() if isinstance(e, bytes) else e).rsplit(":", 1)[1]) for e in entries)


@dataclass(frozen=True, slots=True)
class Switch:
    """The fast tier's state for one sell chain, as kept in its `switch_key` hash."""

    on: bool = True
    by: str = ""  # "operator" | "loss budget" ("" : never switched)
    reason: str = ""
    at: int = 0  # ms of the last switch
    count_from: int = 0  # ms: losses booked up to here do not count toward the budget

    @classmethod
    def from_hash(cls, h: Mapping[Any, Any]) -> Switch:
        d = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in h.items()}
        if not d:
            return cls()
        return cls(d.get("state", "on") != "off", d.get("by", ""), d.get("reason", ""), int(d.get("at", 0)), int(d.get("countFrom", 0)))

    def to_hash(self) -> dict[str, str]:
        return {"state": "on" if self.on else "off", "by": self.by, "reason": self.reason, "at": str(self.at), "countFrom": str(self.count_from)}


@dataclass(frozen=True, slots=True)
class FastTierLimits:
    max_value: int  # usd6 per order; 0: no fast tier for pulls on this chain
    exposure_cap: int  # usd6 outstanding
    trader_cap: int | None = None  # usd6 outstanding per trader (None: only the exposure cap)
    loss_budget: int | None = None  # usd6 of failed fast pulls per window (None: no budget)
    loss_window: int = DEFAULT_LOSS_WINDOW  # seconds

    @classmethod
    def resolve(cls, max_value: int, exposure_cap: int, trader_cap: int = 0, loss_budget: int = 0, loss_window: int = 0) -> FastTierLimits:
        """The limits of a manifest chain; a 0 (a manifest written before the field) takes
        the default: a quarter of the exposure cap per trader (never below one payout),
        half of it as the loss budget, over a day."""
        return cls(
            max_value,
            exposure_cap,
            trader_cap or min(exposure_cap, max(exposure_cap // 4, max_value)),
            loss_budget or exposure_cap // 2,
            loss_window or DEFAULT_LOSS_WINDOW,
        )

    def counted_since(self, switch: Switch, now_ms: int) -> int:
        """Losses booked after this ms count toward the budget: the rolling window, and
        nothing the operator acknowledged by turning the tier back on."""
        return max(now_ms - self.loss_window * 1000, switch.count_from)

    def over_budget(self, losses: int) -> bool:
        return self.loss_budget is not None and losses > self.loss_budget


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
    # sell chain -> why its fast tier is switched off (the API's copy of the switches,
    # refreshed from Redis; the worker reads the switch itself, in its transaction).
    off: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, m: Manifest, *, enabled: bool = True) -> TierRules:
        limits = {} if not enabled else {
            c.chain_id: FastTierLimits.resolve(
                c.fast_tier_usd6, c.fast_exposure_usd6, c.fast_trader_cap_usd6, c.fast_loss_budget_usd6, c.fast_loss_window_seconds
            )
            for c in m.chains if c.fast_tier_usd6 > 0
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
        self, sell_chain: int, buy_chain: int, symbol: str, amount: int, decimals: int, *, rfq: bool = False, off: str | None = None
    ) -> TierDecision:
        """The tier by size and switch alone (what a quote shows; exposure is the worker's
        to check). `off`: why the sell chain's tier is switched off (default: `self.off`)."""
        limits = self.limits.get(sell_chain)
        if sell_chain == buy_chain:
            return TierDecision(Tier.STANDARD, 0, "same-chain order")
        if rfq:
            return TierDecision(Tier.STANDARD, 0, "filled by a maker's firm quote")
        if limits is None:
            return TierDecision(Tier.STANDARD, 0, f"no fast tier for pulls on chain {sell_chain}")
        off = off if off is not None else self.off.get(sell_chain)
        if off is not None:
            return TierDecision(Tier.STANDARD, 0, f"chain {sell_chain}'s fast tier is off: {off}")
        value = self.value(symbol, amount, decimals)
        if value is None:
            return TierDecision(Tier.STANDARD, 0, f"no reference price for {symbol}")
        if value > limits.max_value:
            return TierDecision(Tier.STANDARD, value, f"payout worth {value} usd6 is above the fast-tier cap {limits.max_value}")
        return TierDecision(Tier.FAST, value, f"payout worth {value} usd6 is within the fast-tier cap {limits.max_value}")

    def decide(
        self, sell_chain: int, buy_chain: int, symbol: str, amount: int, decimals: int, exposure: int, *,
        trader_exposure: int = 0, rfq: bool = False, off: str | None = None,
    ) -> TierDecision:
        """The tier at settlement: eligible by size with the tier on, and room under the
        chain's exposure cap and under the trader's cap."""
        d = self.eligible(sell_chain, buy_chain, symbol, amount, decimals, rfq=rfq, off=off)
        if d.tier is Tier.FAST:
            limits = self.limits[sell_chain]
            if exposure + d.value > limits.exposure_cap:
                return TierDecision(
                    Tier.STANDARD, d.value,
                    f"chain {sell_chain}'s fast-tier exposure {exposure} + {d.value} would exceed {limits.exposure_cap} usd6",
                )
            if limits.trader_cap is not None and trader_exposure + d.value > limits.trader_cap:
                return TierDecision(
                    Tier.STANDARD, d.value,
                    f"the trader's fast-tier exposure on chain {sell_chain} {trader_exposure} + {d.value} would exceed {limits.trader_cap} usd6",
                )
        return d

    def decide_order(self, doc: dict[str, Any], exposure: int, *, trader_exposure: int = 0, off: str | None = None) -> TierDecision:
        """`decide` for a ledger order document (decimals from the manifest)."""
        o = doc["order"]
        sell, buy, symbol = int(o["sellChainId"]), int(o["buyChainId"]), doc["buySymbol"]
        dec = self.decimals.get((buy, symbol))
        if dec is None and sell != buy:
            return TierDecision(Tier.STANDARD, 0, f"{symbol} on chain {buy} is not in the manifest")
        return self.decide(
            sell, buy, symbol, int(doc["buyAmount"]), dec or 0, exposure,
            trader_exposure=trader_exposure, rfq=doc.get("rfq") is not None, off=off,
        )


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
