"""Router properties: exact sums, exact per-source math, optimality against baselines,
exact-out sufficiency, availability, inventory, gas and determinism."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.domain.book import Hold, VirtualBook
from app.domain.router import (
    ChainUnavailable,
    GasModel,
    InventoryExceeded,
    NoRoute,
    Route,
    Router,
    Side,
)
from app.domain.sources import (
    ConstantProductPool,
    InsufficientLiquidity,
    LadderSource,
    Level,
    Source,
    StableSwapPool,
)
from app.domain.types import Asset, AssetSymbol, ChainId, convert_amount

E18 = 10**18
USDC, DAI, WETH = AssetSymbol("USDC"), AssetSymbol("DAI"), AssetSymbol("WETH")
CHAINS = (ChainId(1), ChainId(2), ChainId(3))
FAR = 2**40
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_book(seed: int, n: int, with_weth: bool = False) -> VirtualBook:
    """USDC/DAI sources of every kind on three chains (USDC has 6 or 18 decimals)."""
    rng = random.Random(seed)
    dec = {c: rng.choice((6, 18)) for c in CHAINS}
    srcs: list[Source] = []
    for i in range(n):
        c = rng.choice(CHAINS)
        u, d = Asset(USDC, c, dec[c]), Asset(DAI, c, 18)
        depth = 10 ** rng.uniform(4, 7)
        kind = rng.random()
        if kind < 0.55:
            price = 1 + rng.uniform(-0.005, 0.005)
            srcs.append(ConstantProductPool(
                f"cp{i}", c, u, d, int(depth * 10**u.decimals), int(depth * price * E18),
                rng.choice((1, 5, 30, 100)),
            ))  # fmt: skip
        elif kind < 0.8:
            srcs.append(StableSwapPool(
                f"ss{i}", c, u, d, int(depth * 10**u.decimals),
                int(depth * rng.uniform(0.7, 1.4) * E18), rng.choice((1, 4)),
                amp=rng.choice((50, 500)),
            ))  # fmt: skip
        else:
            top = 1 + rng.uniform(-0.004, 0.002)
            levels = tuple(
                Level(int((top - k * 5e-4) * E18), int(depth / 5 * 10**u.decimals), FAR)
                for k in range(rng.randint(1, 5))
            )
            asks = tuple(Level(lv.price + E18 // 100, lv.size, FAR) for lv in levels)
            srcs.append(LadderSource(f"mm{i}", c, u, d, bids=levels, asks=asks))
    if with_weth:
        for c in CHAINS:
            u, d, w = Asset(USDC, c, dec[c]), Asset(DAI, c, 18), Asset(WETH, c, 18)
            srcs.append(
                ConstantProductPool(f"uw{c}", c, u, w, int(3e6 * 10**u.decimals), 1_000 * E18, 30)
            )
            srcs.append(ConstantProductPool(
                f"dw{c}", c, w, d, 2_000 * E18, int(6.03e6 * E18), 30))  # fmt: skip
    book = VirtualBook().with_assets(
        *(Asset(s, c, dec[c] if s == USDC else 18) for c in CHAINS for s in (USDC, DAI, WETH))
    )
    book = book.with_sources(*srcs)
    for c in CHAINS:
        for s in (USDC, DAI, WETH):
            book = book.with_inventory(c, s, 10**40)
    return book


def legs_are_exact(book: VirtualBook, route: Route) -> None:
    assert sum(s.amount_in for s in route.splits) == route.amount_in
    assert sum(s.amount_out for s in route.splits) == route.amount_out
    for split in route.splits:
        for leg in split.legs:
            src = book.sources[leg.source_id]
            assert src.chain == leg.chain
            assert src.amount_out(leg.token_in.symbol, leg.amount_in) == leg.amount_out
        if split.via is None:
            (leg,) = split.legs
            assert split.amount_out == convert_amount(
                leg.amount_out, leg.token_out.decimals, route.buy.decimals
            )
            paid = convert_amount(split.amount_in, route.sell.decimals, leg.token_in.decimals)
            if route.side is Side.EXACT_IN:
                assert leg.amount_in == paid
            else:  # a ladder may take less than the rounded-up payment; dust stays
                assert leg.amount_in <= paid
        else:
            hop0 = sum(
                leg.token_out.to_canonical(leg.amount_out) for leg in split.legs if leg.hop == 0
            )
            hop1 = sum(
                leg.token_in.to_canonical(leg.amount_in) for leg in split.legs if leg.hop == 1
            )
            assert hop1 <= hop0 < hop1 + len(split.legs) * 10**12
            assert split.amount_out == sum(
                convert_amount(leg.amount_out, leg.token_out.decimals, route.buy.decimals)
                for leg in split.legs
                if leg.hop == 1
            )


def single_out(src: Source, sell: Asset, buy: Asset, amount: int) -> int:
    tin = next(t for t in src.tokens if t.symbol == sell.symbol)
    tout = next(t for t in src.tokens if t.symbol == buy.symbol)
    native = convert_amount(amount, sell.decimals, tin.decimals)
    try:
        got = src.amount_out(tin.symbol, native) if native else 0
    except InsufficientLiquidity:
        return 0
    return convert_amount(got, tout.decimals, buy.decimals)


def splitter_5pct(srcs: tuple[Source, ...], sell: Asset, buy: Asset, amount: int) -> int:
    alloc, outs = [0] * len(srcs), [0] * len(srcs)
    chunk = amount // 20
    for k in range(20):
        step = chunk if k < 19 else amount - 19 * chunk
        gains = [single_out(s, sell, buy, alloc[i] + step) - outs[i] for i, s in enumerate(srcs)]
        i = max(range(len(srcs)), key=lambda j: (gains[j], -j))
        alloc[i] += step
        outs[i] += gains[i]
    return sum(outs)


orders = st.tuples(
    st.integers(0, 10_000),  # book seed
    st.integers(1, 12),  # sources
    st.floats(-6.0, -0.3),  # log10 of the order as a fraction of the deepest source
    st.sampled_from([(0, 0), (0, 1), (2, 1)]),  # (sell chain, buy chain) indices
)


def setup(order: tuple[int, int, float, tuple[int, int]]) -> tuple[VirtualBook, Asset, Asset, int]:
    """A book and an order it can absorb (orders beyond every source's capacity are
    covered by `test_bad_requests`)."""
    book, sell, buy, amount = _setup(order)
    try:
        Router(connectors=()).route_exact_in(book, sell, buy, amount)
    except NoRoute:
        assume(False)
    return book, sell, buy, amount


def _setup(order: tuple[int, int, float, tuple[int, int]]) -> tuple[VirtualBook, Asset, Asset, int]:
    seed, n, frac, (ca, cb) = order
    book = random_book(seed, n)
    sell, buy = book.asset(USDC, CHAINS[ca]), book.asset(DAI, CHAINS[cb])
    deepest = (
        max(
            s.tokens[0].to_canonical(s.balance0)
            for s in book.sources.values()
            if isinstance(s, (ConstantProductPool, StableSwapPool))
        )
        if any(not isinstance(s, LadderSource) for s in book.sources.values())
        else 10**24
    )
    amount = max(sell.from_canonical(int(deepest * 10**frac)), 1000)
    return book, sell, buy, amount


@SETTINGS
@given(orders)
def test_exact_in_sums_exactly_and_uses_exact_math(order: tuple) -> None:
    book, sell, buy, amount = setup(order)
    route = Router(connectors=()).route_exact_in(book, sell, buy, amount)
    assert route.amount_in == amount
    legs_are_exact(book, route)
    assert route.price_impact_bps >= 0


@SETTINGS
@given(orders)
def test_exact_in_beats_best_single_source_and_the_5pct_splitter(order: tuple) -> None:
    book, sell, buy, amount = setup(order)
    route = Router(connectors=()).route_exact_in(book, sell, buy, amount)
    srcs = book.sources_for(USDC, DAI)
    assert route.amount_out >= max(single_out(s, sell, buy, amount) for s in srcs)
    assert route.amount_out >= splitter_5pct(srcs, sell, buy, amount)


@SETTINGS
@given(orders)
def test_exact_out_delivers_with_minimal_input(order: tuple) -> None:
    book, sell, buy, amount = setup(order)
    router = Router(connectors=())
    want = router.route_exact_in(book, sell, buy, amount).amount_out
    route = router.route_exact_out(book, sell, buy, want)
    legs_are_exact(book, route)
    assert route.amount_out >= want
    # Never more input than the exact-in route that produced `want`, up to rounding.
    assert route.amount_in <= amount + amount // 10**5 + len(route.legs) + 1
    cheaper = route.amount_in - route.amount_in // 1_000 - 1
    if cheaper > 0:
        assert router.route_exact_in(book, sell, buy, cheaper).amount_out < want


@SETTINGS
@given(orders, st.integers(0, 2))
def test_unavailable_chain_is_never_used(order: tuple, down: int) -> None:
    book, sell, buy, amount = setup(order)
    chain = CHAINS[down]
    book = book.with_chain_available(chain, False, "halted")
    router = Router(connectors=())
    if chain in (sell.chain, buy.chain):
        with pytest.raises(ChainUnavailable):
            router.route_exact_in(book, sell, buy, amount)
        return
    try:
        route = router.route_exact_in(book, sell, buy, amount)
    except NoRoute:  # the chains left cannot absorb the order
        assert any(s.chain == chain for s in random_book(order[0], order[1]).sources.values())
        return
    assert all(leg.chain != chain for leg in route.legs)


@SETTINGS
@given(orders)
def test_inventory_and_reservations_bind_the_payout(order: tuple) -> None:
    book, sell, buy, amount = setup(order)
    router = Router(connectors=())
    out = router.route_exact_in(book, sell, buy, amount).amount_out
    tight = book.with_inventory(buy.chain, buy.symbol, out)
    assert router.route_exact_in(tight, sell, buy, amount).amount_out == out
    held = tight.reserve("other", holds=[Hold(buy.chain, buy.symbol, 1)])
    with pytest.raises(InventoryExceeded):
        router.route_exact_in(held, sell, buy, amount)
    with pytest.raises(InventoryExceeded):
        router.route_exact_out(held, sell, buy, out)


@SETTINGS
@given(orders)
def test_same_book_version_same_route(order: tuple) -> None:
    book, sell, buy, amount = setup(order)
    cached = Router(connectors=())
    a = cached.route_exact_in(book, sell, buy, amount)
    b = cached.route_exact_in(book, sell, buy, amount)
    c = Router(connectors=()).route_exact_in(random_book(order[0], order[1]), sell, buy, amount)
    assert a == b
    assert (a.splits, a.amount_out) == (c.splits, c.amount_out)


def test_multi_hop_through_a_connector_when_better() -> None:
    book = random_book(1, 0, with_weth=True)
    sell, buy = book.asset(USDC, CHAINS[0]), book.asset(DAI, CHAINS[1])
    amount = convert_amount(50_000 * 10**6, 6, sell.decimals)
    route = Router().route_exact_in(book, sell, buy, amount)
    assert {s.via for s in route.splits} == {WETH}
    legs_are_exact(book, route)
    assert {leg.hop for leg in route.legs} == {0, 1}
    with pytest.raises(NoRoute):
        Router(connectors=()).route_exact_in(book, sell, buy, amount)
    # With direct pools as good as the path's first hop, both are used.
    mixed = random_book(3, 8, with_weth=True)
    r2 = Router().route_exact_in(mixed, sell, buy, amount)
    legs_are_exact(mixed, r2)
    direct_only = Router(connectors=()).route_exact_in(mixed, sell, buy, amount)
    assert r2.amount_out >= direct_only.amount_out
    out = Router().route_exact_out(book, sell, buy, route.amount_out)
    assert out.amount_out >= route.amount_out
    assert out.amount_in <= amount * 1_0001 // 1_0000


def test_gas_drops_sources_that_cost_more_than_they_add() -> None:
    c = CHAINS[0]
    u, d, w = Asset(USDC, c, 6), Asset(DAI, c, 18), Asset(WETH, c, 18)
    big = ConstantProductPool("big", c, u, d, 10**7 * 10**6, 10**7 * E18, 5)
    tiny = ConstantProductPool("tiny", c, u, d, 10**4 * 10**6, 10**4 * E18, 5)
    eth = ConstantProductPool("eth", c, w, d, 1_000 * E18, 3 * 10**6 * E18, 30)
    book = VirtualBook().with_sources(big, tiny, eth).with_inventory(c, DAI, 10**30)
    amount = 20_000 * 10**6
    free = Router(connectors=()).route_exact_in(book, u, d, amount)
    assert {leg.source_id for leg in free.legs} == {"big", "tiny"}
    gas = GasModel({c: 50 * 10**9}, WETH, batch_size=1)
    priced = Router(connectors=(), gas=gas).route_exact_in(book, u, d, amount)
    assert {leg.source_id for leg in priced.legs} == {"big"}
    # Both pools cost the same gas: the two-pool split would net less after paying it twice.
    assert priced.net_out >= free.amount_out - 2 * priced.gas_cost
    (line,) = priced.gas
    assert line.units == big.gas_units and line.cost > 0


def test_expired_levels_are_not_routed() -> None:
    c = CHAINS[0]
    u, d = Asset(USDC, c, 6), Asset(DAI, c, 18)
    mm = LadderSource("mm", c, u, d, bids=(Level(E18 * 101 // 100, 10**12, 100),))
    pool = ConstantProductPool("p", c, u, d, 10**12, 10**24, 30)
    book = VirtualBook().with_sources(mm, pool).with_inventory(c, DAI, 10**30)
    router = Router(connectors=())
    assert {leg.source_id for leg in router.route_exact_in(book, u, d, 10**6, now=99).legs} == {
        "mm"
    }
    assert {leg.source_id for leg in router.route_exact_in(book, u, d, 10**6, now=100).legs} == {
        "p"
    }


def test_bad_requests() -> None:
    book = random_book(5, 4)
    sell, buy = book.asset(USDC, CHAINS[0]), book.asset(DAI, CHAINS[1])
    with pytest.raises(ValueError):
        Router().route_exact_in(book, sell, buy, 0)
    with pytest.raises(NoRoute):
        Router().route_exact_in(book, sell, book.asset(USDC, CHAINS[1]), 10)
    with pytest.raises(NoRoute):
        Router().route_exact_in(book, sell, book.asset(WETH, CHAINS[1]), 10)
    c = CHAINS[0]
    u, d = Asset(USDC, c, 6), Asset(DAI, c, 18)
    only_mm = (
        VirtualBook()
        .with_sources(LadderSource("mm", c, u, d, bids=(Level(E18, 10**6, FAR),)))
        .with_inventory(c, DAI, 10**30)
    )
    assert Router().route_exact_in(only_mm, u, d, 10**6).amount_out == E18
    with pytest.raises(NoRoute):
        Router().route_exact_in(only_mm, u, d, 10**6 + 1)
    with pytest.raises(NoRoute):
        Router().route_exact_out(only_mm, u, d, E18 + 1)


def test_price_comes_from_every_chain_and_payout_from_the_buy_chain() -> None:
    a, b, c = CHAINS
    pool = ConstantProductPool(
        "far", c, Asset(USDC, c, 6), Asset(DAI, c, 18), 10**6 * 10**6, 10**6 * E18, 5
    )
    book = (
        VirtualBook()
        .with_assets(Asset(USDC, a, 18), Asset(DAI, b, 18))
        .with_sources(pool)
        .with_inventory(b, DAI, 10**30)
    )
    sell, buy = book.asset(USDC, a), book.asset(DAI, b)
    route = Router().route_exact_in(book, sell, buy, 1_000 * E18)
    (leg,) = route.legs
    assert leg.chain == c and leg.amount_in == 1_000 * 10**6
    assert route.amount_out == pool.amount_out(USDC, 1_000 * 10**6)
    with pytest.raises(InventoryExceeded):  # the payout chain's inventory binds
        Router().route_exact_in(book.with_inventory(b, DAI, 10), sell, buy, 1_000 * E18)


@SETTINGS
@given(orders, st.integers(1, 3))
def test_exclusions_and_max_sources(order: tuple, cap: int) -> None:
    book, sell, buy, amount = setup(order)
    router = Router(connectors=())
    full = router.route_exact_in(book, sell, buy, amount)
    used = sorted({leg.source_id for leg in full.legs})
    try:
        limited = router.route_exact_in(book, sell, buy, amount, max_sources=cap)
    except NoRoute:  # only when no `cap` sources can absorb the order
        assert len(used) > cap
        return
    assert len({leg.source_id for leg in limited.legs}) <= cap
    assert limited.amount_out <= full.amount_out
    legs_are_exact(book, limited)
    if len(book.sources) > 1:
        try:
            without = router.route_exact_in(book, sell, buy, amount, exclude_sources=used[:1])
        except NoRoute:
            return
        assert used[0] not in {leg.source_id for leg in without.legs}
        assert without.amount_out <= full.amount_out
