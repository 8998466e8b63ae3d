"""Liquidity sources: exact math delegation, inverses, ladders, state updates."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.amm import constant_product, stableswap
from app.domain.sources import (
    ConstantProductPool,
    InsufficientLiquidity,
    LadderSource,
    Level,
    Source,
    StableSwapPool,
    Trade,
)
from app.domain.types import Asset, AssetSymbol, ChainId

C = ChainId(1)
USDC = Asset(AssetSymbol("USDC"), C, 6)
DAI = Asset(AssetSymbol("DAI"), C, 18)
WETH = Asset(AssetSymbol("WETH"), C, 18)
E18 = 10**18


def cp(r0: int = 3_000_000 * 10**6, r1: int = 1_000 * E18, fee: int = 30) -> ConstantProductPool:
    return ConstantProductPool("cp", C, USDC, WETH, r0, r1, fee)


def ss(b0: int = 10**6 * 10**6, b1: int = 10**6 * E18) -> StableSwapPool:
    return StableSwapPool("ss", C, USDC, DAI, b0, b1, 4, amp=200)


def ladder() -> LadderSource:
    return LadderSource(
        "mm",
        C,
        WETH,
        USDC,
        bids=(Level(2_990 * E18, E18, 100), Level(3_000 * E18, E18, 200)),
        asks=(Level(3_010 * E18, 2 * E18, 100), Level(3_020 * E18, E18, 50)),
    )


def test_constant_product_delegates_to_the_pool_twin() -> None:
    p = cp()
    assert p.amount_out(USDC.symbol, 3_000 * 10**6) == constant_product.get_amount_out(
        3_000 * 10**6, p.balance0, p.balance1, 30
    )
    assert p.amount_in(WETH.symbol, E18) == constant_product.get_amount_in(
        E18, p.balance0, p.balance1, 30
    )
    assert p.amount_out(WETH.symbol, E18) == constant_product.get_amount_out(
        E18, p.balance1, p.balance0, 30
    )
    assert p.marginal_price(USDC.symbol) == Fraction(9_970 * p.balance1, 10_000 * p.balance0)


def test_stableswap_uses_decimal_rates() -> None:
    s = ss()
    got = s.amount_out(USDC.symbol, 1_000 * 10**6)
    assert got == stableswap.get_amount_out(
        1_000 * 10**6, s.balance0, s.balance1, 10**30, 10**18, 200, 4
    )
    assert 998 * E18 < got < 1_000 * E18
    assert abs(float(s.marginal_price(USDC.symbol)) * 1e-12 - 0.9996) < 1e-3


def test_errors_and_zero() -> None:
    for src in (cp(), ss(), ladder()):
        a = src.tokens[0].symbol
        assert src.amount_out(a, 0) == 0
        with pytest.raises(ValueError):
            src.amount_out(a, -1)
        with pytest.raises(KeyError):
            src.amount_out(AssetSymbol("XYZ"), 1)
    with pytest.raises(InsufficientLiquidity):
        cp().amount_in(WETH.symbol, 1_000 * E18)
    with pytest.raises(InsufficientLiquidity):
        ladder().amount_out(WETH.symbol, 3 * E18)


def test_sources_satisfy_the_protocol() -> None:
    for src in (cp(), ss(), ladder()):
        assert isinstance(src, Source)
        hash(src)


def test_ladder_fills_best_level_first_and_rounds_per_level() -> None:
    mm = ladder()
    # Selling 1.5 WETH into the bids: 1 at 3000, 0.5 at 2990.
    assert mm.amount_out(WETH.symbol, 3 * E18 // 2) == 3_000 * 10**6 + 1_495 * 10**6
    # Buying WETH with USDC lifts 3010 first.
    assert mm.amount_out(USDC.symbol, 3_010 * 10**6) == E18
    assert mm.amount_in(WETH.symbol, E18) == 3_010 * 10**6
    assert mm.marginal_price(WETH.symbol) == Fraction(3_000 * 10**6, E18)


def test_ladder_apply_consumes_levels_and_live_drops_expired() -> None:
    mm = ladder()
    after = mm.apply(Trade("mm", WETH.symbol, 3 * E18 // 2, 0))
    assert after.bids == (Level(2_990 * E18, E18 // 2, 100),)
    after = mm.apply(Trade("mm", USDC.symbol, 3_010 * 10**6, E18))
    assert [lv.size for lv in after.asks] == [E18, E18]
    live = mm.live(100)
    assert [lv.price for lv in live.bids] == [3_000 * E18]
    assert live.asks == ()
    assert mm.next_expiry() == 50


def test_pool_apply_moves_balances() -> None:
    p = cp()
    out = p.amount_out(USDC.symbol, 10**9)
    q = p.apply(Trade("cp", USDC.symbol, 10**9, out))
    assert (q.balance0, q.balance1) == (p.balance0 + 10**9, p.balance1 - out)
    q = p.apply(Trade("cp", WETH.symbol, E18, 2_900 * 10**6))
    assert (q.balance0, q.balance1) == (p.balance0 - 2_900 * 10**6, p.balance1 + E18)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["cp", "ss", "mm"]),
    frac=st.floats(1e-9, 0.5),
    forward=st.booleans(),
)
def test_amount_in_is_a_sufficient_and_tight_inverse(kind: str, frac: float, forward: bool) -> None:
    src: Source = {"cp": cp(), "ss": ss(), "mm": ladder()}[kind]
    t_in, t_out = src.tokens if forward else src.tokens[::-1]
    if kind == "mm":
        cap = 2 * E18 if t_out == WETH else 5_990 * 10**6
    elif kind == "cp":
        cap = src.balance1 if t_out == src.tokens[1] else src.balance0  # type: ignore[attr-defined]
    else:
        cap = src.balance1 if t_out == src.tokens[1] else src.balance0  # type: ignore[attr-defined]
    want = max(int(cap * frac), 1)
    need = src.amount_in(t_out.symbol, want)
    assert src.amount_out(t_in.symbol, need) >= want
    if need > 1:
        assert src.amount_out(t_in.symbol, need - 1) < want
