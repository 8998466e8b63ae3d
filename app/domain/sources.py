"""Liquidity sources: the one interface every place liquidity comes from implements.

A *source* sits on one chain and trades two tokens of that chain.  Whether it is an
on-chain pool (constant product, 2-coin StableSwap) or a market maker's ladder of firm
price levels, the book and the router see the same surface:

- `amount_out(token_in, amount_in)` / `amount_in(token_out, amount_out)`: the exact
  integer math the settlement will execute (pools delegate to `app.domain.amm`, the
  integer twins of the Solidity contracts).  Zero quotes zero; a fill the source cannot
  make raises `InsufficientLiquidity`; a negative amount is a caller bug (`ValueError`).
- `marginal_price(token_in)`: output per input at zero size, fee included, as an exact
  fraction of base units.
- `gas_units`: what one use of the source costs the settlement, before amortisation.
- `apply(trade)`: the source after a trade, used to reserve liquidity in the book.

Sources are frozen values; updating one yields a new one, so a book version is a
snapshot that nothing can change underneath a quote.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache
from typing import ClassVar, Protocol, runtime_checkable

from app.domain.amm import AmmError, constant_product, stableswap
from app.domain.types import Asset, AssetSymbol, ChainId

__all__ = [
    "PRICE_SCALE",
    "ConstantProductPool",
    "InsufficientLiquidity",
    "LadderSource",
    "Level",
    "Source",
    "SourceKind",
    "StableSwapPool",
    "Trade",
]

PRICE_SCALE = 10**18


class InsufficientLiquidity(ValueError):
    """The source cannot fill the requested amount (or the amount is not positive)."""


class SourceKind(StrEnum):
    CONSTANT_PRODUCT = "constant_product"
    STABLESWAP = "stableswap"
    LADDER = "ladder"


@dataclass(frozen=True, slots=True)
class Trade:
    """A fill against one source, in that source's native base units."""

    source_id: str
    token_in: AssetSymbol
    amount_in: int
    amount_out: int


@runtime_checkable
class Source(Protocol):
    """What the book and router need from any liquidity source."""

    kind: ClassVar[SourceKind]

    def __hash__(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def chain(self) -> ChainId: ...
    @property
    def gas_units(self) -> int: ...
    @property
    def tokens(self) -> tuple[Asset, Asset]: ...
    def amount_out(self, token_in: AssetSymbol, amount_in: int) -> int: ...
    def amount_in(self, token_out: AssetSymbol, amount_out: int) -> int: ...
    def marginal_price(self, token_in: AssetSymbol) -> Fraction: ...
    def apply(self, trade: Trade) -> Source: ...


def _side(token0: Asset, token1: Asset, token_in: str) -> bool:
    """True when `token_in` is token0 (the 0→1 direction)."""
    if token_in == token0.symbol:
        return True
    if token_in == token1.symbol:
        return False
    raise KeyError(f"{token_in} is not traded by this source")


@dataclass(frozen=True, slots=True)
class _TwoTokenPool:
    id: str
    chain: ChainId
    token0: Asset
    token1: Asset
    balance0: int
    balance1: int
    fee_bps: int

    @property
    def tokens(self) -> tuple[Asset, Asset]:
        return (self.token0, self.token1)

    def _balances(self, token_in: str) -> tuple[int, int]:
        if _side(self.token0, self.token1, token_in):
            return self.balance0, self.balance1
        return self.balance1, self.balance0

    def _after(self, trade: Trade) -> tuple[int, int]:
        if _side(self.token0, self.token1, trade.token_in):
            return self.balance0 + trade.amount_in, self.balance1 - trade.amount_out
        return self.balance0 - trade.amount_out, self.balance1 + trade.amount_in


@dataclass(frozen=True, slots=True)
class ConstantProductPool(_TwoTokenPool):
    """Uniswap-V2-style x·y=k pool; `balance0/1` are its reserves."""

    gas_units: int = 90_000
    kind: ClassVar[SourceKind] = SourceKind.CONSTANT_PRODUCT

    def amount_out(self, token_in: AssetSymbol, amount_in: int) -> int:
        r_in, r_out = self._balances(token_in)
        try:
            return int(constant_product.get_amount_out(amount_in, r_in, r_out, self.fee_bps))
        except AmmError as exc:
            raise InsufficientLiquidity(str(exc)) from exc

    def amount_in(self, token_out: AssetSymbol, amount_out: int) -> int:
        r_out, r_in = self._balances(token_out)
        try:
            return int(constant_product.get_amount_in(amount_out, r_in, r_out, self.fee_bps))
        except AmmError as exc:
            raise InsufficientLiquidity(str(exc)) from exc

    def marginal_price(self, token_in: AssetSymbol) -> Fraction:
        r_in, r_out = self._balances(token_in)
        return Fraction((10_000 - self.fee_bps) * r_out, 10_000 * r_in)

    def apply(self, trade: Trade) -> ConstantProductPool:
        b0, b1 = self._after(trade)
        return replace(self, balance0=b0, balance1=b1)


@dataclass(frozen=True, slots=True)
class StableSwapPool(_TwoTokenPool):
    """2-coin Curve StableSwap pool; rates scale each token's decimals to 18."""

    amp: int = 100
    gas_units: int = 140_000
    kind: ClassVar[SourceKind] = SourceKind.STABLESWAP

    def _rates(self, token_in: str) -> tuple[int, int]:
        r0 = 10 ** (36 - self.token0.decimals)
        r1 = 10 ** (36 - self.token1.decimals)
        return (r0, r1) if _side(self.token0, self.token1, token_in) else (r1, r0)

    def amount_out(self, token_in: AssetSymbol, amount_in: int) -> int:
        b_in, b_out = self._balances(token_in)
        r_in, r_out = self._rates(token_in)
        try:
            return int(
                stableswap.get_amount_out(
                    amount_in, b_in, b_out, r_in, r_out, self.amp, self.fee_bps
                )
            )
        except AmmError as exc:
            raise InsufficientLiquidity(str(exc)) from exc

    def amount_in(self, token_out: AssetSymbol, amount_out: int) -> int:
        b_out, b_in = self._balances(token_out)
        r_out, r_in = self._rates(token_out)
        try:
            return int(
                stableswap.get_amount_in(
                    amount_out, b_in, b_out, r_in, r_out, self.amp, self.fee_bps
                )
            )
        except AmmError as exc:
            raise InsufficientLiquidity(str(exc)) from exc

    def marginal_price(self, token_in: AssetSymbol) -> Fraction:
        # No closed form for the invariant's slope in integers: probe with a trade of
        # one millionth of the input balance, large enough that rounding is negligible.
        b_in, _ = self._balances(token_in)
        probe = max(b_in // 1_000_000, 1)
        return Fraction(self.amount_out(token_in, probe), probe)

    def apply(self, trade: Trade) -> StableSwapPool:
        b0, b1 = self._after(trade)
        return replace(self, balance0=b0, balance1=b1)


@dataclass(frozen=True, slots=True)
class Level:
    """One firm price level: `price` is quote per base in whole units × PRICE_SCALE,
    `size` is in base-token base units, valid while `now < expires_at` (unix seconds)."""

    price: int
    size: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class _Fill:
    """A level seen from one trade direction: input capacity and exact rate num/den."""

    index: int
    cap_in: int
    cap_out: int
    num: int
    den: int


@dataclass(frozen=True, slots=True)
class LadderSource:
    """A market maker's ladder on one chain and pair.

    `bids` buy base (a trader selling base hits them, best = highest price first);
    `asks` sell base (a trader selling quote lifts them, best = lowest price first).
    Each level fills at its own fixed price; output rounds down per level.
    """

    id: str
    chain: ChainId
    base: Asset
    quote: Asset
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()
    maker: str = ""
    gas_units: int = 50_000
    kind: ClassVar[SourceKind] = SourceKind.LADDER

    @property
    def tokens(self) -> tuple[Asset, Asset]:
        return (self.base, self.quote)

    def fills(self, token_in: str) -> tuple[_Fill, ...]:
        """Levels in execution order for a trader selling `token_in`."""
        return _ladder_fills(self, token_in)

    def _fills(self, token_in: str) -> tuple[_Fill, ...]:
        unit_b, unit_q = 10**self.base.decimals, 10**self.quote.decimals
        out: list[_Fill] = []
        if _side(self.base, self.quote, token_in):
            order = sorted(range(len(self.bids)), key=lambda i: (-self.bids[i].price, i))
            for i in order:
                lv = self.bids[i]
                num, den = lv.price * unit_q, PRICE_SCALE * unit_b
                out.append(_Fill(i, lv.size, lv.size * num // den, num, den))
        else:
            order = sorted(range(len(self.asks)), key=lambda i: (self.asks[i].price, i))
            for i in order:
                lv = self.asks[i]
                num, den = PRICE_SCALE * unit_b, lv.price * unit_q
                cap_in = -(-lv.size * den // num)
                out.append(_Fill(i, cap_in, lv.size, num, den))
        return tuple(f for f in out if f.cap_in > 0 and f.cap_out > 0)

    def _walk_in(self, token_in: str, amount_in: int) -> list[tuple[_Fill, int, int]]:
        if amount_in < 0:
            raise ValueError(f"amount must be >= 0, got {amount_in}")
        used: list[tuple[_Fill, int, int]] = []
        if amount_in == 0:
            return used
        rest = amount_in
        for f in self.fills(token_in):
            take = min(rest, f.cap_in)
            used.append((f, take, min(take * f.num // f.den, f.cap_out)))
            rest -= take
            if rest == 0:
                return used
        raise InsufficientLiquidity(f"ladder {self.id} short by {rest}")

    def amount_out(self, token_in: AssetSymbol, amount_in: int) -> int:
        return sum(o for _, _, o in self._walk_in(token_in, amount_in))

    def amount_in(self, token_out: AssetSymbol, amount_out: int) -> int:
        if amount_out < 0:
            raise ValueError(f"amount must be >= 0, got {amount_out}")
        if amount_out == 0:
            return 0
        token_in = self.quote.symbol if token_out == self.base.symbol else self.base.symbol
        rest, total = amount_out, 0
        for f in self.fills(token_in):
            if f.cap_out >= rest:
                # Smallest fill whose rounded-down output still covers the rest.
                return total + min(-(-rest * f.den // f.num), f.cap_in)
            total += f.cap_in
            rest -= f.cap_out
        raise InsufficientLiquidity(f"ladder {self.id} short by {rest}")

    def marginal_price(self, token_in: AssetSymbol) -> Fraction:
        fills = self.fills(token_in)
        return Fraction(fills[0].num, fills[0].den) if fills else Fraction(0)

    def apply(self, trade: Trade) -> LadderSource:
        is_bid = _side(self.base, self.quote, trade.token_in)
        levels = list(self.bids if is_bid else self.asks)
        for f, take, out in self._walk_in(trade.token_in, trade.amount_in):
            lv = levels[f.index]
            base_used = take if is_bid else out
            levels[f.index] = replace(lv, size=max(lv.size - base_used, 0))
        kept = tuple(lv for lv in levels if lv.size > 0)
        return replace(self, bids=kept) if is_bid else replace(self, asks=kept)

    def live(self, now: int) -> LadderSource:
        """The ladder without levels that expired at or before `now`."""
        return replace(
            self,
            bids=tuple(lv for lv in self.bids if lv.expires_at > now),
            asks=tuple(lv for lv in self.asks if lv.expires_at > now),
        )

    def next_expiry(self) -> int | None:
        times = [lv.expires_at for lv in (*self.bids, *self.asks)]
        return min(times) if times else None


@lru_cache(maxsize=4096)
def _ladder_fills(src: LadderSource, token_in: str) -> tuple[_Fill, ...]:
    # A ladder is immutable, so its sorted fills can be memoised on its value.
    return src._fills(token_in)
