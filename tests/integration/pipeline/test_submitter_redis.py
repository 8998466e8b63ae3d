"""Submitter decisions on a real Redis with a scripted chain: estimate reverts (behind,
duplicate, real), the revert backoff, and a vanished receipt (reorg) re-broadcast."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from settlement.batching import BatchState, Keys, save_batch
from settlement.submitter import ChainContext, backing_off, follow_open, submit_batch

CHAIN = 9


class ScriptedChain:
    def __init__(self) -> None:
        self.cursor_index = 0
        self.revert: Exception | None = ValueError("execution reverted")
        self.receipts: dict[str, dict[str, Any] | None] = {}
        self.sent: list[str] = []
        self.h = 100
        self.hashes: dict[int, str] = {}

    def head(self) -> int:
        return self.h

    def block_hash(self, number: int) -> str | None:
        return self.hashes.get(number)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        return self.receipts.get(tx_hash)

    def send_raw(self, raw: str) -> None:
        self.sent.append(raw)

    def pending_nonce(self, address: str) -> int:
        return 0

    def cursor(self, vault: str, block: int | str = "latest") -> tuple[int, int]:
        return self.cursor_index, 0

    def estimate(self, tx: dict[str, Any]) -> int:
        if self.revert is not None:
            raise self.revert
        return 500_000

    def gas_price(self) -> int:
        return 10**9

    def balance(self, token: str, holder: str, block: int | str = "latest") -> int:
        return 0

    def logs(self, address: str, topic0: bytes, from_block: int, to_block: int) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def setup(redis_url: str) -> tuple[redis.Redis, ChainContext, ScriptedChain]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    port = ScriptedChain()
    ctx = ChainContext(CHAIN, "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 32, 3, 1.0, {}, [], port)
    return r, ctx, port


def _proved(r: redis.Redis, n: int, start: int) -> None:
    # No legs: the settle calldata is built but the scripted estimate decides.
    doc = {"chainId": CHAIN, "number": n, "start": start, "count": 2, "oldHead": "0", "newHead": "0", "legs": [],
           "state": BatchState.PROVED, "capacity": 16, "proof": ["1"] * 8, "cutAt": time.time(), "history": []}
    save_batch(r, doc)
    r.set(Keys.lock(CHAIN), str(n))


def test_estimate_reverts(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    r, ctx, port = setup
    import settlement.submitter as sub

    monkeypatch.setattr(sub, "settle_call", lambda *a, **k: None)
    monkeypatch.setattr(sub, "encode_settle", lambda call: b"\x00")
    # Cursor behind the batch (an earlier batch being re-sent): stays proven, lock kept.
    _proved(r, 1, start=4)
    port.cursor_index = 2
    assert submit_batch(r, ctx, 1)["state"] == BatchState.PROVED  # type: ignore[index]
    assert r.get(Keys.lock(CHAIN)) == "1"
    # Cursor past the batch: a duplicate, nothing to redo, lock released, no revert count.
    port.cursor_index = 6
    assert submit_batch(r, ctx, 1)["state"] == BatchState.REVERTED  # type: ignore[index]
    assert r.get(Keys.lock(CHAIN)) is None and r.get(f"stl:{CHAIN}:reverts:4") is None
    # A real revert at the cursor: counted; past the free tries, the chain backs off.
    port.cursor_index = 4
    for k, n in enumerate((2, 3, 4), start=1):
        _proved(r, n, start=4)
        assert submit_batch(r, ctx, n)["state"] == BatchState.REVERTED  # type: ignore[index]
        assert int(r.get(f"stl:{CHAIN}:reverts:4")) == k
        assert backing_off(r, CHAIN) == (k > 2)
    assert port.sent == []


def test_vanished_receipt_is_rebroadcast_and_remined(setup: Any) -> None:
    r, ctx, port = setup
    doc = {"chainId": CHAIN, "number": 7, "start": 0, "count": 0, "oldHead": "0", "newHead": "0", "legs": [],
           "state": BatchState.MINED, "txHash": "0xt", "rawTx": "0xraw", "block": 98, "blockHash": "0xb98",
           "cutAt": 0, "history": []}
    save_batch(r, doc)
    r.sadd(Keys.open(CHAIN), "7")
    port.receipts["0xt"] = None  # the block with it was reorged out
    follow_open(r, ctx)
    cur = json.loads(r.get(Keys.batch(CHAIN, 7)))
    assert cur["state"] == BatchState.SIGNED and cur["reorgs"] == 1 and port.sent == ["0xraw"]
    # Mined again in another block: mined with the new block, then final at depth 3.
    port.receipts["0xt"] = {"status": 1, "blockNumber": 101, "blockHash": "0xb101", "gasUsed": 1, "logs": []}
    port.hashes[101] = "0xb101"
    port.h = 101
    follow_open(r, ctx)
    cur = json.loads(r.get(Keys.batch(CHAIN, 7)))
    assert (cur["state"], cur["block"], cur["blockHash"]) == (BatchState.MINED, 101, "0xb101")
    port.h = 103
    follow_open(r, ctx)
    assert json.loads(r.get(Keys.batch(CHAIN, 7)))["state"] == BatchState.FINAL
    assert r.smembers(Keys.open(CHAIN)) == set()
