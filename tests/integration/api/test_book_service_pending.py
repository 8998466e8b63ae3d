"""The book shows each pool as the chain last showed it plus its open orders' trades:
applied as sums, they must give exactly what applying them one by one gives, through
reservations, releases and chain updates (a real devnet manifest; no I/O is started)."""

from __future__ import annotations

import random

import pytest

from adapters.chain import ChainUpdate
from app.domain.book import Hold
from app.domain.sources import (
    ConstantProductPool,
    LadderSource,
    Level,
    Source,
    StableSwapPool,
    Trade,
)
from app.domain.types import AssetSymbol, ChainId
from app.services.book_service import BookService
from scripts.devnet.devnet import Devnet

pytestmark = pytest.mark.integration

E18 = 10**18


def _one_by_one(src: Source, trades: list[Trade]) -> Source:
    for t in trades:
        src = src.apply(t)
    return src


def test_pending_trades_as_sums_equal_one_by_one(devnet: Devnet) -> None:
    m = devnet.manifest
    assert m is not None
    books = BookService(m)
    cid = ChainId(m.chains[0].chain_id)
    weth, usdc, usdt = (books.book.asset(AssetSymbol(s), cid) for s in ("WETH", "USDC", "USDT"))
    cp = ConstantProductPool("t:cp", cid, weth, usdc, 1_000 * E18, 3_000_000 * 10**6, 30)
    ss = StableSwapPool("t:ss", cid, usdc, usdt, 5_000_000 * 10**6, 5_000_000 * 10**6, 4, amp=200)
    far = 2**40
    mm = LadderSource("t:mm", cid, weth, usdc, bids=tuple(Level((3_000 - k) * E18, 5 * E18, far) for k in range(20)))
    books.apply(ChainUpdate(int(cid), 1, "0x01", 0, sources={s.id: s for s in (cp, ss, mm)}))

    rng = random.Random(5)
    placed: dict[str, list[Trade]] = {}
    for k in range(300):
        src = rng.choice((cp, ss, mm))
        if src is mm:
            trade = Trade(mm.id, weth.symbol, rng.randrange(10**15, 10**17), 0)
            trade = Trade(mm.id, weth.symbol, trade.amount_in, mm.amount_out(weth.symbol, trade.amount_in))
        else:
            a = src.token0 if rng.random() < 0.5 else src.token1
            amount_in = rng.randrange(1, 10 ** (a.decimals + 1))
            trade = Trade(src.id, a.symbol, amount_in, src.amount_out(a.symbol, amount_in))
        books.reserve(f"r{k}", [trade], [Hold(cid, usdc.symbol, 0)], now=k % 7 == 0)
        placed[f"r{k}"] = [trade]
    books.flush()

    def expect(chain: dict[str, Source]) -> None:
        for sid, base in chain.items():
            trades = [t for rid, ts in placed.items() for t in ts if t.source_id == sid]
            assert books.book.sources[sid] == _one_by_one(base, trades), sid

    expect({s.id: s for s in (cp, ss, mm)})
    # Half the orders settle (in several flushes), then the chain moves two pools.
    for rid in rng.sample(sorted(placed), 150):
        books.release(rid)
        del placed[rid]
        if rng.random() < 0.1:
            books.flush()
    books.flush()
    expect({s.id: s for s in (cp, ss, mm)})
    cp2 = ConstantProductPool(cp.id, cid, weth, usdc, cp.balance0 + 7 * E18, cp.balance1 - 20_000 * 10**6, 30)
    ss2 = StableSwapPool(ss.id, cid, usdc, usdt, ss.balance0 - 10**9, ss.balance1 + 10**9, 4, amp=200)
    books.apply(ChainUpdate(int(cid), 2, "0x02", 0, sources={cp2.id: cp2, ss2.id: ss2}))
    expect({cp2.id: cp2, ss2.id: ss2, mm.id: mm})
    # Every order settled: the pools are the chain's again.
    for rid in list(placed):
        books.release(rid)
    placed.clear()
    books.flush()
    assert books.book.sources[cp.id] == cp2 and books.book.sources[ss.id] == ss2 and books.book.sources[mm.id] == mm
