"""Groups of batches (a backlog beyond one maximum batch) on a real Redis with a scripted
chain: the cut, the wait for every member's proof, one raw transaction for all, the
duplicate and reorg paths. The real chain and workers: test_backlog_pipeline.py."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
import rlp
from eth_abi import decode as abi_decode
from eth_hash.auto import keccak

from settlement.batching import (
    MAX_BATCH,
    BatchState,
    Keys,
    cut_batch,
    group_of,
    leg_from_json,
    load_batch,
    plan_group,
    save_batch,
)
from settlement.submitter import ChainContext, follow_open, submit_batch
from settlement.window import WindowPolicy
from settlement.zk.batch import Batch
from settlement.zk.legs import genesis_head
from tests.integration.pipeline.test_submitter_redis import ScriptedChain

CHAIN = 9
POLICY = WindowPolicy(CHAIN, 1.0, 3, 32, 4.0, 5.0)


@pytest.fixture
def setup(redis_url: str) -> tuple[redis.Redis, ChainContext, ScriptedChain]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    port = ScriptedChain()
    port.revert = None
    key = "0x" + "33" * 32
    ctx = ChainContext(CHAIN, "0x" + "11" * 20, "0x" + "22" * 20, key, 3, 1.0, {}, [], port)
    return r, ctx, port


def _log(r: redis.Redis, n: int) -> None:
    """n payout legs in the chain's log (no order documents needed to build calldata)."""
    now_ms = int(time.time() * 1000)
    for i in range(n):
        leg = {"index": i, "kind": "payout", "account": "0x" + f"{i + 1:040x}", "token": 1, "amount": str(10**6 + i),
               "minAmount": str(10**6), "orderRef": str(1000 + i), "orderId": "0x" + f"{i:064x}", "at": now_ms}
        r.hset(Keys.log_legs(CHAIN), str(i), json.dumps(leg))
    r.set(Keys.log_next(CHAIN), str(n))


def test_plan_group_is_full_batches_then_the_rest() -> None:
    assert [(p.start, p.end) for p in plan_group(10, 40)] == [(10, 40)]
    assert [(p.start, p.end) for p in plan_group(0, 64)] == [(0, 64)]
    assert [(p.start, p.end) for p in plan_group(0, 150)] == [(0, 64), (64, 128), (128, 150)]
    assert [(p.start, p.end) for p in plan_group(0, 1000)] == [(0, 64), (64, 128), (128, 192), (192, 256)]
    assert [(p.start, p.end) for p in plan_group(0, 150, max_batches=1)] == [(0, 64)]


def test_an_operator_max_batch_cuts_smaller_batches_and_groups(setup: Any) -> None:
    r, _ctx, _port = setup
    _log(r, 40)
    first = cut_batch(r, POLICY, (0, genesis_head(CHAIN)), max_batch=16)
    assert first is not None
    docs = [load_batch(r, CHAIN, n) for n in group_of(first)]
    assert [(d["start"], d["count"]) for d in docs if d] == [(0, 16), (16, 16), (32, 8)]


def test_backlog_is_cut_as_a_group_of_chained_batches(setup: Any) -> None:
    r, _ctx, _port = setup
    _log(r, 150)
    head0 = genesis_head(CHAIN)
    first = cut_batch(r, POLICY, (0, head0))
    assert first is not None
    numbers = group_of(first)
    assert len(numbers) == 3 and r.get(Keys.lock(CHAIN)) == str(numbers[0])
    docs = [load_batch(r, CHAIN, n) for n in numbers]
    assert [(d["start"], d["count"]) for d in docs if d] == [(0, MAX_BATCH), (64, MAX_BATCH), (128, 22)]
    head = head0
    for d in docs:
        assert d is not None and d["state"] == BatchState.CUT and d["group"] == numbers
        assert int(d["oldHead"]) == head  # each member starts at the previous one's head
        head = int(d["newHead"])
    # The heads are the log's: one batch over the whole range folds to the same head.
    whole = [leg_from_json(json.loads(r.hget(Keys.log_legs(CHAIN), str(i)))) for i in range(150)]
    assert Batch(CHAIN, 0, head0, tuple(whole)).new_head == head
    # Within one maximum batch (the 86 legs from 64 on): a single batch, no group.
    r.delete(Keys.lock(CHAIN))
    r.set(Keys.log_next(CHAIN), "128")
    single = cut_batch(r, POLICY, (64, int(docs[0]["newHead"])))  # type: ignore[index]
    assert single is not None and "group" not in single and group_of(single) == [single["number"]]
    assert (single["start"], single["count"], single["newHead"]) == (64, 64, docs[1]["newHead"])  # type: ignore[index]


def _prove(r: redis.Redis, n: int) -> None:
    doc = load_batch(r, CHAIN, n)
    assert doc is not None
    doc.update(state=BatchState.PROVED, capacity=64 if doc["count"] > 32 else 32 if doc["count"] > 16 else 16, proof=[str(k + 1) for k in range(8)])
    save_batch(r, doc)


def _settle_many_items(raw_tx: str) -> list[tuple[Any, ...]]:
    # A legacy transaction: rlp [nonce, gasPrice, gas, to, value, data, v, r, s].
    data = bytes(rlp.decode(bytes.fromhex(raw_tx[2:]))[5])
    sel = keccak(b"settleMany(((uint256,uint256,uint256,uint256,uint256),uint256[],bytes)[],uint256[],uint256[])")[:4]
    assert data[:4] == sel
    items, proofs, _confirms = abi_decode(["((uint256,uint256,uint256,uint256,uint256),uint256[],bytes)[]", "uint256[]", "uint256[]"], data[4:])
    assert len(proofs) == 8 * len(items)
    return list(items)


def test_group_waits_for_every_proof_then_one_transaction(setup: Any) -> None:
    r, ctx, port = setup
    _log(r, 100)
    first = cut_batch(r, POLICY, (0, genesis_head(CHAIN)))
    assert first is not None
    a, b = group_of(first)
    _prove(r, b)  # the second member is proven first: it waits for the first
    assert submit_batch(r, ctx, b)["state"] == BatchState.PROVED  # type: ignore[index]
    assert port.sent == []
    _prove(r, a)
    out = submit_batch(r, ctx, a)
    assert out is not None and out["state"] == BatchState.SIGNED and len(port.sent) == 1
    docs = [load_batch(r, CHAIN, n) for n in (a, b)]
    assert all(d is not None and d["state"] == BatchState.SIGNED for d in docs)
    assert len({(d["rawTx"], d["txHash"], d["nonce"]) for d in docs if d}) == 1  # one transaction
    assert r.smembers(Keys.open(CHAIN)) == {str(a), str(b)}
    items = _settle_many_items(port.sent[0])
    assert [(h[1], len(words) // 2) for h, words, _extra in items] == [(0, 64), (64, 36)]
    assert [h[4] for h, _w, _e in items] == [64, 64]
    # Submitting again (a redelivered task) does nothing.
    assert submit_batch(r, ctx, b)["state"] == BatchState.SIGNED  # type: ignore[index]
    assert len(port.sent) == 1
    # The block with it was reorged out after it was mined: every member is re-sent.
    for n in (a, b):
        d = load_batch(r, CHAIN, n)
        assert d is not None
        d.update(state=BatchState.MINED, block=101, blockHash="0xb101")
        save_batch(r, d)
    follow_open(r, ctx)
    docs = [load_batch(r, CHAIN, n) for n in (a, b)]
    assert all(d is not None and d["state"] == BatchState.SIGNED and d["reorgs"] == 1 for d in docs)
    assert port.sent[1:] == [port.sent[0]] * 2  # the same raw transaction


def test_group_duplicate_reverts_every_member_and_frees_the_lock(setup: Any) -> None:
    r, ctx, port = setup
    _log(r, 100)
    first = cut_batch(r, POLICY, (0, genesis_head(CHAIN)))
    assert first is not None
    a, b = group_of(first)
    _prove(r, a)
    _prove(r, b)
    port.revert = ValueError("execution reverted")
    port.cursor_index = 100  # the whole range is settled already
    assert submit_batch(r, ctx, a)["state"] == BatchState.REVERTED  # type: ignore[index]
    assert all(d is not None and d["state"] == BatchState.REVERTED for d in (load_batch(r, CHAIN, n) for n in (a, b)))
    assert r.get(Keys.lock(CHAIN)) is None and port.sent == []
    assert r.get(f"stl:{CHAIN}:reverts:0") is None  # a duplicate is not a revert
    # A real revert at the cursor: the group counts once, at its first range.
    r.delete(Keys.lock(CHAIN))
    first = cut_batch(r, POLICY, (0, genesis_head(CHAIN)))
    assert first is not None
    for n in group_of(first):
        _prove(r, n)
    port.cursor_index = 0
    assert submit_batch(r, ctx, group_of(first)[1])["state"] == BatchState.REVERTED  # type: ignore[index]
    assert r.get(f"stl:{CHAIN}:reverts:0") == "1" and r.get(f"stl:{CHAIN}:reverts:64") is None
    assert r.get(Keys.lock(CHAIN)) is None


def test_one_signer_per_group_at_a_time(setup: Any) -> None:
    r, ctx, port = setup
    _log(r, 100)
    first = cut_batch(r, POLICY, (0, genesis_head(CHAIN)))
    assert first is not None
    a, b = group_of(first)
    _prove(r, a)
    _prove(r, b)
    r.set(f"stl:{CHAIN}:submitting", "other", ex=20)  # another submission is signing
    assert submit_batch(r, ctx, a)["state"] == BatchState.PROVED  # type: ignore[index]
    assert port.sent == [] and r.get(f"stl:{CHAIN}:nonce") is None  # no nonce taken
    r.delete(f"stl:{CHAIN}:submitting")
    assert submit_batch(r, ctx, b)["state"] == BatchState.SIGNED  # type: ignore[index]
    assert len(port.sent) == 1 and r.get(f"stl:{CHAIN}:submitting") is None
