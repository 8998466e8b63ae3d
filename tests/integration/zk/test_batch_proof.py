"""End to end: prove a small batch with Groth16 and verify it; tampering is rejected.

One fresh setup for the 16-slot circuit per run (a few seconds) in a temporary key
cache, one proof; each tampering case costs one verification.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from settlement.zk import groth16
from settlement.zk.batch import Batch, BatchWitness, build_batch_witness, public_inputs_for
from settlement.zk.constants import SCALAR_FIELD as R
from settlement.zk.legs import Leg, LegKind, genesis_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAIN = 31337


def _batch(seed: int, n: int, start: int = 0) -> Batch:
    rng = random.Random(seed)
    legs = []
    for i in range(n):
        kind = LegKind.PAYOUT if i % 2 else LegKind.PULL
        amount = rng.randrange(1, 10**24)
        legs.append(
            Leg(
                kind,
                rng.getrandbits(160),
                rng.randrange(4),
                amount,
                amount * 99 // 100 if kind is LegKind.PAYOUT else 0,
                rng.randrange(R),
            )
        )
    return Batch(CHAIN, start, genesis_head(CHAIN), tuple(legs))


BATCH = _batch(1, 5)


@pytest.fixture(scope="module")
def keys(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[groth16.ProvingKey, groth16.VerifyingKey]]:
    cache: Path = tmp_path_factory.mktemp("zk-keys")
    yield groth16.load_or_setup(build_batch_witness(BATCH).r1cs, cache)


@pytest.fixture(scope="module")
def proven(
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
) -> tuple[BatchWitness, groth16.Proof]:
    bw = build_batch_witness(BATCH)
    return bw, groth16.prove(keys[0], bw.r1cs, bw.witness)


def test_honest_batch_proof_verifies(
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
    proven: tuple[BatchWitness, groth16.Proof],
) -> None:
    bw, proof = proven
    assert bw.capacity == 16
    assert groth16.verify(keys[1], public_inputs_for(BATCH).as_list(), proof)


@pytest.mark.parametrize("index", range(7))
def test_changed_public_input_rejected(
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
    proven: tuple[BatchWitness, groth16.Proof],
    index: int,
) -> None:
    bw, proof = proven
    pub = list(bw.public_inputs)
    pub[index] = (pub[index] + 1) % R
    assert not groth16.verify(keys[1], pub, proof)


def test_proof_does_not_transfer_to_other_legs(
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
    proven: tuple[BatchWitness, groth16.Proof],
) -> None:
    _, proof = proven
    # Same length and cursor, one payout amount lowered by one unit: the contract's
    # z/acc (and newHead) for these calldata legs differ, so the proof fails.
    legs = list(BATCH.legs)
    legs[1] = dataclasses.replace(legs[1], amount=legs[1].amount - 1)
    other = dataclasses.replace(BATCH, legs=tuple(legs))
    assert not groth16.verify(keys[1], public_inputs_for(other).as_list(), proof)
    # Another chain with the same legs.
    moved = Batch(1, 0, genesis_head(1), BATCH.legs)
    assert not groth16.verify(keys[1], public_inputs_for(moved).as_list(), proof)


def test_dishonest_witness_cannot_be_proven(
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
) -> None:
    legs = list(BATCH.legs)
    legs[1] = dataclasses.replace(legs[1], amount=legs[1].min_amount - 1)  # below minimum
    bw = build_batch_witness(dataclasses.replace(BATCH, legs=tuple(legs)), strict=False)
    with pytest.raises(groth16.WitnessError):
        groth16.prove(keys[0], bw.r1cs, bw.witness)
