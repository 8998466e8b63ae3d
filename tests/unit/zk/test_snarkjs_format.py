"""snarkjs file formats, checked by reading them back (snarkjs itself: integration tests)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from settlement.zk import groth16
from settlement.zk import snarkjs_format as sf
from settlement.zk.constants import FIELD_MODULUS, SCALAR_FIELD
from settlement.zk.testing import random_circuit


def _sections(path: Path, magic: bytes) -> tuple[int, dict[int, bytes]]:
    blob = path.read_bytes()
    assert blob[:4] == magic
    version, count = struct.unpack_from("<II", blob, 4)
    off, out = 12, {}
    for _ in range(count):
        sid, size = struct.unpack_from("<IQ", blob, off)
        out[sid] = blob[off + 12 : off + 12 + size]
        off += 12 + size
    assert off == len(blob)
    return version, out


@pytest.fixture(scope="module")
def material() -> tuple[object, groth16.ProvingKey, groth16.VerifyingKey, groth16.Proof]:
    rc = random_circuit(40, 2, seed=5, bit_fraction=0.5)
    pk, vk = groth16.setup(rc.r1cs, processes=1)
    return rc, pk, vk, groth16.prove(pk, rc.r1cs, rc.witness, processes=1)


def test_json_round_trip(tmp_path: Path, material) -> None:  # type: ignore[no-untyped-def]
    rc, _, vk, proof = material
    sf.write_proof_json(tmp_path / "p.json", proof)
    sf.write_public_json(tmp_path / "pub.json", rc.public_inputs)
    assert sf.read_proof_json(tmp_path / "p.json") == proof
    assert sf.read_public_json(tmp_path / "pub.json") == rc.public_inputs
    doc = sf.vk_to_json(vk)
    assert doc["nPublic"] == 2 and len(doc["IC"]) == 3
    assert doc["vk_beta_2"][0] == [str(vk.beta2[0]), str(vk.beta2[1])]  # type: ignore[index]


def test_r1cs_and_wtns_layout(tmp_path: Path, material) -> None:  # type: ignore[no-untyped-def]
    rc = material[0]
    sf.write_r1cs(tmp_path / "c.r1cs", rc.r1cs)
    version, sec = _sections(tmp_path / "c.r1cs", b"r1cs")
    assert version == 1 and sorted(sec) == [1, 2, 3]
    (n8,) = struct.unpack_from("<I", sec[1], 0)
    assert n8 == 32 and int.from_bytes(sec[1][4:36], "little") == SCALAR_FIELD
    n_wires, n_out, n_pub_in, _n_prv, n_labels, n_cons = struct.unpack_from("<IIIIQI", sec[1], 36)
    assert (n_wires, n_out + n_pub_in, n_labels, n_cons) == (
        rc.r1cs.n_wires,
        2,
        rc.r1cs.n_wires,
        40,
    )
    sf.write_wtns(tmp_path / "w.wtns", rc.witness)
    version, sec = _sections(tmp_path / "w.wtns", b"wtns")
    assert version == 2
    body = sec[2]
    assert [int.from_bytes(body[i : i + 32], "little") for i in range(0, len(body), 32)] == list(
        rc.witness
    )


def test_zkey_layout_and_montgomery_form(tmp_path: Path, material) -> None:  # type: ignore[no-untyped-def]
    rc, pk, vk, _ = material
    sf.write_zkey(tmp_path / "c.zkey", rc.r1cs, pk, vk)
    version, sec = _sections(tmp_path / "c.zkey", b"zkey")
    assert version == 1 and sorted(sec) == list(range(1, 11))
    assert struct.unpack("<I", sec[1]) == (1,)
    assert len(sec[5]) == len(sec[6]) == 64 * rc.r1cs.n_wires
    assert len(sec[7]) == 128 * rc.r1cs.n_wires
    assert len(sec[8]) == 64 * (rc.r1cs.n_wires - 3)
    assert len(sec[9]) == 64 * pk.domain_size
    r_inv = pow(1 << 256, -1, FIELD_MODULUS)
    x = int.from_bytes(sec[3][:32], "little") * r_inv % FIELD_MODULUS
    assert vk.ic[0] is not None and x == vk.ic[0][0]
    (n_coef,) = struct.unpack_from("<I", sec[4], 0)
    assert len(sec[4]) == 4 + n_coef * 44
    other = random_circuit(41, 2, seed=5).r1cs
    with pytest.raises(ValueError):
        sf.write_zkey(tmp_path / "x.zkey", other, pk, vk)
