"""settlement.vault without a chain: the Order struct, the pull record layout, settle,
confirm and reclaim calldata against the compiled ABI, and event decoding."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account as EthAccount
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from app.domain.eip712 import recover
from scripts.build_contracts import load_artifact
from settlement.vault import (
    NO_LINK,
    NO_REF,
    ORDER_BYTES,
    ORDER_TYPE,
    ORDER_TYPE_STRING,
    BatchSettled,
    MakerLeg,
    Order,
    Paid,
    PayoutConfirmed,
    PayoutSkipped,
    PoolTrade,
    Pulled,
    PullFailed,
    PullFailure,
    Reclaimed,
    ReclaimProof,
    decode_logs,
    encode_confirm,
    encode_reclaim,
    encode_settle,
    order_record,
    payout_leg,
    pull_leg,
    pull_ref,
    reclaim_proof,
    settle_call,
    split_pull_ref,
    vault_domain,
)
from settlement.zk.batch import Batch, calldata_words, public_inputs_for
from settlement.zk.legs import Leg, LegKind, genesis_head, order_ref_from_hash

ROOT = Path(__file__).resolve().parents[3]
KEY = "0x" + "11" * 32
TRADER = EthAccount.from_key(KEY).address
VAULT = "0x" + "ab" * 20
CHAIN = 31001
DOMAIN = vault_domain(CHAIN, VAULT)
ABI = load_artifact("Settlement")["abi"]
_CONTRACT = Web3().eth.contract(abi=ABI)


def _order(**kw: object) -> Order:
    base: dict[str, object] = {
        "trader": TRADER,
        "sell_chain_id": CHAIN,
        "sell_token": "0x" + "01" * 20,
        "sell_amount": 1000 * 10**6,
        "buy_chain_id": 31002,
        "buy_token": "0x" + "02" * 20,
        "min_buy_amount": 3 * 10**17,
        "recipient": "0x" + "03" * 20,
        "nonce": 5,
        "deadline": 1_900_000_000,
        "quote_id": bytes(range(32)),
    }
    base.update(kw)
    return Order(**base)  # type: ignore[arg-type]


def test_order_type_is_the_contracts() -> None:
    src = (ROOT / "contracts" / "src" / "Settlement.sol").read_text()
    m = re.search(r'ORDER_TYPEHASH = keccak256\(\s*"([^"]+)"\s*"([^"]+)"\s*\)', src)
    assert m is not None
    assert m.group(1) + m.group(2) == ORDER_TYPE_STRING
    assert ORDER_TYPE.name == "Order"


def test_order_digest_matches_eth_account() -> None:
    o = _order()
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Order": ORDER_TYPE.to_eip712_types(),
        },
        "primaryType": "Order",
        "domain": DOMAIN.to_json(),
        "message": o.values(),
    }
    msg = encode_typed_data(full_message=typed)
    expected = keccak(b"\x19" + msg.version + msg.header + msg.body)
    assert o.digest(DOMAIN) == expected
    signed = o.sign(DOMAIN, KEY)
    assert recover(o.digest(DOMAIN), signed.signature) == TRADER


def test_order_record_layout() -> None:
    o = _order()
    signed = o.sign(DOMAIN, KEY)
    rec = order_record(signed, payout_leg=6)
    assert len(rec) == ORDER_BYTES
    assert int.from_bytes(rec[0:8], "big") == o.buy_chain_id
    assert rec[8:28] == bytes.fromhex(o.buy_token[2:])
    assert int.from_bytes(rec[28:40], "big") == o.min_buy_amount
    assert rec[40:60] == bytes.fromhex(o.recipient[2:])
    assert int.from_bytes(rec[60:92], "big") == o.nonce
    assert int.from_bytes(rec[92:100], "big") == o.deadline
    assert rec[100:132] == o.quote_id
    assert rec[132:197] == signed.signature
    assert int.from_bytes(rec[197:199], "big") == 6
    assert int.from_bytes(order_record(signed)[197:199], "big") == NO_LINK


@pytest.mark.parametrize(
    "bad",
    [
        {"min_buy_amount": 1 << 96},
        {"deadline": 1 << 64},
        {"buy_chain_id": 1 << 64},
    ],
)
def test_order_record_rejects_unencodable_orders(bad: dict[str, int]) -> None:
    signed = _order(**bad).sign(DOMAIN, KEY)
    with pytest.raises(ValueError):
        order_record(signed)


def test_legs_of_an_order() -> None:
    o = _order()
    h = o.digest(DOMAIN)
    pull = pull_leg(o, 0, h)
    assert (pull.kind, pull.account, pull.amount, pull.min_amount) == (
        LegKind.PULL,
        int(TRADER, 16),
        o.sell_amount,
        0,
    )
    pay = payout_leg(o, 3, 4 * 10**17, h)
    assert (pay.kind, pay.account, pay.min_amount) == (
        LegKind.PAYOUT,
        int(o.recipient, 16),
        o.min_buy_amount,
    )
    assert pull.order_ref == pay.order_ref == order_ref_from_hash(h)


def _batch() -> tuple[Batch, list[Order]]:
    orders = [_order(nonce=i) for i in range(2)]
    legs = [
        pull_leg(orders[0], 0, orders[0].digest(DOMAIN)),
        Leg(LegKind.POOL, 0xABC, 0, 10**6, 0, 1),
        pull_leg(orders[1], 0, orders[1].digest(DOMAIN)),
        Leg(LegKind.PAYOUT, 0xDEF, 1, 10**6, 10**6, 2),
    ]
    return Batch(CHAIN, 0, genesis_head(CHAIN), tuple(legs)), orders


def test_settle_call_and_encoding_match_the_abi() -> None:
    batch, orders = _batch()
    signed = [o.sign(DOMAIN, KEY) for o in orders]
    proof = list(range(1, 9))
    call = settle_call(batch, 16, proof, signed, links={2: 3}, pool_min_out={1: 77}, confirms=[5])
    assert call.count == 4
    assert list(call.words) == calldata_words(batch.legs)
    assert call.new_head == public_inputs_for(batch).new_head
    # extra: record, pool minimum, record (with its link), in leg order.
    assert call.extra == (
        order_record(signed[0]) + (77).to_bytes(32, "big") + order_record(signed[1], 3)
    )
    expected = _CONTRACT.encode_abi("settle", args=list(call.args()))
    assert encode_settle(call) == bytes.fromhex(expected[2:])


def test_settle_call_needs_one_order_per_pull() -> None:
    batch, orders = _batch()
    with pytest.raises(ValueError):
        settle_call(batch, 16, [0] * 8, [orders[0].sign(DOMAIN, KEY)])
    with pytest.raises(ValueError):
        settle_call(
            batch, 16, [0] * 7, {0: orders[0].sign(DOMAIN, KEY), 2: orders[1].sign(DOMAIN, KEY)}
        )


def test_confirm_and_reclaim_calldata_match_the_abi() -> None:
    assert encode_confirm([1, 2]) == bytes.fromhex(
        _CONTRACT.encode_abi("confirmPayouts", args=[[1, 2]])[2:]
    )
    o = _order()
    p = ReclaimProof(pull_ref(8, 1), 1234, (b"\x01" * 32, o.digest(DOMAIN)))
    expected = _CONTRACT.encode_abi(
        "reclaim", args=[o.as_abi(), p.pull_ref, p.settled_at, list(p.open_hashes)]
    )
    assert encode_reclaim(o, p) == bytes.fromhex(expected[2:])


@given(st.integers(0, 2**56), st.integers(0, 63))
def test_pull_ref_round_trip(start: int, pos: int) -> None:
    assert split_pull_ref(pull_ref(start, pos)) == (start, pos)


def _log(
    sig: str, indexed: list[tuple[str, object]], data: list[tuple[str, object]]
) -> dict[str, object]:
    topics = [keccak(sig.encode())] + [abi_encode([t], [v]) for t, v in indexed]
    return {
        "address": VAULT,
        "topics": ["0x" + t.hex() for t in topics],
        "data": "0x" + abi_encode([t for t, _ in data], [v for _, v in data]).hex(),
    }


def test_event_abi_signatures_are_the_contracts() -> None:
    names = {
        "BatchSettled",
        "Pulled",
        "PullFailed",
        "Paid",
        "PayoutSkipped",
        "MakerLeg",
        "PoolTrade",
        "PayoutConfirmed",
        "Reclaimed",
    }
    sigs = {
        e["name"]: f"{e['name']}({','.join(i['type'] for i in e['inputs'])})"
        for e in ABI
        if e["type"] == "event" and e["name"] in names
    }
    assert set(sigs) == names
    h = b"\x07" * 32
    logs = [
        _log(
            sigs["BatchSettled"],
            [("uint256", 8)],
            [("uint256", 4), ("uint256", 99), ("uint256", 1)],
        ),
        _log(sigs["Pulled"], [("bytes32", h)], [("uint256", pull_ref(8, 0))]),
        _log(sigs["Pulled"], [("bytes32", h)], [("uint256", NO_REF)]),
        _log(sigs["PullFailed"], [("bytes32", h)], [("uint256", 9), ("uint8", 4)]),
        _log(sigs["Paid"], [], [("uint256", 10)]),
        _log(sigs["PayoutSkipped"], [], [("uint256", 11)]),
        _log(sigs["MakerLeg"], [], [("uint256", 12), ("bool", False)]),
        _log(sigs["PoolTrade"], [], [("uint256", 13), ("uint256", 0)]),
        _log(sigs["PayoutConfirmed"], [], [("uint256", 5)]),
        _log(
            sigs["Reclaimed"],
            [("bytes32", h)],
            [("uint256", 5), ("address", TRADER), ("uint256", 3)],
        ),
        {**_log(sigs["Paid"], [], [("uint256", 1)]), "address": "0x" + "cd" * 20},  # elsewhere
        _log("Transfer(address,address,uint256)", [], [("uint256", 1)]),  # not the vault's
    ]
    events = decode_logs(logs, VAULT)
    assert events == [
        BatchSettled(8, 4, 99, 1),
        Pulled(h, pull_ref(8, 0)),
        Pulled(h, NO_REF),
        PullFailed(h, 9, PullFailure.TRANSFER_FAILED),
        Paid(10),
        PayoutSkipped(11),
        MakerLeg(12, False),
        PoolTrade(13, 0),
        PayoutConfirmed(5),
        Reclaimed(h, 5, TRADER, 3),
    ]
    assert not events[7].ok  # type: ignore[union-attr]
    # reclaim_proof picks the batch's open pulls in position order.
    h2 = b"\x08" * 32
    batch_events = [Pulled(h2, pull_ref(8, 1)), Pulled(h, NO_REF), Pulled(h, pull_ref(8, 0))]
    assert reclaim_proof(h2, batch_events, 77) == ReclaimProof(pull_ref(8, 1), 77, (h, h2))
    with pytest.raises(ValueError):
        reclaim_proof(b"\x09" * 32, batch_events, 77)
