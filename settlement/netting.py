"""Netting: per batch, per pool, opposite flows cancel before any pool is touched.

The router fills an order against pools (`route` in the order doc: source id, token in,
amount in, amount out). Settling a batch, the vault pays every order from inventory; the
pool trades only restore the inventory. Within one batch and one pool, a trade selling A
for B and another selling B for A are a coincidence of wants: the A that the first brings
covers the A the second takes out, so only the difference needs to reach the pool.

Per pool with tokens (A, B): `sold[t]` is what the batch's trades sell into the pool,
`bought[t]` what they take out. Opposite directions match up to `min(sold[t], bought[t])`
per token. Only a token the batch takes out more of than it brings in needs the pool:

    bought[B] > sold[B]:  sell the A surplus, sold[A] − bought[A], for B (one trade)
    bought[A] > sold[A]:  sell the B surplus for A
    neither:              no pool trade (fees left both directions in surplus)

Conservation (the property test): per token, sold = matched + net into the pool + what
the vault keeps (`kept`). The netting ratio is matched / sold over all tokens, in base
units of the token sold, so no price is needed (amounts are integers in base units; nothing here is a float except
the reported ratio).

The net trades are executed: `settlement/rebalance.py` appends one POOL leg per pool whose
net is non-zero at cut time. Its minimum output is `min_out(expected_out(...), tolerance)`:
the pool's exact twin (app/domain/amm) on the reserves read at cut time, less a tolerance
in basis points. Pure: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from app.domain.amm import BPS
from app.domain.amm import constant_product as cp
from app.domain.amm import stableswap as ss

__all__ = [
    "Flow",
    "NetTrade",
    "NettingReport",
    "PoolState",
    "expected_out",
    "flows_from_routes",
    "min_out",
    "net_flows",
]


@dataclass(frozen=True, slots=True)
class Flow:
    """One routed fill against one pool: `amount_in` of `token_in` for `amount_out` back."""

    pool: str  # the source id, "<chainId>:<pool address>"
    token_in: str
    token_out: str
    amount_in: int
    amount_out: int


@dataclass(frozen=True, slots=True)
class NetTrade:
    """What one pool sees after netting: at most one trade, `amount_in` of `token_in`."""

    pool: str
    token_in: str
    token_out: str
    amount_in: int  # net amount sold into the pool (0: fully netted)
    gross_in: dict[str, int]  # per token, the total the batch's trades sold into the pool
    matched: dict[str, int]  # per token, what opposite trades covered internally

    @property
    def kept(self) -> dict[str, int]:
        """Per token, what stays in the vault: gross − matched − net sold to the pool
        (the fee the netted-away pool trades would have charged)."""
        return {
            t: g - self.matched[t] - (self.amount_in if t == self.token_in else 0)
            for t, g in self.gross_in.items()
        }

    @property
    def touches_pool(self) -> bool:
        return self.amount_in > 0


@dataclass(frozen=True, slots=True)
class NettingReport:
    trades: tuple[NetTrade, ...]

    @property
    def gross(self) -> int:
        return sum(sum(t.gross_in.values()) for t in self.trades)

    @property
    def matched(self) -> int:
        return sum(sum(t.matched.values()) for t in self.trades)

    @property
    def ratio(self) -> float:
        """Share of the gross traded volume (token-wise, in sold units) that never reached a
        pool. 0 for no trades."""
        g = self.gross
        return 0.0 if g == 0 else self.matched / g

    @property
    def pool_trades(self) -> tuple[NetTrade, ...]:
        return tuple(t for t in self.trades if t.touches_pool)

    def to_json(self) -> dict[str, object]:
        return {
            "ratio": round(self.ratio, 6),
            "grossIn": str(self.gross),
            "matched": str(self.matched),
            "pools": [
                {
                    "pool": t.pool,
                    "tokenIn": t.token_in,
                    "tokenOut": t.token_out,
                    "netIn": str(t.amount_in),
                    "grossIn": {k: str(v) for k, v in sorted(t.gross_in.items())},
                    "matched": {k: str(v) for k, v in sorted(t.matched.items())},
                }
                for t in self.trades
            ],
        }


def net_flows(flows: Iterable[Flow]) -> NettingReport:
    """Net `flows` per pool. Deterministic: pools in sorted order."""
    by_pool: dict[str, list[Flow]] = defaultdict(list)
    for f in flows:
        if f.amount_in < 0 or f.amount_out < 0:
            raise ValueError(f"negative amount in flow {f}")
        if f.token_in == f.token_out:
            raise ValueError(f"flow {f} trades a token for itself")
        by_pool[f.pool].append(f)
    out = []
    for pool in sorted(by_pool):
        fl = by_pool[pool]
        tokens = sorted({t for f in fl for t in (f.token_in, f.token_out)})
        if len(tokens) != 2:
            raise ValueError(f"pool {pool}: flows name {len(tokens)} tokens, a pool has 2")
        a, b = tokens
        sold = {a: 0, b: 0}  # into the pool
        bought = {a: 0, b: 0}  # out of it
        for f in fl:
            sold[f.token_in] += f.amount_in
            bought[f.token_out] += f.amount_out
        matched = {t: min(sold[t], bought[t]) for t in tokens}
        # Only a token the batch pays out more of than it brings in needs the pool: the
        # surplus of the other token is sold for it. Pool fees can leave both tokens in
        # surplus (each direction got less than it gave); then no pool is touched at all.
        if bought[b] > sold[b] and sold[a] > bought[a]:
            tin, tout, net = a, b, sold[a] - bought[a]
        elif bought[a] > sold[a] and sold[b] > bought[b]:
            tin, tout, net = b, a, sold[b] - bought[b]
        elif bought[a] > sold[a] and bought[b] > sold[b]:
            raise ValueError(f"pool {pool}: the batch takes out more of both tokens than it brings")
        else:
            tin, tout, net = a, b, 0
        out.append(NetTrade(pool, tin, tout, net, sold, matched))
    return NettingReport(tuple(out))


def flows_from_routes(routes: Iterable[dict[str, str]], pool_tokens: dict[str, tuple[str, str]], *, chain_id: int) -> list[Flow]:
    """The order docs' route entries that trade on `chain_id`'s pools, as flows.

    `pool_tokens`: source id -> (symbol0, symbol1) from the manifest. Market-maker levels
    (ids "<chain>:mm:...") are no pools and are skipped: their legs settle as maker legs.
    """
    prefix = f"{chain_id}:"
    out = []
    for r in routes:
        sid = r["sourceId"].lower()
        if not sid.startswith(prefix) or sid not in pool_tokens:
            continue
        s0, s1 = pool_tokens[sid]
        tin = r["tokenIn"]
        tout = s1 if tin == s0 else s0
        out.append(Flow(sid, tin, tout, int(r["amountIn"]), int(r["amountOut"])))
    return out


@dataclass(frozen=True, slots=True)
class PoolState:
    """A pool's parameters (manifest) and reserves (read on chain), for its math twin."""

    kind: str  # "constant_product" | "stableswap"
    symbol0: str
    symbol1: str
    reserve0: int
    reserve1: int
    fee_bps: int
    amp: int = 0
    decimals0: int = 18  # stableswap rates come from the decimals
    decimals1: int = 18


def expected_out(pool: PoolState, token_in: str, amount_in: int) -> int:
    """What `pool.swap(token_in, amount_in)` pays on these reserves, to the wei (the twins
    raise `AmmError` where the contract would revert)."""
    if token_in == pool.symbol0:
        r_in, r_out, d_in, d_out = pool.reserve0, pool.reserve1, pool.decimals0, pool.decimals1
    elif token_in == pool.symbol1:
        r_in, r_out, d_in, d_out = pool.reserve1, pool.reserve0, pool.decimals1, pool.decimals0
    else:
        raise ValueError(f"{token_in} is not a token of the pool ({pool.symbol0}, {pool.symbol1})")
    if pool.kind == "constant_product":
        return cp.get_amount_out(amount_in, r_in, r_out, pool.fee_bps)
    if pool.kind == "stableswap":
        return ss.get_amount_out(
            amount_in, r_in, r_out, ss.rate_for_decimals(d_in), ss.rate_for_decimals(d_out), pool.amp, pool.fee_bps
        )
    raise ValueError(f"unknown pool kind {pool.kind!r}")


def min_out(expected: int, tolerance_bps: int) -> int:
    """The least output accepted for a trade expected to pay `expected` (rounded down)."""
    if not 0 <= tolerance_bps <= BPS:
        raise ValueError(f"tolerance_bps must be in [0, {BPS}], got {tolerance_bps}")
    return expected * (BPS - tolerance_bps) // BPS
