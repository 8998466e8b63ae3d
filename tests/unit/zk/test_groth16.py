"""Groth16 on small random circuits: completeness, soundness smoke tests, key cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from settlement.zk import groth16
from settlement.zk.constants import FIELD_MODULUS, SCALAR_FIELD
from settlement.zk.curve import g1_neg
from settlement.zk.r1cs import R1CS, Constraint
from settlement.zk.testing import RandomCircuit, random_circuit
from tests.python_json import python_json


@pytest.fixture(scope="module")
def circuit() -> RandomCircuit:
    return random_circuit(100, 4, seed=7, bit_fraction=0.4)


@pytest.fixture(scope="module")
def keys(circuit: RandomCircuit) -> tuple[groth16.ProvingKey, groth16.VerifyingKey]:
    return groth16.setup(circuit.r1cs)


@pytest.fixture(scope="module")
def proof(
    circuit: RandomCircuit, keys: tuple[groth16.ProvingKey, groth16.VerifyingKey]
) -> groth16.Proof:
    return groth16.prove(keys[0], circuit.r1cs, circuit.witness)


def test_domain_size_follows_snarkjs() -> None:
    assert groth16.domain_size(random_circuit(60, 3).r1cs) == 64
    assert groth16.domain_size(random_circuit(61, 3).r1cs) == 128
    assert groth16.domain_size(random_circuit(59, 4).r1cs) == 64


def test_completeness(
    circuit: RandomCircuit,
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
    proof: groth16.Proof,
) -> None:
    assert groth16.verify(keys[1], circuit.public_inputs, proof)
    # A second proof is different (fresh r, s) and also verifies.
    again = groth16.prove(keys[0], circuit.r1cs, circuit.witness, processes=1)
    assert again != proof
    assert groth16.verify(keys[1], circuit.public_inputs, again)


@pytest.mark.parametrize(
    ("n", "n_pub", "bits"), [(1, 1, 0.0), (30, 0, 0.5), (62, 1, 0.0), (200, 8, 0.9)]
)
def test_completeness_shapes(n: int, n_pub: int, bits: float) -> None:
    rc = random_circuit(n, n_pub, seed=n, bit_fraction=bits)
    pk, vk = groth16.setup(rc.r1cs, processes=1)
    assert groth16.verify(vk, rc.public_inputs, groth16.prove(pk, rc.r1cs, rc.witness))


def test_rejects_altered_proof(
    circuit: RandomCircuit,
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
    proof: groth16.Proof,
) -> None:
    vk = keys[1]
    pub = circuit.public_inputs
    words = proof.to_evm_words()
    for i in range(8):
        w = list(words)
        w[i] = (w[i] + 1) % FIELD_MODULUS
        assert not groth16.verify(vk, pub, groth16.Proof.from_evm_words(w)), i
    assert not groth16.verify(vk, pub, groth16.Proof(g1_neg(proof.a), proof.b, proof.c))
    assert not groth16.verify(vk, pub, groth16.Proof(proof.a, proof.b, proof.a))
    assert not groth16.verify(vk, pub, groth16.Proof(None, proof.b, proof.c))


def test_rejects_altered_inputs(
    circuit: RandomCircuit,
    keys: tuple[groth16.ProvingKey, groth16.VerifyingKey],
    proof: groth16.Proof,
) -> None:
    pub = circuit.public_inputs
    for i in range(len(pub)):
        for bad in ((pub[i] + 1) % SCALAR_FIELD, pub[i] + SCALAR_FIELD):
            alt = list(pub)
            alt[i] = bad
            assert not groth16.verify(keys[1], alt, proof)
    assert not groth16.verify(keys[1], pub[:-1], proof)


def test_rejects_other_circuits_key(circuit: RandomCircuit, proof: groth16.Proof) -> None:
    other = random_circuit(100, 4, seed=8, bit_fraction=0.4)
    _, vk_other = groth16.setup(other.r1cs)
    assert not groth16.verify(vk_other, circuit.public_inputs, proof)
    # The same circuit with a fresh setup is another key too.
    _, vk_again = groth16.setup(circuit.r1cs)
    assert not groth16.verify(vk_again, circuit.public_inputs, proof)


def test_prove_refuses_unsatisfying_witness(
    circuit: RandomCircuit, keys: tuple[groth16.ProvingKey, groth16.VerifyingKey]
) -> None:
    w = list(circuit.witness)
    w[-1] = (w[-1] + 2) % SCALAR_FIELD  # +2: also breaks a bit wire (0 -> 2, 1 -> 3)
    with pytest.raises(groth16.WitnessError) as err:
        groth16.prove(keys[0], circuit.r1cs, w)
    assert err.value.constraint == circuit.r1cs.n_constraints - 1
    with pytest.raises(groth16.WitnessError):
        groth16.prove(keys[0], circuit.r1cs, [2, *circuit.witness[1:]])
    with pytest.raises(groth16.WitnessError):
        groth16.prove(keys[0], circuit.r1cs, circuit.witness[:-1])
    other = random_circuit(50, 4, seed=1)
    with pytest.raises(groth16.KeyMismatchError):
        groth16.prove(keys[0], other.r1cs, other.witness)


def test_public_input_soundness_needs_the_extra_rows() -> None:
    """A public wire used in no constraint is still bound by the proof (snarkjs's rows)."""
    r1cs = R1CS(n_wires=3, n_public=1, constraints=(Constraint(((2, 1),), ((2, 1),), ((2, 1),)),))
    pk, vk = groth16.setup(r1cs)
    proof = groth16.prove(pk, r1cs, [1, 42, 1])
    assert groth16.verify(vk, [42], proof)
    assert not groth16.verify(vk, [43], proof)


def test_progress_callback(
    circuit: RandomCircuit, keys: tuple[groth16.ProvingKey, groth16.VerifyingKey]
) -> None:
    seen: list[str] = []
    groth16.prove(keys[0], circuit.r1cs, circuit.witness, progress=lambda s, d, t: seen.append(s))
    assert "prove:fft" in seen and seen[-1] == "prove:done"


def test_rich_progress(
    circuit: RandomCircuit, keys: tuple[groth16.ProvingKey, groth16.VerifyingKey]
) -> None:
    with groth16.rich_progress() as cb:
        proof = groth16.prove(keys[0], circuit.r1cs, circuit.witness, progress=cb, processes=1)
    assert groth16.verify(keys[1], circuit.public_inputs, proof)


def test_vk_evm_words(keys: tuple[groth16.ProvingKey, groth16.VerifyingKey]) -> None:
    vk = keys[1]
    words = vk.to_evm_words()
    assert len(words) == 2 + 3 * 4 + 2 * len(vk.ic)
    assert vk.beta2 is not None and words[2:4] == [vk.beta2[1], vk.beta2[0]]


def test_evm_words_round_trip(proof: groth16.Proof) -> None:
    assert groth16.Proof.from_evm_words(proof.to_evm_words()) == proof
    _a, b, _c = proof.to_evm_args()
    assert proof.b is not None and b[0] == [proof.b[1], proof.b[0]]


def test_key_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rc = random_circuit(20, 2, seed=3)
    pk, vk = groth16.load_or_setup(rc.r1cs, tmp_path)
    files = list(tmp_path.glob("*.g16"))
    assert [f.stem for f in files] == [rc.r1cs.digest()]
    pk2, vk2 = groth16.load_or_setup(rc.r1cs, tmp_path)
    assert (pk2, vk2) == (pk, vk)
    assert groth16.verify(vk2, rc.public_inputs, groth16.prove(pk2, rc.r1cs, rc.witness))
    monkeypatch.setenv(groth16.CACHE_ENV, str(tmp_path / "env"))
    groth16.load_or_setup(rc.r1cs)
    assert (tmp_path / "env" / f"{rc.r1cs.digest()}.g16").exists()
    (tmp_path / "bad.g16").write_bytes(b'{"format": "nope"}\n')
    with pytest.raises(groth16.Groth16Error):
        groth16.load_keys(tmp_path / "bad.g16")


def test_default_key_cache_is_the_repositorys_wherever_the_process_runs(tmp_path: Path) -> None:
    # A prover started from another directory (`crossbook worker` by hand) must load the
    # keys the devnet's verifiers were generated from, not make keys of its own there.
    cache = python_json(
        "import json; from settlement.zk import groth16; print(json.dumps(str(groth16._cache_dir(None))))",
        tmp_path,
        unset=(groth16.CACHE_ENV,),
        timeout=60,
    )
    root = Path(__file__).resolve().parents[3]
    assert Path(cache) == root / "var" / "zk-keys"
