"""The generated Solidity verifier on Anvil: accepts our proofs, rejects any alteration
(returns false or reverts), and batch-verifies k proofs with k + 3 pairings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from web3 import Web3
from web3.exceptions import ContractLogicError

from scripts.solc import Artifact, compile_sources
from settlement.zk import groth16
from settlement.zk.constants import FIELD_MODULUS, SCALAR_FIELD
from settlement.zk.verifier_sol import batch_call_args, generate_verifier, proof_call_args
from tests.integration.zk.conftest import Keyed, deploy

pytestmark = pytest.mark.integration

Proven = list[tuple[groth16.Proof, list[int]]]


@pytest.fixture(scope="module")
def proofs(keyed: Keyed) -> Proven:
    """Eight proofs of the same statement (fresh randomness each)."""
    return [
        (
            groth16.prove(keyed.pk, keyed.circuit.r1cs, keyed.circuit.witness, processes=1),
            keyed.circuit.public_inputs,
        )
        for _ in range(8)
    ]


def accepted(fn: Any) -> bool:
    """A verifier call's verdict: true, or false / reverted (both mean rejected)."""
    try:
        return bool(fn.call())
    except ContractLogicError:
        return False


def gas_used(w3: Web3, fn: Any) -> int:
    """Gas of a real transaction with a generous limit (eth_estimateGas is not used: a
    view that returns false on a failed precompile would fool it)."""
    tx = fn.transact({"from": w3.eth.accounts[0], "gas": 5_000_000})
    return int(w3.eth.wait_for_transaction_receipt(tx)["gasUsed"])


def tampered(proof: groth16.Proof) -> list[list[int]]:
    """Each of the 8 calldata words +1, and A replaced by -A (a valid but wrong point)."""
    words = proof.to_evm_words()
    out = []
    for i in range(8):
        w = list(words)
        w[i] = (w[i] + 1) % FIELD_MODULUS
        out.append(w)
    w = list(words)
    w[1] = (FIELD_MODULUS - w[1]) % FIELD_MODULUS
    out.append(w)
    return out


def _split(words: list[int]) -> tuple[list[int], list[list[int]], list[int]]:
    return words[0:2], [words[2:4], words[4:6]], words[6:8]


def test_accepts_valid_proofs(w3: Web3, verifier_artifact: Artifact, proofs: Proven) -> None:
    v = deploy(w3, verifier_artifact)
    for proof, pub in proofs[:3]:
        assert v.functions.verifyProof(*proof_call_args(proof, pub)).call()


def test_rejects_altered_proof_elements(
    w3: Web3, keyed: Keyed, verifier_artifact: Artifact, proofs: Proven
) -> None:
    v = deploy(w3, verifier_artifact)
    proof, pub = proofs[0]
    for words in tampered(proof):
        assert not accepted(v.functions.verifyProof(*_split(words), pub))
        assert not groth16.verify(keyed.vk, pub, groth16.Proof.from_evm_words(words))


def test_rejects_altered_public_inputs(
    w3: Web3, keyed: Keyed, verifier_artifact: Artifact, proofs: Proven
) -> None:
    v = deploy(w3, verifier_artifact)
    proof, pub = proofs[0]
    a, b, c = proof.to_evm_args()
    for i in range(len(pub)):
        # A different input, and the same input plus r (equal mod r: must still fail).
        for bad in ((pub[i] + 1) % SCALAR_FIELD, pub[i] + SCALAR_FIELD):
            altered = list(pub)
            altered[i] = bad
            assert not accepted(v.functions.verifyProof(a, b, c, altered))
            assert not groth16.verify(keyed.vk, altered, proof)


def test_rejects_unreduced_coordinates(
    w3: Web3, verifier_artifact: Artifact, proofs: Proven
) -> None:
    v = deploy(w3, verifier_artifact)
    proof, pub = proofs[0]
    a, b, c = proof.to_evm_args()
    assert not accepted(v.functions.verifyProof([a[0], a[1] + FIELD_MODULUS], b, c, pub))
    assert not accepted(v.functions.verifyProof(a, b, [c[0] + FIELD_MODULUS, c[1]], pub))


def test_rejects_proof_under_another_circuits_key(
    w3: Web3, other_keyed: Keyed, proofs: Proven
) -> None:
    other = compile_sources({"V.sol": generate_verifier(other_keyed.vk)})["Groth16Verifier"]
    v = deploy(w3, other)
    proof, pub = proofs[0]
    assert not accepted(v.functions.verifyProof(*proof_call_args(proof, pub)))
    assert not groth16.verify(other_keyed.vk, pub, proof)


def test_batch_accepts_k_valid_proofs(
    w3: Web3, verifier_artifact: Artifact, proofs: Proven
) -> None:
    v = deploy(w3, verifier_artifact)
    for k in (1, 2, 4, 8):
        args = batch_call_args([p for p, _ in proofs[:k]], [x for _, x in proofs[:k]])
        assert v.functions.verifyBatch(*args).call()


def test_batch_rejects_any_altered_proof_or_input(
    w3: Web3, verifier_artifact: Artifact, proofs: Proven
) -> None:
    v = deploy(w3, verifier_artifact)
    ps = [p for p, _ in proofs[:4]]
    ins = [list(x) for _, x in proofs[:4]]
    for j in range(4):
        for words in tampered(ps[j]):
            bad = list(ps)
            bad[j] = groth16.Proof.from_evm_words(words)
            assert not accepted(v.functions.verifyBatch(*batch_call_args(bad, ins)))
        bad_in = [list(x) for x in ins]
        bad_in[j][-1] = (bad_in[j][-1] + 1) % SCALAR_FIELD
        assert not accepted(v.functions.verifyBatch(*batch_call_args(ps, bad_in)))
    # Two proofs swapped with each other's A: each alone is wrong, the pair must not pass.
    swapped = [groth16.Proof(ps[1].a, ps[0].b, ps[0].c), groth16.Proof(ps[0].a, ps[1].b, ps[1].c)]
    assert not accepted(v.functions.verifyBatch(*batch_call_args(swapped, ins[:2])))
    flat, flat_in = batch_call_args(ps, ins)
    assert not accepted(v.functions.verifyBatch(flat[:-1], flat_in))
    assert not accepted(v.functions.verifyBatch(flat, flat_in[:-1]))
    assert not accepted(v.functions.verifyBatch([], []))


def test_gas(
    w3: Web3,
    keyed: Keyed,
    verifier_artifact: Artifact,
    proofs: Proven,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Gas of a verifying transaction; a batch costs far less per proof than k singles."""
    v = deploy(w3, verifier_artifact)
    proof, pub = proofs[0]
    single = gas_used(w3, v.functions.verifyProof(*proof_call_args(proof, pub)))
    batch = {}
    for k in (1, 2, 4, 8):
        args = batch_call_args([p for p, _ in proofs[:k]], [x for _, x in proofs[:k]])
        batch[k] = gas_used(w3, v.functions.verifyBatch(*args)) / k
    with capsys.disabled():
        print(
            "\ngas",
            json.dumps(
                {"n_public": len(pub), "verifyProof": single, "verifyBatch_per_proof": batch}
            ),
        )
    assert 181_000 < single < 260_000  # 4 pairings are 181k by themselves (EIP-1108)
    assert batch[8] < single / 2
