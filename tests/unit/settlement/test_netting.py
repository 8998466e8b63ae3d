"""Netting: conservation per token, opposite flows cancel, the ratio."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.netting import Flow, flows_from_routes, net_flows

POOLS = ["1:0xaa", "1:0xbb"]
amounts = st.integers(min_value=0, max_value=10**24)


@st.composite
def flows(draw: st.DrawFn) -> list[Flow]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        pool = draw(st.sampled_from(POOLS))
        tin, tout = draw(st.sampled_from([("USDC", "WETH"), ("WETH", "USDC")]))
        out.append(Flow(pool, tin, tout, draw(amounts), draw(amounts)))
    return out


def _sold_bought(fl: list[Flow], pool: str) -> tuple[dict[str, int], dict[str, int]]:
    sold = {"USDC": 0, "WETH": 0}
    bought = {"USDC": 0, "WETH": 0}
    for f in fl:
        if f.pool == pool:
            sold[f.token_in] += f.amount_in
            bought[f.token_out] += f.amount_out
    return sold, bought


@settings(max_examples=300, deadline=None)
@given(flows())
def test_conservation_and_cancel(fl: list[Flow]) -> None:
    try:
        rep = net_flows(fl)
    except ValueError:
        # Only when a pool pays out more of both tokens than it receives.
        assert any(
            all(b[t] > s[t] for t in s) for s, b in (_sold_bought(fl, p) for p in POOLS)
        )
        return
    for t in rep.trades:
        sold, bought = _sold_bought(fl, t.pool)
        assert t.gross_in == sold
        for tok in sold:
            # Conservation: everything sold in is matched, sent to the pool, or kept.
            assert t.matched[tok] + (t.amount_in if tok == t.token_in else 0) + t.kept[tok] == sold[tok]
            assert t.kept[tok] >= 0
            assert t.matched[tok] == min(sold[tok], bought[tok])
        # At most one direction reaches the pool, and never more than that side's surplus.
        assert t.amount_in <= sold[t.token_in]
    assert 0.0 <= rep.ratio <= 1.0


def test_opposite_flows_cancel_exactly() -> None:
    fl = [
        Flow("1:0xaa", "USDC", "WETH", 3000, 1),
        Flow("1:0xaa", "WETH", "USDC", 1, 3000),
    ]
    rep = net_flows(fl)
    (t,) = rep.trades
    assert not t.touches_pool
    assert rep.ratio == 1.0
    assert rep.pool_trades == ()


def test_one_direction_goes_to_the_pool_whole() -> None:
    rep = net_flows([Flow("1:0xaa", "USDC", "WETH", 5000, 2), Flow("1:0xbb", "WETH", "USDC", 1, 2900)])
    assert rep.ratio == 0.0
    assert [(t.pool, t.token_in, t.amount_in) for t in rep.pool_trades] == [("1:0xaa", "USDC", 5000), ("1:0xbb", "WETH", 1)]


def test_partial_cancel_ratio() -> None:
    # 6000 USDC in, 3000 USDC taken out by the opposite trade; 1 WETH in, 2 WETH out.
    rep = net_flows([Flow("1:0xaa", "USDC", "WETH", 6000, 2), Flow("1:0xaa", "WETH", "USDC", 1, 3000)])
    (t,) = rep.trades
    assert (t.token_in, t.amount_in) == ("USDC", 3000)
    assert t.matched == {"USDC": 3000, "WETH": 1}
    assert rep.ratio == pytest.approx(3001 / 6001)


def test_fees_leave_both_sides_in_surplus_and_no_pool_trade() -> None:
    rep = net_flows([Flow("1:0xaa", "USDC", "WETH", 100, 99), Flow("1:0xaa", "WETH", "USDC", 100, 99)])
    (t,) = rep.trades
    assert not t.touches_pool
    assert t.kept == {"USDC": 1, "WETH": 1}


def test_rejects_bad_flows() -> None:
    with pytest.raises(ValueError):
        net_flows([Flow("p", "A", "A", 1, 1)])
    with pytest.raises(ValueError):
        net_flows([Flow("p", "A", "B", -1, 1)])


def test_flows_from_routes_keeps_this_chains_pools() -> None:
    routes = [
        {"sourceId": "1:0xAA", "tokenIn": "USDC", "amountIn": "10", "amountOut": "1"},
        {"sourceId": "2:0xcc", "tokenIn": "USDC", "amountIn": "10", "amountOut": "1"},
        {"sourceId": "1:mm:0xdd:WETH-USDC", "tokenIn": "USDC", "amountIn": "10", "amountOut": "1"},
    ]
    fl = flows_from_routes(routes, {"1:0xaa": ("USDC", "WETH"), "2:0xcc": ("USDC", "WETH")}, chain_id=1)
    assert fl == [Flow("1:0xaa", "USDC", "WETH", 10, 1)]
