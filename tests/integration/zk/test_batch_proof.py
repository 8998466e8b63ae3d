"""End to end: prove a small batch with Groth16 and verify it; tampering is rejected.

One fresh setup for the 8-slot circuit per run (a second or two) in a temporary key
cache, one proof; each tampering case costs one verification.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from settlement.zk import groth16
from settlement.zk.batch import (
    Batch,
    BatchWitness,
    build_batch_witness,
    calldata_words,
    public_inputs_for,
)
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
    assert bw.capacity == 8  # the smallest that holds its 5 legs
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


# -- on chain: the contract side computes z and acc itself ----------------------------

# A reference for the settlement contract's binding step (docs/proofs.md §3, §6): z and
# acc from calldata words, then the generated verifier on the 7 public inputs.
_BINDING_SOL = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IVerifier {
    function verifyProof(uint256[2] calldata a, uint256[2][2] calldata b, uint256[2] calldata c,
                         uint256[7] calldata input) external view returns (bool);
}

contract BatchBinding {
    uint256 constant R = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    IVerifier immutable verifier;

    constructor(IVerifier v) { verifier = v; }

    function challenge(uint256 chainId, uint256 startIndex, uint256 oldHead, uint256 newHead,
                       uint256[] calldata words) public pure returns (uint256) {
        require(words.length % 2 == 0, "words");
        uint256 count = words.length / 2;
        return uint256(keccak256(abi.encodePacked(chainId, startIndex, count, oldHead, newHead, words))) % R;
    }

    function accumulate(uint256 z, uint256 chainId, uint256 startIndex, uint256[] calldata words)
        public pure returns (uint256 acc)
    {
        acc = addmod(chainId, mulmod(startIndex, z, R), R);
        uint256 zp = mulmod(z, z, R);
        for (uint256 j = 0; j < words.length; j++) {
            acc = addmod(acc, mulmod(words[j], zp, R), R);
            zp = mulmod(zp, z, R);
        }
    }

    function check(uint256 chainId, uint256 startIndex, uint256 oldHead, uint256 newHead,
                   uint256[] calldata words, uint256[2] calldata a, uint256[2][2] calldata b,
                   uint256[2] calldata c) external view returns (bool) {
        for (uint256 j = 0; j < words.length; j += 2) {
            require(words[j] >> 200 == 0 && words[j + 1] >> 192 == 0, "non-canonical");
        }
        uint256[7] memory x;
        x[0] = chainId;
        x[1] = startIndex;
        x[2] = words.length / 2;
        x[3] = oldHead;
        x[4] = newHead;
        x[5] = challenge(chainId, startIndex, oldHead, newHead, words);
        x[6] = accumulate(x[5], chainId, startIndex, words);
        return verifier.verifyProof(a, b, c, x);
    }
}
"""


def _deploy(w3: Any, artifact: Any, *args: Any) -> Any:
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = factory.constructor(*args).transact({"from": w3.eth.accounts[0], "gas": 8_000_000})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    assert receipt["status"] == 1
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)


def test_on_chain_binding_and_verification(
    w3: Any,
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
    proven: tuple[BatchWitness, groth16.Proof],
) -> None:
    from scripts.solc import compile_sources
    from settlement.zk.verifier_sol import generate_verifier, proof_call_args

    arts = compile_sources(
        {"Verifier.sol": generate_verifier(keys[1]), "BatchBinding.sol": _BINDING_SOL}
    )
    verifier = _deploy(w3, arts["Groth16Verifier"])
    binding = _deploy(w3, arts["BatchBinding"], verifier.address)

    _, proof = proven
    pub = public_inputs_for(BATCH)
    words = calldata_words(BATCH.legs)
    head_args = (CHAIN, BATCH.start_index, pub.old_head, pub.new_head)
    assert binding.functions.challenge(*head_args, words).call() == pub.z
    assert binding.functions.accumulate(pub.z, CHAIN, BATCH.start_index, words).call() == pub.acc
    a, b, c, _ = proof_call_args(proof, pub.as_list())
    assert binding.functions.check(*head_args, words, a, b, c).call()

    # Any changed word (a payout amount one unit lower, another recipient), the cursor, or
    # a dropped leg: the contract's z/acc change and the proof is rejected.
    tampered = [
        (head_args, [*words[:3], words[3] - 1, *words[4:]]),
        (head_args, [words[0] ^ 1, *words[1:]]),
        (head_args, words[:-2]),
        ((CHAIN, BATCH.start_index + 1, pub.old_head, pub.new_head), words),
        ((CHAIN, BATCH.start_index, pub.old_head, pub.new_head + 1), words),
    ]
    for args, ws in tampered:
        assert not binding.functions.check(*args, ws, a, b, c).call()
