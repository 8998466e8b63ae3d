"""`settleMany`: several consecutive batches of one chain in one transaction, on a real
Anvil chain with real batch proofs (one `verifyBatch` per capacity).

One chain per module (capacities 16 and 32); every test runs inside an
evm_snapshot/evm_revert pair. Three consecutive batches are proven once per module
(b1, b2 in the 16-slot circuit, b3 in the 32-slot one), plus b2 proven at 32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from eth_utils import keccak
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from settlement.vault import (
    BatchSettled,
    Paid,
    PayoutConfirmed,
    Pulled,
    SettleCall,
    SettleManyCall,
    SignedOrder,
    VaultEvent,
    encode_settle_many,
    payout_leg,
    pull_leg,
    pull_ref,
    reclaim_proof,
    settle_call,
    settle_many_call,
)
from settlement.zk.batch import Batch
from settlement.zk.constants import FIELD_MODULUS
from settlement.zk.legs import Leg, LegKind, genesis_head, order_ref_from_hash
from tests.integration.settlement.harness import (
    GAS,
    RECLAIM_TIMEOUT,
    VaultChain,
    error_name,
    prove,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

E6, E18 = 10**6, 10**18
TIMEOUT = RECLAIM_TIMEOUT  # the chain fixture (conftest.py) deploys the vault with it
OTHER_CHAIN = 31002
ACCOUNT_MASK = (1 << 160) - 1
_BAD_LIST = "0x" + keccak(text="BadBatchList(uint256,uint256)")[:4].hex()


@dataclass(frozen=True)
class Batches:
    b1: SettleCall
    b2: SettleCall
    b3: SettleCall  # proven at capacity 32
    b2_at_32: SettleCall
    orders: dict[str, tuple[SignedOrder, bytes]]


def _ref(tag: bytes) -> int:
    return order_ref_from_hash(tag.ljust(32, b"\0"))


@pytest.fixture(scope="module")
def batches(chain: VaultChain) -> Batches:
    """b1: two cross-chain pulls and a same-chain swap with its linked payout; b2: a
    cross-chain pull, a maker pair and a payout; b3: two payouts. Consecutive ranges."""
    t = chain.traders
    ix = chain.index
    m1 = chain.makers[0]
    orders = {
        "a": chain.order(t[0], "USDC", 1000 * E6, buy_chain=OTHER_CHAIN, min_buy=3 * E18 // 10),
        "b": chain.order(t[1], "WETH", E18 // 2, buy_chain=OTHER_CHAIN, min_buy=1400 * E6),
        "c": chain.order(t[2], "USDC", 500 * E6, buy_token=chain.tokens["DAI"].address, min_buy=495 * E18),
        "d": chain.order(t[3], "USDC", 70 * E6, buy_chain=OTHER_CHAIN),
    }
    a, b, c, d = (orders[k] for k in "abcd")
    legs1 = (
        pull_leg(a[0].order, ix["USDC"], a[1]),
        pull_leg(b[0].order, ix["WETH"], b[1]),
        pull_leg(c[0].order, ix["USDC"], c[1]),
        payout_leg(c[0].order, ix["DAI"], 499 * E18, c[1]),
    )
    legs2 = (
        pull_leg(d[0].order, ix["USDC"], d[1]),
        Leg(LegKind.MAKER_OUT, int(m1.address, 16), ix["USDC"], 200 * E6, 0, _ref(b"m-out")),
        Leg(LegKind.MAKER_IN, int(m1.address, 16), ix["DAI"], 199 * E18, 0, _ref(b"m-in")),
        Leg(LegKind.PAYOUT, int(t[4].address, 16), ix["WETH"], 3 * E18 // 10, 29 * E18 // 100, 77),
    )
    legs3 = (
        Leg(LegKind.PAYOUT, int(t[5].address, 16), ix["USDC"], 10 * E6, 10 * E6, 78),
        Leg(LegKind.PAYOUT, int(t[6].address, 16), ix["WBTC"], 10**6, 10**6, 79),
    )
    batch1 = Batch(chain.chain_id, 0, genesis_head(chain.chain_id), legs1)
    batch2 = Batch(chain.chain_id, batch1.end_index, batch1.new_head, legs2)
    batch3 = Batch(chain.chain_id, batch2.end_index, batch2.new_head, legs3)
    b1 = settle_call(batch1, 16, prove(batch1, 16), [a[0], b[0], c[0]], links={2: 3})
    b2 = settle_call(batch2, 16, prove(batch2, 16), [d[0]])
    b3 = settle_call(batch3, 32, prove(batch3, 32), [])
    b2_32 = dataclasses.replace(b2, capacity=32, proof=tuple(prove(batch2, 32).to_evm_words()))
    return Batches(b1, b2, b3, b2_32, orders)


def _send(chain: VaultChain, call: SettleManyCall) -> TxReceipt:
    tx = chain.vault.functions.settleMany(*call.args()).transact({"from": chain.operator, "gas": GAS})
    rc = chain.w3.eth.wait_for_transaction_receipt(tx, timeout=60, poll_latency=0.01)
    assert rc["status"] == 1, "settleMany reverted"
    return rc


def _error(chain: VaultChain, call: SettleManyCall, sender: str | None = None) -> str:
    try:
        chain.vault.functions.settleMany(*call.args()).call({"from": sender or chain.operator, "gas": GAS})
    except ContractLogicError as err:
        data = err.data if isinstance(err.data, str) else ""
        return "BadBatchList" if data.startswith(_BAD_LIST) else error_name(err)
    raise AssertionError("settleMany did not revert")


def _many(*calls: SettleCall, confirms: Sequence[int] = ()) -> SettleManyCall:
    return settle_many_call(calls, confirms)


def _raw(*calls: SettleCall) -> SettleManyCall:
    """Without the Python-side chaining checks: what a careless or hostile caller sends."""
    return SettleManyCall(tuple(calls))


def _watched(chain: VaultChain) -> dict[str, str]:
    who = {f"t{i}": chain.traders[i].address for i in range(7)}
    who.update(m1=chain.makers[0].address, vault=chain.vault.address)
    return who


def _balances(chain: VaultChain) -> dict[tuple[str, str], int]:
    return {(n, s): chain.balance(s, a) for n, a in _watched(chain).items() for s in chain.tokens}


# -- honest -------------------------------------------------------------------------------


def test_two_batches_in_one_transaction_equal_two_settles(chain: VaultChain, batches: Batches) -> None:
    """Same balances, same events (pull refs included), same cursor as b1 and b2 settled
    one by one; two BatchSettled, one transaction, and less gas."""
    before = _balances(chain)
    snap = chain.snapshot()
    rc1 = chain.settle(batches.b1)
    rc2 = chain.settle(batches.b2)
    separate = _balances(chain), chain.events(rc1) + chain.events(rc2), chain.cursor()
    gas_separate = int(rc1["gasUsed"]) + int(rc2["gasUsed"])
    chain.revert(snap)
    assert _balances(chain) == before
    rc = _send(chain, _many(batches.b1, batches.b2))
    together = _balances(chain), chain.events(rc), chain.cursor()
    assert together == separate
    events = together[1]
    assert [e for e in events if isinstance(e, BatchSettled)] == [
        BatchSettled(0, 4, batches.b1.new_head, 2),
        BatchSettled(4, 4, batches.b2.new_head, 1),
    ]
    h = {k: v[1] for k, v in batches.orders.items()}
    assert Pulled(h["a"], pull_ref(0, 0)) in events and Pulled(h["d"], pull_ref(4, 0)) in events
    assert chain.cursor() == (8, batches.b2.new_head)
    delta = {k: together[0][k] - before[k] for k in before if together[0][k] != before[k]}
    assert delta[("t0", "USDC")] == -1000 * E6 and delta[("t3", "USDC")] == -70 * E6
    assert delta[("t4", "WETH")] == 3 * E18 // 10 and delta[("t2", "DAI")] == 499 * E18
    assert int(rc["gasUsed"]) < gas_separate


def test_mixed_capacities_and_confirms(chain: VaultChain, batches: Batches) -> None:
    """b1, b2 (16) and b3 (32): two verifyBatch calls; confirms applied after the batches,
    so a pull of b1 can be confirmed in the same transaction."""
    t5, t6 = chain.traders[5].address, chain.traders[6].address
    usdc, wbtc = chain.balance("USDC", t5), chain.balance("WBTC", t6)
    rc = _send(chain, _many(batches.b1, batches.b2, batches.b3, confirms=[pull_ref(0, 1)]))
    events = chain.events(rc)
    assert [e.start_index for e in events if isinstance(e, BatchSettled)] == [0, 4, 8]
    assert events[-1] == PayoutConfirmed(pull_ref(0, 1))
    assert Paid(8) in events and Paid(9) in events
    assert chain.balance("USDC", t5) - usdc == 10 * E6 and chain.balance("WBTC", t6) - wbtc == 10**6
    assert chain.cursor() == (10, batches.b3.new_head)


def test_one_batch_and_continuation_after_settle(chain: VaultChain, batches: Batches) -> None:
    chain.settle(batches.b1)
    rc = _send(chain, _many(batches.b2, batches.b3))
    assert [e.start_index for e in chain.events(rc) if isinstance(e, BatchSettled)] == [4, 8]


def test_single_batch_through_settle_many(chain: VaultChain, batches: Batches) -> None:
    rc = _send(chain, _many(batches.b1))
    assert chain.events(rc)[-1] == BatchSettled(0, 4, batches.b1.new_head, 2)


def test_encoded_calldata_is_what_web3_sends(chain: VaultChain, batches: Batches) -> None:
    call = _many(batches.b1, batches.b2_at_32, confirms=[5])
    fn = chain.vault.functions.settleMany(*call.args())
    assert bytes.fromhex(fn._encode_transaction_data()[2:]) == encode_settle_many(call)


def test_reclaim_from_a_multi_batch_receipt(chain: VaultChain, batches: Batches) -> None:
    rc = _send(chain, _many(batches.b1, batches.b2))
    ts = int(chain.w3.eth.get_block(rc["blockNumber"])["timestamp"])
    events: list[VaultEvent] = chain.events(rc)
    chain.node.rpc("evm_increaseTime", [TIMEOUT + 1])
    chain.node.rpc("evm_mine")
    for key, ref in (("d", pull_ref(4, 0)), ("b", pull_ref(0, 1))):
        signed, h = batches.orders[key]
        proof = reclaim_proof(h, events, ts)
        assert proof.pull_ref == ref
        fn = chain.vault.functions.reclaim(
            signed.order.as_abi(), proof.pull_ref, proof.settled_at, list(proof.open_hashes)
        )
        before = chain.balance("USDC" if key == "d" else "WETH", signed.order.trader)
        chain.transact(fn, chain.makers[1].address)
        assert chain.balance("USDC" if key == "d" else "WETH", signed.order.trader) - before == signed.order.sell_amount


# -- tampering ----------------------------------------------------------------------------


def _with_word(call: SettleCall, j: int, value: int) -> SettleCall:
    words = list(call.words)
    words[j] = value
    return dataclasses.replace(call, words=tuple(words))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("amount_b1", "InvalidProof"),
        ("amount_b2", "InvalidProof"),
        ("recipient_b2", "InvalidProof"),
        ("token_b2", "InvalidProof"),
        ("proofs_swapped", "InvalidProof"),
        ("proof_of_b2_changed", "InvalidProof"),
        ("proof_off_curve_b2", "revert"),
        ("start_gap", "CursorMismatch"),
        ("start_overlap", "CursorMismatch"),
        ("head_broken", "CursorMismatch"),
        ("missing_middle", "CursorMismatch"),
        ("reordered", "CursorMismatch"),
        ("first_not_at_cursor", "CursorMismatch"),
        ("capacity_claimed_wrong", "InvalidProof"),
        ("bad_link_b1", "BadPayoutLink"),
        ("extra_truncated_b2", "BadExtra"),
        ("proof_words_missing", "BadBatchList"),
        ("empty", "BadBatchList"),
    ],
)
def test_tampered_group_reverts(chain: VaultChain, batches: Batches, case: str, expected: str) -> None:
    b1, b2, b3 = batches.b1, batches.b2, batches.b3
    w2 = b2.words
    if case == "amount_b1":  # the same-chain payout pays one unit more
        bad = _raw(_with_word(b1, 7, b1.words[7] + 1), b2)
    elif case == "amount_b2":
        bad = _raw(b1, _with_word(b2, 7, w2[7] + 1))
    elif case == "recipient_b2":
        bad = _raw(b1, _with_word(b2, 6, (w2[6] & ~ACCOUNT_MASK) | int(chain.traders[7].address, 16)))
    elif case == "token_b2":  # WETH -> WBTC, a registered token
        bad = _raw(b1, _with_word(b2, 6, (w2[6] & ((1 << 168) - 1)) | chain.index["WBTC"] << 168))
    elif case == "proofs_swapped":
        bad = _raw(dataclasses.replace(b1, proof=b2.proof), dataclasses.replace(b2, proof=b1.proof))
    elif case == "proof_of_b2_changed":  # -A: a curve point, not a proof of b2
        p = list(b2.proof)
        p[1] = FIELD_MODULUS - p[1]
        bad = _raw(b1, dataclasses.replace(b2, proof=tuple(p)))
    elif case == "proof_off_curve_b2":
        p = list(b2.proof)
        p[7] += 1
        bad = _raw(b1, dataclasses.replace(b2, proof=tuple(p)))
    elif case == "start_gap":
        bad = _raw(b1, dataclasses.replace(b2, start_index=b2.start_index + 1))
    elif case == "start_overlap":
        bad = _raw(b1, dataclasses.replace(b2, start_index=b2.start_index - 1))
    elif case == "head_broken":
        bad = _raw(b1, dataclasses.replace(b2, old_head=b2.old_head + 1))
    elif case == "missing_middle":
        bad = _raw(b1, b3)
    elif case == "reordered":
        bad = _raw(b2, b1)
    elif case == "first_not_at_cursor":
        bad = _raw(b2, b3)
    elif case == "capacity_claimed_wrong":  # b2's 32-slot proof sent as a 16-slot one
        bad = _raw(b1, dataclasses.replace(batches.b2_at_32, capacity=16))
    elif case == "bad_link_b1":  # the same-chain pull names a leg that is not its payout
        rec = bytearray(b1.extra[2 * 199 : 3 * 199])
        rec[197:199] = (2).to_bytes(2, "big")
        bad = _raw(dataclasses.replace(b1, extra=b1.extra[: 2 * 199] + bytes(rec)), b2)
    elif case == "extra_truncated_b2":
        bad = _raw(b1, dataclasses.replace(b2, extra=b2.extra[:-1]))
    elif case == "proof_words_missing":
        good = _raw(b1, b2)
        items, proofs, confirms = good.args()
        try:
            chain.vault.functions.settleMany(items, proofs[:-1], confirms).call({"from": chain.operator, "gas": GAS})
        except ContractLogicError as err:
            assert isinstance(err.data, str) and err.data.startswith(_BAD_LIST)
            return
        raise AssertionError("settleMany did not revert")
    elif case == "empty":
        bad = SettleManyCall(())
    else:
        raise AssertionError(case)
    if expected == "revert":  # a precompile rejects the point: any revert is a rejection
        with pytest.raises(Exception):  # noqa: B017
            chain.vault.functions.settleMany(*bad.args()).call({"from": chain.operator, "gas": GAS})
        return
    assert _error(chain, bad) == expected
    assert chain.cursor() == (0, genesis_head(chain.chain_id))


def test_replayed_batches_revert(chain: VaultChain, batches: Batches) -> None:
    _send(chain, _many(batches.b1, batches.b2))
    assert _error(chain, _many(batches.b1, batches.b2)) == "CursorMismatch"
    assert _error(chain, _many(batches.b2, batches.b3)) == "CursorMismatch"  # b2 replayed
    assert chain.settle_error(batches.b2) == "CursorMismatch"
    _send(chain, _many(batches.b3))  # the next range still settles


def test_settle_many_is_operator_only_and_paused(chain: VaultChain, batches: Batches) -> None:
    call = _many(batches.b1, batches.b2)
    assert _error(chain, call, sender=chain.traders[0].address) == "NotOperator"
    chain.transact(chain.vault.functions.pause(), chain.operator)
    assert _error(chain, call) == "IsPaused"
    chain.transact(chain.vault.functions.unpause(), chain.operator)
    _send(chain, call)


def test_python_side_refuses_broken_chains(batches: Batches) -> None:
    with pytest.raises(ValueError, match="does not extend"):
        settle_many_call([batches.b1, batches.b3])
    with pytest.raises(ValueError, match="does not extend"):
        settle_many_call([batches.b2, batches.b1])
    with pytest.raises(ValueError, match=r"1\.\.8"):
        settle_many_call([])
    with pytest.raises(ValueError, match="confirms"):
        settle_many_call([dataclasses.replace(batches.b1, confirms=(1,))])
