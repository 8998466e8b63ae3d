"""Background followers of the settlement pipeline, inside the API process.

- Order notices (`orders:*` on Redis, published by the API and the settlement workers):
  once an order's payout has settled, or the order ended (failed, refunded, finalized),
  its in-memory book reservation is released: the vault's inventory now shows the payout
  (the adapters follow it), and the reservation would otherwise count it twice.
- Measured proof times (written by the prover): the settlement windows, and so the ETAs
  in quotes and order status, use the prover's real speed instead of the default.
- The fast tier's switches (settlement/tier.py): a quote does not promise `fast` for
  pulls on a chain whose tier is off (at most `tier_refresh` late; the settle worker reads
  the switch itself when it decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from typing import Any

from app.json_codec import loads
from settlement.batching import Keys
from settlement.tier import Switch, switch_key
from settlement.zk.batch import capacity_for

__all__ = ["RELEASE_STATES", "Followers"]

log = logging.getLogger("crossbook.followers")

RELEASE_STATES = frozenset({"settled", "finalized", "failed", "refunded"})


class Followers:
    def __init__(self, redis: Any, books: Any, quotes: Any, *, proof_refresh: float = 10.0, tier_refresh: float = 1.0) -> None:
        self.redis = redis
        self.books = books
        self.quotes = quotes
        self.proof_refresh = proof_refresh
        self.tier_refresh = tier_refresh
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._orders()), asyncio.create_task(self._proof_times()), asyncio.create_task(self._tier_switches()),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    def on_notice(self, data: bytes | str) -> None:
        try:
            event = json.loads(data)
        except (ValueError, TypeError):
            return
        if event.get("state") in RELEASE_STATES:
            self.books.release(event["orderId"])

    async def _orders(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe("orders:*")
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None:
                        self.on_notice(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis restarting: resubscribe; nothing is lost (see below)
                log.warning("order notices interrupted; resubscribing", extra={"error": str(e)})
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            # Notices are at-most-once: catch up from the ledger after an interruption.
            with contextlib.suppress(Exception):
                await self._catch_up()

    async def _catch_up(self) -> None:
        ids = list(self.books.pending)
        for k in range(0, len(ids), 500):  # MGET in chunks: one round trip per 500 orders
            chunk = ids[k : k + 500]
            for oid, raw in zip(chunk, await self.redis.mget([f"order:{o}" for o in chunk]), strict=True):
                if raw and loads(raw).get("state") in RELEASE_STATES:  # orjson: thousands per pass
                    self.books.release(oid)

    async def _proof_times(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                for cid, policy in list(self.quotes.policies.items()):
                    cap = capacity_for(min(max(policy.target_batch, 1), 64))
                    v = await self.redis.get(Keys.prooftime(cap))
                    if v is not None:
                        self.quotes.policies[cid] = dataclasses.replace(policy, proof_seconds=float(v))
                await self._catch_up()
            await asyncio.sleep(self.proof_refresh)

    async def _tier_switches(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                rules = self.quotes.tiers
                off = {}
                for cid in rules.limits:
                    sw = Switch.from_hash(await self.redis.hgetall(switch_key(cid)))
                    if not sw.on:
                        off[cid] = sw.reason or "turned off"
                if off != dict(rules.off):
                    self.quotes.tiers = dataclasses.replace(rules, off=off)
            await asyncio.sleep(self.tier_refresh)
