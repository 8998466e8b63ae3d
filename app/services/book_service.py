"""The live virtual book: one chain adapter per chain feeding one `VirtualBook`.

Adapters publish `ChainUpdate`s (new head, changed pools, inventory balances,
availability); each becomes the next book version. Quotes read `self.book`, an immutable
snapshot, so no quote ever waits for a chain or sees a half-applied update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from adapters.chain import ChainAdapter, ChainUpdate
from app.domain.book import Hold, InsufficientInventory, Reservation, VirtualBook
from app.domain.sources import (
    ConstantProductPool,
    InsufficientLiquidity,
    LadderSource,
    Source,
    StableSwapPool,
    Trade,
)
from app.domain.types import Address, Asset, AssetSymbol, ChainId
from app.manifest import Manifest

__all__ = ["BookService", "ChainHead", "LevelTaken"]

log = logging.getLogger("crossbook.book")


class LevelTaken(InsufficientLiquidity):
    """A confirmation's route uses maker levels an earlier confirmation has taken."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    chain_id: int
    block_number: int
    block_hash: str
    timestamp: int
    available: bool
    reason: str = ""


class BookService:
    def __init__(
        self,
        manifest: Manifest,
        *,
        gas_units: dict[str, int] | None = None,
        stall_after: float | None = None,
    ) -> None:
        self.manifest = manifest
        assets = [
            Asset(AssetSymbol(t.symbol), ChainId(c.chain_id), t.decimals, Address(t.address))
            for c in manifest.chains
            for t in c.tokens.values()
        ]
        book = VirtualBook().with_assets(*assets)
        for c in manifest.chains:
            book = book.with_chain_available(ChainId(c.chain_id), False, "connecting")
        self.book = book
        self.heads: dict[int, ChainHead] = {
            c.chain_id: ChainHead(c.chain_id, -1, "", 0, False, "connecting") for c in manifest.chains
        }
        self._symbol_of = {
            (c.chain_id, t.address.lower()): AssetSymbol(t.symbol) for c in manifest.chains for t in c.tokens.values()
        }
        self._inventory = {c.chain_id: c.inventory.lower() for c in manifest.chains}
        # Token balances and allowances (to the vault) of every tracked account, as the
        # adapters last read them: (chain id, token, account), lower-case addresses.
        self.balances: dict[tuple[int, str, str], int] = {}
        self.allowances: dict[tuple[int, str, str], int] = {}
        # Each pool as the chain last showed it, and the trades of confirmed orders not
        # yet settled on it: the book shows chain state with those trades applied, so a
        # new block never "un-reserves" liquidity that confirmed orders hold.
        self.chain_sources: dict[str, Source] = {}
        self.pending: dict[str, tuple[Trade, ...]] = {}
        # The same trades by source, for re-applying them when the chain moves a pool.
        self._pending_on: dict[str, dict[tuple[str, int], Trade]] = {}
        # Their sums per source and input token, [amount in, amount out]: a pool's trades
        # move its balances by fixed amounts, so all of them apply at once (below).
        self._pending_net: dict[str, dict[str, list[int]]] = {}
        self._queue: dict[str, Reservation] = {}
        self._queued_holds: dict[tuple[ChainId, AssetSymbol], int] = {}
        self._releases: set[str] = set()
        self._tracking: dict[tuple[int, str], asyncio.Future[None]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self.adapters = {
            c.chain_id: ChainAdapter(c, self.apply, gas_units=gas_units, stall_after=stall_after)
            for c in manifest.chains
        }
        self._tasks: list[asyncio.Task[None]] = []
        # Called with a chain id after its tracked balances or allowances changed (the
        # maker hub trims ladders to what makers can pay).
        self.balance_listeners: list[Callable[[int], None]] = []

    def apply(self, u: ChainUpdate) -> None:
        """Turn one adapter update into the next book version (synchronous, no I/O)."""
        cid = ChainId(u.chain_id)
        book = self.book
        if u.sources:
            self.chain_sources.update(u.sources)
            book = book.with_sources(*(self._with_pending(sid) for sid in u.sources))
        inv = self._inventory[u.chain_id]
        for (token, account), balance in u.balances.items():
            self.balances[(u.chain_id, token, account)] = balance
            if account == inv:
                book = book.with_inventory(cid, self._symbol_of[(u.chain_id, token)], balance)
        for (token, account), allowance in u.allowances.items():
            self.allowances[(u.chain_id, token, account)] = allowance
        if book.is_available(cid) != u.available:
            book = book.with_chain_available(cid, u.available, u.reason)
            log.log(
                logging.INFO if u.available else logging.WARNING,
                "chain availability changed",
                extra={"chainId": u.chain_id, "available": u.available, "reason": u.reason},
            )
        self.book = book
        self.heads[u.chain_id] = ChainHead(u.chain_id, u.block_number, u.block_hash, u.timestamp, u.available, u.reason)
        if u.balances or u.allowances:
            for listener in self.balance_listeners:  # after the swap: listeners may update the book
                listener(u.chain_id)

    def _with_pending(self, source_id: str) -> Source:
        """The source as the chain shows it, with the pending trades on it applied.

        A pool's trade adds its input to one balance and takes its output from the other
        (`apply`), so its pending trades apply as their sums: the same integers as one by
        one, in constant time. One by one, every block that moved a busy pool and every
        release cost a pass over all its open orders' trades (~10 ms per pool at 4,000
        open orders, on the event loop). A maker's ladder is walked trade by trade."""
        src = self.chain_sources[source_id]
        on = self._pending_on.get(source_id)
        if not on:
            return src
        if isinstance(src, ConstantProductPool | StableSwapPool):
            net = self._pending_net.get(source_id, {})
            in0, out0 = net.get(src.token0.symbol, (0, 0))  # trades selling token0 for token1
            in1, out1 = net.get(src.token1.symbol, (0, 0))
            return replace(src, balance0=src.balance0 + in0 - out1, balance1=src.balance1 + in1 - out0)
        for trade in on.values():
            src = src.apply(trade)
        return src

    def _net(self, trade: Trade, sign: int) -> None:
        sums = self._pending_net.setdefault(trade.source_id, {}).setdefault(trade.token_in, [0, 0])
        sums[0] += sign * trade.amount_in
        sums[1] += sign * trade.amount_out

    # Confirmations join the book in batches: every new book version costs the router a
    # plan rebuild on the next quote, so one version per confirmation would make each
    # quote after a swap pay for it. Inventory is checked at once against what is free
    # (the Lua step in Redis stays the authority); the book shows the trades within
    # FLUSH_SECONDS. Releases (settled orders) are batched the same way.
    FLUSH_SECONDS = 0.05

    def reserve(self, reservation_id: str, trades: Sequence[Trade], holds: Sequence[Hold], *, now: bool = False) -> None:
        """Hold pool liquidity and payout inventory for a confirmed order. Raises
        `InsufficientInventory` (and keeps nothing) when the holds do not fit."""
        need: dict[tuple[ChainId, AssetSymbol], int] = {}
        for h in holds:
            need[(h.chain, h.symbol)] = need.get((h.chain, h.symbol), 0) + h.amount
        for (chain, sym), amount in need.items():
            free = self.book.available_inventory(chain, sym) - self._queued_holds.get((chain, sym), 0)
            if amount > free:
                raise InsufficientInventory(f"{sym}@{chain}: need {amount}, free {free}")
        if any(isinstance(self.book.sources.get(t.source_id), LadderSource) for t in trades):
            # A maker's level is firm and finite: never batched. Earlier confirmations go
            # into the book first, then this one is checked against what they left.
            self.flush()
            self._check_ladders(trades)
            now = True
        self._queue[reservation_id] = Reservation(reservation_id, tuple(trades), tuple(holds))
        for key, amount in need.items():
            self._queued_holds[key] = self._queued_holds.get(key, 0) + amount
        self._schedule(now)

    def _check_ladders(self, trades: Sequence[Trade]) -> None:
        """Raise `LevelTaken` unless every ladder trade still gets its output from the
        levels as the book now holds them (trades in order: two on one ladder stack)."""
        state: dict[str, Source] = {}
        for t in trades:
            src = state.get(t.source_id) or self.book.sources.get(t.source_id)
            if not isinstance(src, LadderSource):
                continue
            try:
                got = src.amount_out(t.token_in, t.amount_in)
            except InsufficientLiquidity:
                got = -1
            if got < t.amount_out:
                raise LevelTaken(f"maker levels of {t.source_id} no longer pay {t.amount_out} for {t.amount_in}")
            state[t.source_id] = src.apply(t)

    def _schedule(self, now: bool) -> None:
        if now:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
            else:
                self._flush_handle = loop.call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Apply every queued reservation and release to the book: one new version."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        queue, self._queue, self._queued_holds = self._queue, {}, {}
        releases, self._releases = self._releases, set()
        book = self.book
        if releases:
            book = self._released(book, releases)
        if queue:
            book, dropped = book.reserve_many(queue.values())
            for r in dropped:
                # The chain moved under it since the check (inventory left the vault, a
                # source vanished): the order stands (Redis holds it), the view is partial.
                log.warning("reservation applied without its trades", extra={"reservationId": r.id})
                queue[r.id] = Reservation(r.id)
            for rid, r in queue.items():
                self.pending[rid] = r.trades
                for k, trade in enumerate(r.trades):
                    self._pending_on.setdefault(trade.source_id, {})[(rid, k)] = trade
                    self._net(trade, 1)
        self.book = book

    @property
    def open_reservations(self) -> int:
        return len(self.pending) + len(self._queue) - len(self._releases)

    def release(self, reservation_id: str) -> None:
        """Drop a reservation (refused, settled or failed order). A queued one goes at
        once; an applied one leaves the book with the next flush."""
        r = self._queue.pop(reservation_id, None)
        if r is not None:
            for h in r.holds:
                self._queued_holds[(h.chain, h.symbol)] -= h.amount
            return
        if reservation_id in self.pending:
            self._releases.add(reservation_id)
            self._schedule(False)

    def _released(self, book: VirtualBook, ids: set[str]) -> VirtualBook:
        book = book.release(*ids)
        touched: set[str] = set()
        for rid in ids:
            for k, trade in enumerate(self.pending.pop(rid, ())):
                on = self._pending_on.get(trade.source_id)
                if on is not None and on.pop((rid, k), None) is not None:
                    self._net(trade, -1)
                    if not on:
                        del self._pending_on[trade.source_id]
                        self._pending_net.pop(trade.source_id, None)
                if trade.source_id in self.chain_sources:
                    touched.add(trade.source_id)
        if touched:
            book = book.with_sources(*(self._with_pending(sid) for sid in sorted(touched)))
        return book

    async def funds(self, chain_id: int, token: str, account: str) -> tuple[int, int]:
        """(balance, allowance to the vault) of `account` in `token` on `chain_id`, from the
        adapter's view; on a miss, one RPC batch, after which the adapter follows it.
        Concurrent misses for one account share that batch (a burst of a new trader's
        swaps must not become a burst of RPCs)."""
        key = (chain_id, token.lower(), account.lower())
        if key not in self.balances or key not in self.allowances:
            track_key = (chain_id, account.lower())
            task = self._tracking.get(track_key)
            if task is None:
                task = self._tracking[track_key] = asyncio.ensure_future(self._track(chain_id, account))
                task.add_done_callback(lambda _t: self._tracking.pop(track_key, None))
            await asyncio.shield(task)
        return self.balances[key], self.allowances[key]

    async def _track(self, chain_id: int, account: str) -> None:
        balances, allowances = await self.adapters[chain_id].track(account)
        for (tok, acc), v in balances.items():
            self.balances.setdefault((chain_id, tok, acc), v)
        for (tok, acc), v in allowances.items():
            self.allowances.setdefault((chain_id, tok, acc), v)

    # -- market-maker ladders (the maker hub owns them; the router prices them like pools) --

    def set_maker_levels(self, ladder: LadderSource) -> None:
        """Add or replace a maker's ladder on one chain and pair (by source id)."""
        self.book = self.book.with_sources(ladder)

    def remove_maker_levels(self, *source_ids: str) -> None:
        gone = [sid for sid in source_ids if isinstance(self.book.sources.get(sid), LadderSource)]
        if gone:
            self.book = self.book.without_sources(*gone)

    def remove_maker(self, maker: str) -> None:
        """Pull every ladder of `maker` at once (one new book version)."""
        low = maker.lower()
        self.remove_maker_levels(
            *(sid for sid, s in self.book.sources.items() if isinstance(s, LadderSource) and s.maker == low)
        )

    def expire_levels(self, now: int) -> None:
        """Drop maker levels that expired at or before `now` (unix seconds)."""
        self.book = self.book.expire(now)

    async def start(self, ready_timeout: float = 10.0) -> None:
        self._tasks = [asyncio.create_task(a.run(), name=f"adapter-{cid}") for cid, a in self.adapters.items()]
        waits = [a.wait_ready(ready_timeout) for a in self.adapters.values()]
        results = await asyncio.gather(*waits, return_exceptions=True)
        for cid, r in zip(self.adapters, results, strict=True):
            if isinstance(r, BaseException):
                log.warning("chain not ready at start; it stays unavailable until it answers", extra={"chainId": cid})

    async def stop(self) -> None:
        for a in self.adapters.values():
            a.stop()
        for t in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(t, 5)
        self._tasks.clear()
