"""The Settlement vault on a real Anvil chain with real batch proofs.

One chain (deploy_chain + deploy_settlement, capacities 16 and 32) per module; every test
runs inside an evm_snapshot/evm_revert pair, so each starts from cursor (0, genesis).
Four proofs are made once per module: the honest batch in both circuits, a batch of
failing pulls, and a follow-up batch that confirms a pull.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from web3.exceptions import ContractLogicError

from app.domain.eip712 import SECP256K1_N
from settlement.vault import (
    NO_REF,
    BatchSettled,
    MakerLeg,
    Paid,
    PayoutConfirmed,
    PayoutSkipped,
    PoolTrade,
    Pulled,
    PullFailed,
    PullFailure,
    Reclaimed,
    SettleCall,
    SignedOrder,
    encode_settle,
    payout_leg,
    pull_leg,
    pull_ref,
    reclaim_proof,
    settle_call,
)
from settlement.zk.batch import Batch
from settlement.zk.constants import FIELD_MODULUS
from settlement.zk.legs import Leg, LegKind, genesis_head, order_ref_from_hash
from tests.integration.settlement.harness import (
    RECLAIM_TIMEOUT,
    VaultChain,
    error_name,
    prove,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

E6, E18 = 10**6, 10**18
TIMEOUT = RECLAIM_TIMEOUT  # the chain fixture (conftest.py) deploys the vault with it
OTHER_CHAIN = 31002
MAX_UINT = 2**256 - 1


@dataclass(frozen=True)
class Prepared:
    batch: Batch
    call: SettleCall
    orders: dict[int, tuple[SignedOrder, bytes]]  # pull leg index -> (order, hash)


def _maker_ref(tag: bytes) -> int:
    return order_ref_from_hash(tag.ljust(32, b"\0"))


@pytest.fixture(scope="module")
def honest(chain: VaultChain) -> Prepared:
    """Two cross-chain pulls, a same-chain swap through a maker, a cross-chain payout and
    a pool trade: every leg kind."""
    t1, t2, t3, t4 = chain.traders[:4]
    m1 = chain.makers[0]
    ix = chain.index
    o1 = chain.order(t1, "USDC", 1000 * E6, buy_chain=OTHER_CHAIN, min_buy=3 * E18 // 10)
    o2 = chain.order(t2, "WETH", E18 // 2, buy_chain=OTHER_CHAIN, min_buy=1400 * E6)
    o3 = chain.order(t3, "USDC", 500 * E6, buy_token=chain.tokens["DAI"].address, min_buy=495 * E18)
    pool = next(p for p in chain.info.pools if {p.symbol0, p.symbol1} == {"USDC", "USDT"})
    legs = [
        pull_leg(o1[0].order, ix["USDC"], o1[1]),
        pull_leg(o2[0].order, ix["WETH"], o2[1]),
        pull_leg(o3[0].order, ix["USDC"], o3[1]),
        Leg(LegKind.MAKER_OUT, int(m1.address, 16), ix["USDC"], 500 * E6, 0, _maker_ref(b"m-out")),
        Leg(LegKind.MAKER_IN, int(m1.address, 16), ix["DAI"], 499 * E18, 0, _maker_ref(b"m-in")),
        payout_leg(o3[0].order, ix["DAI"], 499 * E18, o3[1]),
        Leg(LegKind.PAYOUT, int(t4.address, 16), ix["WETH"], 3 * E18 // 10, 29 * E18 // 100, 77),
        Leg(LegKind.POOL, int(pool.address, 16), ix["USDC"], 100 * E6, 0, _maker_ref(b"pool")),
    ]
    batch = Batch(chain.chain_id, 0, genesis_head(chain.chain_id), tuple(legs))
    call = settle_call(
        batch,
        16,
        prove(batch, 16),
        [o1[0], o2[0], o3[0]],
        links={2: 5},
        pool_min_out={7: 99 * E6},
    )
    return Prepared(batch, call, {0: o1, 1: o2, 2: o3})


@pytest.fixture(scope="module")
def honest32(chain: VaultChain, honest: Prepared) -> SettleCall:
    """The honest batch proven in the 32-slot circuit instead."""
    proof = prove(honest.batch, 32)
    return dataclasses.replace(honest.call, capacity=32, proof=tuple(proof.to_evm_words()))


@pytest.fixture(scope="module")
def failing(chain: VaultChain) -> Prepared:
    """Pulls that fail on chain for each reason a trader (or time) can cause."""
    t1, t2, t3, t4 = chain.traders[4:8]
    ix = chain.index
    o1 = chain.order(t1, "USDC", 1000 * E6, buy_chain=OTHER_CHAIN)  # allowance revoked
    o2 = chain.order(t2, "USDC", 200 * E6, buy_token=chain.tokens["DAI"].address, min_buy=198 * E18)
    o3 = chain.order(t3, "WETH", E18 // 10, buy_chain=OTHER_CHAIN, nonce=7)
    o4 = chain.order(t4, "USDC", 50 * E6, buy_chain=OTHER_CHAIN, deadline=1)  # long expired
    o5 = chain.order(t3, "WETH", E18 // 5, buy_chain=OTHER_CHAIN, nonce=7)  # nonce reused
    legs = [
        pull_leg(o1[0].order, ix["USDC"], o1[1]),
        pull_leg(o2[0].order, ix["USDC"], o2[1]),
        payout_leg(o2[0].order, ix["DAI"], 199 * E18, o2[1]),
        pull_leg(o3[0].order, ix["WETH"], o3[1]),
        pull_leg(o4[0].order, ix["USDC"], o4[1]),
        pull_leg(o5[0].order, ix["WETH"], o5[1]),
    ]
    batch = Batch(chain.chain_id, 0, genesis_head(chain.chain_id), tuple(legs))
    call = settle_call(
        batch, 16, prove(batch, 16), [o1[0], o2[0], o3[0], o4[0], o5[0]], links={1: 2}
    )
    return Prepared(batch, call, {0: o1, 1: o2, 3: o3, 4: o4, 5: o5})


@pytest.fixture(scope="module")
def follow_up(chain: VaultChain, honest: Prepared) -> SettleCall:
    """After the honest batch: one payout, and the confirmation of the first open pull."""
    t5 = chain.traders[4]
    leg = Leg(LegKind.PAYOUT, int(t5.address, 16), chain.index["USDC"], 10 * E6, 10 * E6, 5)
    batch = Batch(chain.chain_id, honest.batch.end_index, honest.batch.new_head, (leg,))
    return settle_call(batch, 16, prove(batch, 16), [], confirms=[pull_ref(0, 0)])


def _balances(chain: VaultChain, who: dict[str, str]) -> dict[tuple[str, str], int]:
    return {(n, s): chain.balance(s, a) for n, a in who.items() for s in chain.tokens}


# -- honest settlement ------------------------------------------------------------------


def test_honest_batch_moves_exactly_the_legs(chain: VaultChain, honest: Prepared) -> None:
    t1, t2, t3, t4 = (t.address for t in chain.traders[:4])
    m1 = chain.makers[0].address
    pool = f"0x{honest.batch.legs[7].account:040x}"
    who = {"t1": t1, "t2": t2, "t3": t3, "t4": t4, "m1": m1, "vault": chain.vault.address}
    who["pool"] = chain.w3.to_checksum_address(pool)
    before = _balances(chain, who)
    rc = chain.settle(honest.call)
    after = _balances(chain, who)
    delta = {k: after[k] - before[k] for k in before if after[k] != before[k]}
    events = chain.events(rc)
    pool_out = next(e for e in events if isinstance(e, PoolTrade)).amount_out
    assert 99 * E6 <= pool_out < 100 * E6
    assert delta == {
        ("t1", "USDC"): -1000 * E6,
        ("t2", "WETH"): -E18 // 2,
        ("t3", "USDC"): -500 * E6,
        ("t3", "DAI"): 499 * E18,
        ("m1", "USDC"): 500 * E6,
        ("m1", "DAI"): -499 * E18,
        ("t4", "WETH"): 3 * E18 // 10,
        ("vault", "USDC"): (1000 + 500 - 500 - 100) * E6,
        ("vault", "WETH"): E18 // 2 - 3 * E18 // 10,
        ("vault", "USDT"): pool_out,
        ("pool", "USDC"): 100 * E6,
        ("pool", "USDT"): -pool_out,
    }
    h = {i: o[1] for i, o in honest.orders.items()}
    assert events == [
        Pulled(h[0], pull_ref(0, 0)),
        Pulled(h[1], pull_ref(0, 1)),
        Pulled(h[2], NO_REF),
        MakerLeg(3, True),
        MakerLeg(4, True),
        Paid(5),
        Paid(6),
        PoolTrade(7, pool_out),
        BatchSettled(0, 8, honest.batch.new_head, 2),
    ]
    assert chain.cursor() == (8, honest.batch.new_head)
    for _, (signed, _) in honest.orders.items():
        assert chain.vault.functions.nonceUsed(signed.order.trader, signed.order.nonce).call()
    # The vault's order hash is the Python EIP-712 digest.
    o = honest.orders[0][0].order
    assert chain.vault.functions.hashOrder(o.as_abi()).call() == h[0]


def test_the_pipelines_chain_port_reads_what_web3_reads(chain: VaultChain, honest: Prepared) -> None:
    from settlement.submitter import Web3Chain
    from settlement.vault import decode_logs

    port = Web3Chain(chain.info.rpc_url)
    vault = chain.vault.address
    assert port.cursor(vault) == (0, genesis_head(chain.chain_id))
    rc = chain.settle(honest.call)
    tx = rc["transactionHash"].to_0x_hex()
    got = port.receipt(tx)
    assert got is not None
    assert (got["status"], got["blockNumber"], got["blockHash"], got["gasUsed"]) == (
        1, rc["blockNumber"], rc["blockHash"].to_0x_hex(), rc["gasUsed"])
    assert decode_logs(got["logs"], vault) == chain.events(rc)
    assert port.receipt("0x" + "ab" * 32) is None
    head = port.head()
    assert head == chain.w3.eth.block_number >= rc["blockNumber"]
    assert port.block_hash(rc["blockNumber"]) == rc["blockHash"].to_0x_hex()
    assert port.block_hash(head + 1000) is None
    assert port.cursor(vault) == chain.cursor() == (8, honest.batch.new_head)
    assert port.cursor(vault, rc["blockNumber"] - 1) == (0, genesis_head(chain.chain_id))
    for symbol, token in chain.tokens.items():
        assert port.balance(token.address, vault) == chain.balance(symbol, vault)
        assert port.balance(token.address, vault, rc["blockNumber"] - 1) == token.functions.balanceOf(vault).call(
            block_identifier=rc["blockNumber"] - 1)
    topic = rc["logs"][-1]["topics"][0]
    logs = port.logs(vault, bytes(topic), rc["blockNumber"], rc["blockNumber"])
    assert [(x["blockNumber"], x["transactionHash"], x["data"]) for x in logs] == [
        (rc["blockNumber"], tx, bytes(x["data"])) for x in rc["logs"] if x["topics"][0] == topic and x["address"] == vault]


def test_encoded_calldata_is_what_web3_sends(chain: VaultChain, honest: Prepared) -> None:
    fn = chain.vault.functions.settle(*honest.call.args())
    assert bytes.fromhex(fn._encode_transaction_data()[2:]) == encode_settle(honest.call)


def test_batch_proven_in_the_32_slot_circuit_settles(
    chain: VaultChain, honest32: SettleCall
) -> None:
    rc = chain.settle(honest32)
    assert chain.events(rc)[-1] == BatchSettled(0, 8, honest32.new_head, 2)


def test_settle_with_confirmations_then_next_batch(
    chain: VaultChain, honest: Prepared, follow_up: SettleCall
) -> None:
    chain.settle(honest.call)
    t5 = chain.traders[4].address
    before = chain.balance("USDC", t5)
    rc = chain.settle(follow_up)
    assert chain.balance("USDC", t5) - before == 10 * E6
    events = chain.events(rc)
    assert PayoutConfirmed(pull_ref(0, 0)) in events
    assert events[-1] == BatchSettled(8, 1, follow_up.new_head, 0)
    assert chain.cursor() == (9, follow_up.new_head)


# -- tampering --------------------------------------------------------------------------


def _with_word(call: SettleCall, j: int, value: int) -> SettleCall:
    words = list(call.words)
    words[j] = value
    return dataclasses.replace(call, words=tuple(words))


ACCOUNT_MASK = (1 << 160) - 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("amount", "InvalidProof"),
        ("min_amount", "InvalidProof"),
        ("account", "InvalidProof"),
        ("token", "InvalidProof"),
        ("kind", "InvalidProof"),
        ("drop_leg", "InvalidProof"),
        ("swap_legs", "InvalidProof"),
        ("new_head", "InvalidProof"),
        ("start_index", "CursorMismatch"),
        ("old_head", "CursorMismatch"),
        ("chain_id", "WrongChain"),
        ("proof_negated", "InvalidProof"),
        ("unknown_token", "UnknownToken"),
        ("non_canonical", "NonCanonicalLeg"),
        ("capacity_unknown", "UnknownVerifier"),
        ("other_circuit", "InvalidProof"),
        ("extra_truncated", "BadExtra"),
        ("bad_link", "BadPayoutLink"),
    ],
)
def test_tampered_batch_reverts(
    chain: VaultChain, honest: Prepared, honest32: SettleCall, case: str, expected: str
) -> None:
    c = honest.call
    w = c.words
    if case == "amount":  # the cross-chain payout pays one unit more
        bad = _with_word(c, 13, w[13] + 1)
    elif case == "min_amount":
        bad = _with_word(c, 13, w[13] - (1 << 96))
    elif case == "account":  # the payout goes elsewhere
        other = int(chain.traders[7].address, 16)
        bad = _with_word(c, 12, (w[12] & ~ACCOUNT_MASK) | other)
    elif case == "token":  # WETH -> WBTC, a registered token
        bad = _with_word(c, 12, (w[12] & ((1 << 168) - 1)) | chain.index["WBTC"] << 168)
    elif case == "kind":  # PAYOUT -> MAKER_OUT
        bad = _with_word(c, 12, w[12] + ((4 - 2) << 160))
    elif case == "drop_leg":
        bad = dataclasses.replace(c, words=w[:-2], extra=c.extra[:-32])
    elif case == "swap_legs":
        ws = list(w)
        ws[10:12], ws[12:14] = ws[12:14], ws[10:12]
        bad = dataclasses.replace(c, words=tuple(ws))
    elif case == "new_head":
        bad = dataclasses.replace(c, new_head=c.new_head + 1)
    elif case == "start_index":
        bad = dataclasses.replace(c, start_index=1)
    elif case == "old_head":
        bad = dataclasses.replace(c, old_head=c.old_head + 1)
    elif case == "chain_id":
        bad = dataclasses.replace(c, chain_id=OTHER_CHAIN)
    elif case == "proof_negated":  # -A: still a curve point, not a proof of this
        p = list(c.proof)
        p[1] = FIELD_MODULUS - p[1]
        bad = dataclasses.replace(c, proof=tuple(p))
    elif case == "unknown_token":
        bad = _with_word(c, 12, (w[12] & ((1 << 168) - 1)) | 99 << 168)
    elif case == "non_canonical":
        bad = _with_word(c, 13, w[13] | 1 << 200)
    elif case == "capacity_unknown":
        bad = dataclasses.replace(c, capacity=64)
    elif case == "other_circuit":  # a valid 32-slot proof presented to the 16-slot verifier
        bad = dataclasses.replace(honest32, capacity=16)
    elif case == "extra_truncated":
        bad = dataclasses.replace(c, extra=c.extra[:-1])
    elif case == "bad_link":  # the same-chain pull claims the cross-chain payout
        rec = bytearray(c.extra[2 * 199 : 3 * 199])
        rec[197:199] = (6).to_bytes(2, "big")
        bad = dataclasses.replace(c, extra=c.extra[: 2 * 199] + bytes(rec) + c.extra[3 * 199 :])
    else:
        raise AssertionError(case)
    assert chain.settle_error(bad) == expected


def test_proof_element_off_curve_reverts(chain: VaultChain, honest: Prepared) -> None:
    p = list(honest.call.proof)
    p[7] += 1  # C no longer on the curve: the verifier's precompile call fails
    with pytest.raises(Exception):  # noqa: B017 - any revert is a rejection
        chain.vault.functions.settle(*dataclasses.replace(honest.call, proof=tuple(p)).args()).call(
            {"from": chain.operator, "gas": 8_000_000}
        )


def test_proof_for_other_legs_reverts(
    chain: VaultChain, honest: Prepared, failing: Prepared
) -> None:
    # Same cursor, another batch's valid proof.
    bad = dataclasses.replace(honest.call, proof=failing.call.proof)
    assert chain.settle_error(bad) == "InvalidProof"


def test_replayed_batch_reverts_on_the_cursor(chain: VaultChain, honest: Prepared) -> None:
    chain.settle(honest.call)
    assert chain.settle_error(honest.call) == "CursorMismatch"


def test_only_the_operator_settles(chain: VaultChain, honest: Prepared) -> None:
    assert chain.settle_error(honest.call, sender=chain.traders[0].address) == "NotOperator"


# -- failing pulls ------------------------------------------------------------------------


def test_failed_pulls_do_not_block_the_batch(chain: VaultChain, failing: Prepared) -> None:
    t1, t2, t3, t4 = (t.address for t in chain.traders[4:8])
    usdc, weth = chain.tokens["USDC"], chain.tokens["WETH"]
    chain.transact(usdc.functions.approve(chain.vault.address, 0), t1)  # revoke
    bal2 = chain.balance("USDC", t2)  # move t2's balance away
    chain.transact(usdc.functions.transfer(chain.traders[0].address, bal2), t2)
    who = {"t1": t1, "t2": t2, "t3": t3, "t4": t4, "vault": chain.vault.address}
    before = _balances(chain, who)
    rc = chain.settle(failing.call)
    after = _balances(chain, who)
    delta = {k: after[k] - before[k] for k in before if after[k] != before[k]}
    assert delta == {("t3", "WETH"): -E18 // 10, ("vault", "WETH"): E18 // 10}
    h = {i: o[1] for i, o in failing.orders.items()}
    assert chain.events(rc) == [
        PullFailed(h[0], 0, PullFailure.TRANSFER_FAILED),
        PullFailed(h[1], 1, PullFailure.TRANSFER_FAILED),
        PayoutSkipped(2),  # t2's same-chain payout: its pull failed
        Pulled(h[3], pull_ref(0, 0)),
        PullFailed(h[4], 4, PullFailure.EXPIRED),
        PullFailed(h[5], 5, PullFailure.NONCE_USED),
        BatchSettled(0, 6, failing.batch.new_head, 1),
    ]
    nonce_used = chain.vault.functions.nonceUsed
    assert nonce_used(t1, failing.orders[0][0].order.nonce).call()  # a good signature: dead
    assert not nonce_used(t4, failing.orders[4][0].order.nonce).call()  # expired: untouched
    assert weth.functions.allowance(t3, chain.vault.address).call() == MAX_UINT


def test_order_data_changed_by_the_operator_fails_the_signature(
    chain: VaultChain, failing: Prepared
) -> None:
    # extra is not proven; the trader's signature covers it. Raise t3's minimum (record 2).
    c = failing.call
    rec = bytearray(c.extra[2 * 199 : 3 * 199])
    rec[28:40] = (1).to_bytes(12, "big")
    bad = dataclasses.replace(c, extra=c.extra[: 2 * 199] + bytes(rec) + c.extra[3 * 199 :])
    t3 = chain.traders[6].address
    before = chain.balance("WETH", t3)
    rc = chain.settle(bad)
    failed = {e.leg_index: e.reason for e in chain.events(rc) if isinstance(e, PullFailed)}
    assert failed[3] is PullFailure.BAD_SIGNATURE
    # A bad signature does not consume the nonce, so t3's other order with nonce 7 (leg 5,
    # 0.2 WETH) now goes through instead.
    assert 5 not in failed
    assert before - chain.balance("WETH", t3) == E18 // 5


def test_high_s_signature_is_rejected(chain: VaultChain, failing: Prepared) -> None:
    c = failing.call
    rec = bytearray(c.extra[2 * 199 : 3 * 199])
    s = int.from_bytes(rec[164:196], "big")
    rec[164:196] = (SECP256K1_N - s).to_bytes(32, "big")  # the malleable twin
    rec[196] ^= 1  # 27 <-> 28: same signer
    bad = dataclasses.replace(c, extra=c.extra[: 2 * 199] + bytes(rec) + c.extra[3 * 199 :])
    rc = chain.settle(bad)
    failed = {e.leg_index: e.reason for e in chain.events(rc) if isinstance(e, PullFailed)}
    assert failed[3] is PullFailure.BAD_SIGNATURE


# -- reclaim, confirmation, pause ------------------------------------------------------------


def _settled(chain: VaultChain, honest: Prepared) -> tuple[int, list[object]]:
    rc = chain.settle(honest.call)
    ts = int(chain.w3.eth.get_block(rc["blockNumber"])["timestamp"])
    return ts, list(chain.events(rc))


def _reclaim(
    chain: VaultChain, honest: Prepared, leg: int, ts: int, events: list[object]
) -> str | None:
    signed, h = honest.orders[leg]
    proof = reclaim_proof(h, events, ts)  # type: ignore[arg-type]
    fn = chain.vault.functions.reclaim(
        signed.order.as_abi(), proof.pull_ref, proof.settled_at, list(proof.open_hashes)
    )
    try:
        fn.call({"from": chain.traders[1].address})
    except ContractLogicError as err:
        return error_name(err)
    chain.transact(fn, chain.traders[0].address)
    return None


def _later(chain: VaultChain, seconds: int) -> None:
    chain.node.rpc("evm_increaseTime", [seconds])
    chain.node.rpc("evm_mine")


def test_reclaim_after_timeout_once(chain: VaultChain, honest: Prepared) -> None:
    ts, events = _settled(chain, honest)
    t1 = chain.traders[0].address
    assert _reclaim(chain, honest, 0, ts, events) == "ReclaimTooEarly"
    _later(chain, TIMEOUT + 1)
    before = chain.balance("USDC", t1)
    assert _reclaim(chain, honest, 0, ts, events) is None
    assert chain.balance("USDC", t1) - before == 1000 * E6
    assert _reclaim(chain, honest, 0, ts, events) == "PullClosed"
    # A wrong settlement time or batch list does not open a pull.
    signed, h = honest.orders[1]
    proof = reclaim_proof(h, events, ts)  # type: ignore[arg-type]
    fn = chain.vault.functions.reclaim(
        signed.order.as_abi(), proof.pull_ref, ts - 1, list(proof.open_hashes)
    )
    with pytest.raises(ContractLogicError) as err:
        fn.call({"from": t1})
    assert error_name(err.value) == "NotOpenPull"


def test_reclaimed_event(chain: VaultChain, honest: Prepared) -> None:
    ts, events = _settled(chain, honest)
    _later(chain, TIMEOUT + 1)
    signed, h = honest.orders[1]
    proof = reclaim_proof(h, events, ts)  # type: ignore[arg-type]
    fn = chain.vault.functions.reclaim(
        signed.order.as_abi(), proof.pull_ref, proof.settled_at, list(proof.open_hashes)
    )
    rc = chain.transact(fn, chain.makers[0].address)  # anyone may trigger it
    assert chain.events(rc) == [Reclaimed(h, pull_ref(0, 1), signed.order.trader, E18 // 2)]


def test_confirmed_pull_cannot_be_reclaimed(chain: VaultChain, honest: Prepared) -> None:
    ts, events = _settled(chain, honest)
    confirm = chain.vault.functions.confirmPayouts([pull_ref(0, 1)])
    with pytest.raises(Exception):  # noqa: B017 - NotOperator
        confirm.call({"from": chain.traders[0].address})
    rc = chain.transact(confirm, chain.operator)
    assert chain.events(rc) == [PayoutConfirmed(pull_ref(0, 1))]
    # Confirming again is a no-op, not an error.
    assert chain.events(chain.transact(confirm, chain.operator)) == []
    _later(chain, TIMEOUT + 1)
    assert _reclaim(chain, honest, 1, ts, events) == "PullClosed"
    assert _reclaim(chain, honest, 0, ts, events) is None  # the other one still can


def test_pause_blocks_settle_not_reclaim(chain: VaultChain, honest: Prepared) -> None:
    ts, events = _settled(chain, honest)
    chain.transact(chain.vault.functions.pause(), chain.operator)
    next_batch = dataclasses.replace(honest.call, start_index=8)
    assert chain.settle_error(next_batch) == "IsPaused"
    _later(chain, TIMEOUT + 1)
    assert _reclaim(chain, honest, 0, ts, events) is None
    chain.transact(chain.vault.functions.unpause(), chain.operator)
    assert chain.settle_error(next_batch) == "CursorMismatch"  # past the pause check


def test_pause_before_first_batch(chain: VaultChain, honest: Prepared) -> None:
    chain.transact(chain.vault.functions.pause(), chain.operator)
    assert chain.settle_error(honest.call) == "IsPaused"
    chain.transact(chain.vault.functions.unpause(), chain.operator)
    chain.settle(honest.call)


def test_deploy_moved_inventory_and_approvals(chain: VaultChain) -> None:
    vault = chain.vault.address
    for sym, tok in chain.tokens.items():
        assert chain.balance(sym, chain.operator) == 0
        assert chain.balance(sym, vault) > 0
        for acct in [*chain.traders, *chain.makers]:
            assert tok.functions.allowance(acct.address, vault).call() == MAX_UINT
        assert chain.vault.functions.tokenAt(chain.index[sym]).call() == tok.address
    assert chain.cursor() == (0, genesis_head(chain.chain_id))


def test_failed_pool_trade_and_maker_in_do_not_block(chain: VaultChain, honest: Prepared) -> None:
    # The pool minimum travels unproven in extra (the operator's own protection): set it
    # above what the pool pays. And maker1 revokes its DAI allowance.
    c = honest.call
    bad = dataclasses.replace(c, extra=c.extra[:-32] + (10**9 * E6).to_bytes(32, "big"))
    m1 = chain.makers[0].address
    dai, usdc = chain.tokens["DAI"], chain.tokens["USDC"]
    chain.transact(dai.functions.approve(chain.vault.address, 0), m1)
    pool = chain.w3.to_checksum_address(f"0x{honest.batch.legs[7].account:040x}")
    vault = chain.vault.address
    before = {s: chain.balance(s, vault) for s in ("USDC", "DAI", "USDT")}
    rc = chain.settle(bad)
    events = chain.events(rc)
    assert MakerLeg(4, False) in events and PoolTrade(7, 0) in events
    assert Paid(5) in events  # the payout still comes out of inventory
    assert chain.balance("USDT", vault) == before["USDT"]
    assert chain.balance("USDC", vault) - before["USDC"] == (1000 + 500 - 500) * E6
    assert chain.balance("DAI", vault) - before["DAI"] == -499 * E18
    assert usdc.functions.allowance(vault, pool).call() == 0  # no allowance left behind
