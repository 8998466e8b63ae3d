"""Pure parts of the maker and pool legs: fills from an order document, pool routes, the
pool twins' minimum output, leg builders, and the matching of MakerLeg/PoolTrade events."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.amm import InsufficientLiquidity
from app.domain.amm import constant_product as cp
from app.domain.amm import stableswap as ss
from app.domain.order import maker_in_leg, maker_out_leg, pool_leg
from settlement.lifecycle import outcomes
from settlement.netting import PoolState, expected_out, min_out
from settlement.rebalance import maker_fills, pool_routes
from settlement.vault import MakerLeg, PoolTrade
from settlement.zk.legs import LegKind, order_ref_from_hash

MAKER = "0x" + "ab" * 20
POOL = "0x" + "cd" * 20
OID = "0x" + "11" * 32


def _doc(route: list[dict[str, str]], rfq: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": OID, "sellSymbol": "WETH", "buySymbol": "USDC", "route": route, "rfq": rfq,
            "legs": [{"kind": "pull"}, {"kind": "payout", "chainId": 2, "logIndex": None}]}


def test_maker_fills_from_ladder_routes_and_rfq() -> None:
    route = [
        {"sourceId": f"2:mm:{MAKER}:WETH-USDC", "tokenIn": "WETH", "amountIn": "100", "amountOut": "300000"},
        {"sourceId": f"2:{POOL}", "tokenIn": "WETH", "amountIn": "5", "amountOut": "15000"},
        {"sourceId": f"3:mm:{MAKER}:WETH-USDC", "tokenIn": "USDC", "amountIn": "7000", "amountOut": "2"},
    ]
    fills = maker_fills(_doc(route))
    # The trader sold WETH to the maker's bid on chain 2: the maker sold USDC, bought WETH.
    assert [(f.chain_id, f.maker, f.sold_symbol, f.sold_amount, f.bought_symbol, f.bought_amount) for f in fills] == [
        (2, MAKER, "USDC", 300000, "WETH", 100),
        (3, MAKER, "WETH", 2, "USDC", 7000),
    ]
    rfq = {"rfqId": "q1", "chainId": 3, "maker": MAKER.upper().replace("0X", "0x"), "makerAmount": "999", "takerAmount": "1"}
    (f,) = maker_fills(_doc([], rfq))
    assert (f.chain_id, f.maker, f.sold_symbol, f.sold_amount, f.bought_symbol, f.bought_amount) == (3, MAKER, "USDC", 999, "WETH", 1)
    assert pool_routes(_doc(route)) == {2: [route[1]]}
    assert pool_routes(_doc([], rfq)) == {}


def test_leg_builders() -> None:
    digest = bytes.fromhex(OID[2:])
    i, o, p = maker_in_leg(MAKER, 1, 300, digest), maker_out_leg(MAKER, 3, 7, digest), pool_leg(POOL, 3, 10**18)
    assert (i.kind, i.account, i.token, i.amount, i.min_amount) == (LegKind.MAKER_IN, int(MAKER, 16), 1, 300, 0)
    assert (o.kind, o.token, o.amount, o.min_amount) == (LegKind.MAKER_OUT, 3, 7, 0)
    assert i.order_ref == o.order_ref == order_ref_from_hash(digest)
    assert (p.kind, p.account, p.token, p.amount, p.min_amount, p.order_ref) == (LegKind.POOL, int(POOL, 16), 3, 10**18, 0, 0)


def test_expected_out_is_the_twin_and_min_out_rounds_down() -> None:
    st = PoolState("constant_product", "USDC", "WETH", 3_000_000 * 10**6, 1000 * 10**18, 30)
    assert expected_out(st, "WETH", 10**18) == cp.get_amount_out(10**18, 1000 * 10**18, 3_000_000 * 10**6, 30)
    assert expected_out(st, "USDC", 3000 * 10**6) == cp.get_amount_out(3000 * 10**6, 3_000_000 * 10**6, 1000 * 10**18, 30)
    stable = PoolState("stableswap", "USDC", "DAI", 10**12, 10**24, 4, amp=200, decimals0=6, decimals1=18)
    got = expected_out(stable, "USDC", 10**9)
    assert got == ss.get_amount_out(10**9, 10**12, 10**24, ss.rate_for_decimals(6), ss.rate_for_decimals(18), 200, 4)
    assert 999 * 10**15 < got < 10**21
    assert min_out(10_000, 50) == 9_950 and min_out(10_001, 50) == 9_950 and min_out(7, 0) == 7
    with pytest.raises(ValueError):
        expected_out(st, "DAI", 1)
    with pytest.raises(ValueError):
        min_out(1, 10_001)
    with pytest.raises(InsufficientLiquidity):
        expected_out(PoolState("constant_product", "USDC", "WETH", 0, 1, 30), "USDC", 1)


def test_outcomes_match_maker_and_pool_events() -> None:
    legs = [{"kind": "maker_in"}, {"kind": "maker_out"}, {"kind": "pool"}, {"kind": "pool"}, {"kind": "maker_in"}]
    events: list[Any] = [MakerLeg(10, True), MakerLeg(11, True), PoolTrade(12, 555), PoolTrade(13, 0), MakerLeg(14, False)]
    outs = outcomes(10, legs, events)
    assert [(o.index, o.ok, o.amount_out) for o in outs] == [(10, True, 0), (11, True, 0), (12, True, 555), (13, False, 0), (14, False, 0)]
    assert "failed" in outs[4].reason
    with pytest.raises(ValueError, match="PoolTrade"):
        outcomes(10, legs[:3], events[:2])
    with pytest.raises(ValueError, match="MakerLeg"):
        outcomes(10, legs[:1], [])
