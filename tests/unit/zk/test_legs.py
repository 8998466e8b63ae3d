"""Leg encoding and the order-log hash chain."""

from __future__ import annotations

import pytest

from settlement.zk.constants import SCALAR_FIELD as R
from settlement.zk.legs import (
    GENESIS_DOMAIN,
    LEAF_INPUTS,
    Leg,
    LegKind,
    chain_head,
    decode_words,
    fold_heads,
    genesis_head,
    leaf,
    order_ref_from_hash,
)
from settlement.zk.poseidon import poseidon

ALICE = 0x00000000000000000000000000000000000A11CE
LEG = Leg(LegKind.PAYOUT, ALICE, token=3, amount=1_000_000, min_amount=990_000, order_ref=42)


def test_kinds_are_stable_ints() -> None:
    assert [int(k) for k in LegKind] == [1, 2, 3, 4, 5]
    assert [k.name for k in LegKind] == ["PULL", "PAYOUT", "MAKER_IN", "MAKER_OUT", "POOL"]


def test_leaf_layout() -> None:
    packed, word, ref = leaf(LEG)
    assert packed == ALICE + (2 << 160) + (3 << 168)
    assert word == 1_000_000 + (990_000 << 96)
    assert ref == 42
    assert LEG.words == (packed, word)
    assert packed < 1 << 200 and word < 1 << 192
    assert len(leaf(LEG)) == LEAF_INPUTS  # the width the API prepares its hash for at start


def test_decode_roundtrip_and_canonicality() -> None:
    assert decode_words(*leaf(LEG)) == LEG
    packed, word, _ = leaf(LEG)
    with pytest.raises(ValueError):
        decode_words(packed | 1 << 200, word)
    with pytest.raises(ValueError):
        decode_words(packed, word | 1 << 192)
    with pytest.raises(ValueError):
        decode_words(ALICE, 0)  # kind 0 is not a kind


@pytest.mark.parametrize(
    "kwargs",
    [
        {"account": 1 << 160},
        {"account": -1},
        {"token": 1 << 32},
        {"amount": 1 << 96},
        {"min_amount": 1 << 96},
        {"order_ref": R},
        {"kind": 0},
        {"kind": 6},
    ],
)
def test_out_of_range_fields_rejected(kwargs: dict[str, int]) -> None:
    base = {"kind": 2, "account": ALICE, "token": 0, "amount": 1, "min_amount": 0, "order_ref": 0}
    base.update(kwargs)
    with pytest.raises(ValueError):
        Leg(**base)  # type: ignore[arg-type]


def test_kind_from_int() -> None:
    assert Leg(1, ALICE, 0, 5).kind is LegKind.PULL  # type: ignore[arg-type]


def test_chain_head_is_poseidon_of_head_and_leaf() -> None:
    assert chain_head(7, LEG) == poseidon([7, *leaf(LEG)])
    legs = [LEG, Leg(LegKind.PULL, ALICE, 1, 5)]
    assert fold_heads(7, legs) == chain_head(chain_head(7, legs[0]), legs[1])
    assert fold_heads(7, []) == 7


def test_every_field_changes_the_head() -> None:
    h = chain_head(0, LEG)
    variants = [
        Leg(LegKind.PULL, ALICE, 3, 1_000_000, 990_000, 42),
        Leg(LegKind.PAYOUT, ALICE + 1, 3, 1_000_000, 990_000, 42),
        Leg(LegKind.PAYOUT, ALICE, 4, 1_000_000, 990_000, 42),
        Leg(LegKind.PAYOUT, ALICE, 3, 1_000_001, 990_000, 42),
        Leg(LegKind.PAYOUT, ALICE, 3, 1_000_000, 990_001, 42),
        Leg(LegKind.PAYOUT, ALICE, 3, 1_000_000, 990_000, 43),
    ]
    assert len({chain_head(0, v) for v in variants} | {h}) == len(variants) + 1
    assert chain_head(1, LEG) != h


def test_genesis_is_chain_specific() -> None:
    assert genesis_head(1) == poseidon([GENESIS_DOMAIN, 1])
    assert genesis_head(1) != genesis_head(31337)
    with pytest.raises(ValueError):
        genesis_head(0)


def test_order_ref_from_hash() -> None:
    assert order_ref_from_hash(b"\x00" * 31 + b"\x07") == 7
    assert order_ref_from_hash(b"\xff" * 32) == (2**256 - 1) % R
    with pytest.raises(ValueError):
        order_ref_from_hash(b"\x01")
