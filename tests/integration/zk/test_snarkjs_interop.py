"""snarkjs (node) against our files: it verifies our proofs, checks our .r1cs/.wtns,
proves with our exported .zkey, and our verifiers (Python and contract) accept its proofs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from web3 import Web3

from scripts.solc import Artifact
from settlement.zk import groth16
from settlement.zk import snarkjs_format as sf
from settlement.zk.constants import FIELD_MODULUS, SCALAR_FIELD
from settlement.zk.verifier_sol import proof_call_args
from tests.integration.zk.conftest import Keyed, deploy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SNARKJS = ROOT / "node_modules" / "snarkjs" / "build" / "cli.cjs"


def snarkjs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None or not SNARKJS.exists():
        pytest.skip("node or snarkjs not installed")
    return subprocess.run(
        [node, str(SNARKJS), *map(str, args)], capture_output=True, text=True, timeout=300
    )


def snarkjs_verifies(
    tmp: Path, vk: groth16.VerifyingKey, pub: list[int], proof: groth16.Proof
) -> bool:
    sf.write_vk_json(tmp / "vk.json", vk)
    sf.write_public_json(tmp / "public.json", pub)
    sf.write_proof_json(tmp / "proof.json", proof)
    out = snarkjs("groth16", "verify", tmp / "vk.json", tmp / "public.json", tmp / "proof.json")
    ok = out.returncode == 0 and "OK!" in out.stdout
    assert ok or "Invalid proof" in out.stdout + out.stderr or out.returncode != 0
    return ok


@pytest.fixture(scope="module")
def proof(keyed: Keyed) -> groth16.Proof:
    return groth16.prove(keyed.pk, keyed.circuit.r1cs, keyed.circuit.witness, processes=1)


def test_snarkjs_verifies_our_proof(tmp_path: Path, keyed: Keyed, proof: groth16.Proof) -> None:
    assert snarkjs_verifies(tmp_path, keyed.vk, keyed.circuit.public_inputs, proof)


def test_snarkjs_rejects_altered_proofs_inputs_and_keys(
    tmp_path: Path, keyed: Keyed, other_keyed: Keyed, proof: groth16.Proof
) -> None:
    pub = keyed.circuit.public_inputs
    words = proof.to_evm_words()
    for i in (1, 2, 7):  # A.y, B.x imaginary, C.y
        w = list(words)
        w[i] = (w[i] + 1) % FIELD_MODULUS
        assert not snarkjs_verifies(tmp_path, keyed.vk, pub, groth16.Proof.from_evm_words(w))
    # A valid but different A (negated).
    w = list(words)
    w[1] = FIELD_MODULUS - w[1]
    assert not snarkjs_verifies(tmp_path, keyed.vk, pub, groth16.Proof.from_evm_words(w))
    bad = list(pub)
    bad[0] = (bad[0] + 1) % SCALAR_FIELD
    assert not snarkjs_verifies(tmp_path, keyed.vk, bad, proof)
    assert not snarkjs_verifies(tmp_path, other_keyed.vk, pub, proof)


def test_snarkjs_accepts_our_r1cs_and_witness(tmp_path: Path, keyed: Keyed) -> None:
    r1cs, wtns = tmp_path / "c.r1cs", tmp_path / "w.wtns"
    sf.write_r1cs(r1cs, keyed.circuit.r1cs)
    sf.write_wtns(wtns, keyed.circuit.witness)
    info = snarkjs("r1cs", "info", r1cs)
    assert info.returncode == 0, info.stderr
    assert f"# of Constraints: {keyed.circuit.r1cs.n_constraints}" in info.stdout
    assert f"# of Wires: {keyed.circuit.r1cs.n_wires}" in info.stdout
    check = snarkjs("wtns", "check", r1cs, wtns)
    assert check.returncode == 0 and "WITNESS IS CORRECT" in check.stdout, (
        check.stdout + check.stderr
    )
    # A wrong witness is caught by snarkjs too.
    w = list(keyed.circuit.witness)
    w[-1] = (w[-1] + 2) % SCALAR_FIELD  # +2: also breaks a bit wire (0 -> 2, 1 -> 3)
    sf.write_wtns(wtns, w)
    check = snarkjs("wtns", "check", r1cs, wtns)
    assert "WITNESS IS CORRECT" not in check.stdout


def test_snarkjs_proves_with_our_zkey(
    tmp_path: Path, w3: Web3, keyed: Keyed, verifier_artifact: Artifact
) -> None:
    zkey, wtns = tmp_path / "c.zkey", tmp_path / "w.wtns"
    sf.write_zkey(zkey, keyed.circuit.r1cs, keyed.pk, keyed.vk)
    sf.write_wtns(wtns, keyed.circuit.witness)
    out = snarkjs("groth16", "prove", zkey, wtns, tmp_path / "p.json", tmp_path / "pub.json")
    assert out.returncode == 0, out.stdout + out.stderr
    their = sf.read_proof_json(tmp_path / "p.json")
    pub = sf.read_public_json(tmp_path / "pub.json")
    assert pub == keyed.circuit.public_inputs
    assert groth16.verify(keyed.vk, pub, their)
    v = deploy(w3, verifier_artifact)
    assert v.functions.verifyProof(*proof_call_args(their, pub)).call()
    # snarkjs's own export of our zkey's verification key equals ours.
    out = snarkjs("zkey", "export", "verificationkey", zkey, tmp_path / "vk.json")
    assert out.returncode == 0, out.stdout + out.stderr
    exported = json.loads((tmp_path / "vk.json").read_text())
    ours = sf.vk_to_json(keyed.vk)
    for field in ("vk_alpha_1", "vk_beta_2", "vk_gamma_2", "vk_delta_2", "IC", "nPublic"):
        assert exported[field] == ours[field], field
