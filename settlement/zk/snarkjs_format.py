"""Interop with snarkjs/circom: JSON for keys, proofs and public signals; iden3 binary
`.r1cs`, `.wtns` and `.zkey` files.

The binary files share iden3's container: 4-byte magic, u32 version, u32 section count,
then sections as (u32 id, u64 byte size, payload), all little-endian.

- `.r1cs` v1: header (field size, prime, wire/output/input counts, labels, constraints),
  constraints as (count, (wire u32, coefficient)) for A, B, C, and a wire -> label map.
- `.wtns` v2: header (field size, prime, count) and the values, plain little-endian.
- `.zkey` v1 (Groth16): header, then IC, the A/B coefficient list, A, B1, B2, C and H
  queries. Points are stored affine in *Montgomery* form (x * 2^256 mod q, little-endian,
  G2 as c0 then c1, infinity as zeros) and coefficients as c * R^2 mod r with
  R = 2^256 mod r, because snarkjs multiplies them by the witness with a Montgomery
  multiplication. Our proving key already has snarkjs's QAP and H-query layout (see
  groth16.py), so the export is a re-encoding: `snarkjs groth16 prove` runs on our key.

JSON follows snarkjs: decimal strings, G1 as [x, y, "1"], G2 as [[x0, x1], [y0, y1],
["1", "0"]] (real part first; the EVM order is the reverse). `vk_alphabeta_12` is not
written: snarkjs's verifier does not read it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from settlement.zk.constants import FIELD_MODULUS, SCALAR_FIELD
from settlement.zk.curve import G1Point, G2Point
from settlement.zk.groth16 import Proof, ProvingKey, VerifyingKey, domain_size
from settlement.zk.r1cs import R1CS

__all__ = [
    "proof_from_json",
    "proof_to_json",
    "read_proof_json",
    "read_public_json",
    "vk_to_json",
    "write_proof_json",
    "write_public_json",
    "write_r1cs",
    "write_vk_json",
    "write_wtns",
    "write_zkey",
]

PathLike = str | os.PathLike[str]
_N8 = 32
_RQ = (1 << 256) % FIELD_MODULUS  # Montgomery factor of Fq
_R2R = pow(1 << 256, 2, SCALAR_FIELD)  # coefficients are stored times R^2 (see docstring)


# ---------------------------------------------------------------- JSON


def _g1_json(p: G1Point) -> list[str]:
    if p is None:
        return ["0", "1", "0"]
    return [str(p[0]), str(p[1]), "1"]


def _g2_json(p: G2Point) -> list[list[str]]:
    if p is None:
        return [["0", "0"], ["1", "0"], ["0", "0"]]
    return [[str(p[0]), str(p[1])], [str(p[2]), str(p[3])], ["1", "0"]]


def _g1_parse(v: Sequence[Any]) -> G1Point:
    x, y, z = (int(c) for c in v)
    if z == 0:
        return None
    if z != 1:  # snarkjs always writes affine; accept projective only at z = 1
        raise ValueError("G1 point not affine")
    return (x, y)


def _g2_parse(v: Sequence[Sequence[Any]]) -> G2Point:
    (x0, x1), (y0, y1), (z0, z1) = ((int(a), int(b)) for a, b in v)
    if (z0, z1) == (0, 0):
        return None
    if (z0, z1) != (1, 0):
        raise ValueError("G2 point not affine")
    return (x0, x1, y0, y1)


def vk_to_json(vk: VerifyingKey) -> dict[str, Any]:
    return {
        "protocol": "groth16",
        "curve": "bn128",
        "nPublic": vk.n_public,
        "vk_alpha_1": _g1_json(vk.alpha1),
        "vk_beta_2": _g2_json(vk.beta2),
        "vk_gamma_2": _g2_json(vk.gamma2),
        "vk_delta_2": _g2_json(vk.delta2),
        "IC": [_g1_json(p) for p in vk.ic],
    }


def proof_to_json(proof: Proof) -> dict[str, Any]:
    return {
        "pi_a": _g1_json(proof.a),
        "pi_b": _g2_json(proof.b),
        "pi_c": _g1_json(proof.c),
        "protocol": "groth16",
        "curve": "bn128",
    }


def proof_from_json(doc: dict[str, Any]) -> Proof:
    return Proof(_g1_parse(doc["pi_a"]), _g2_parse(doc["pi_b"]), _g1_parse(doc["pi_c"]))


def _write_json(path: PathLike, doc: Any) -> None:
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def write_vk_json(path: PathLike, vk: VerifyingKey) -> None:
    _write_json(path, vk_to_json(vk))


def write_proof_json(path: PathLike, proof: Proof) -> None:
    _write_json(path, proof_to_json(proof))


def write_public_json(path: PathLike, public_inputs: Iterable[int]) -> None:
    _write_json(path, [str(int(x) % SCALAR_FIELD) for x in public_inputs])


def read_proof_json(path: PathLike) -> Proof:
    return proof_from_json(json.loads(Path(path).read_text()))


def read_public_json(path: PathLike) -> list[int]:
    return [int(x) for x in json.loads(Path(path).read_text())]


# ---------------------------------------------------------------- iden3 binary container


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


def _u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def _le(v: int) -> bytes:
    return int(v).to_bytes(_N8, "little")


def _write_binfile(
    path: PathLike, magic: bytes, version: int, sections: Sequence[tuple[int, bytes]]
) -> None:
    parts = [magic, _u32(version), _u32(len(sections))]
    for sid, payload in sections:
        parts += [_u32(sid), _u64(len(payload)), payload]
    tmp = Path(f"{os.fspath(path)}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
    os.replace(tmp, path)


def _lc_bytes(lc: Sequence[tuple[int, int]]) -> bytes:
    return _u32(len(lc)) + b"".join(_u32(w) + _le(c % SCALAR_FIELD) for w, c in lc)


def write_r1cs(path: PathLike, r1cs: R1CS) -> None:
    """iden3 `.r1cs` v1; public signals are outputs then public inputs (`n_public_outputs`)."""
    n_out = r1cs.n_public_outputs
    header = b"".join(
        [
            _u32(_N8),
            _le(SCALAR_FIELD),
            _u32(r1cs.n_wires),
            _u32(n_out),
            _u32(r1cs.n_public - n_out),
            _u32(0),  # private inputs: not distinguished from intermediate wires here
            _u64(r1cs.n_wires),
            _u32(r1cs.n_constraints),
        ]
    )
    body = b"".join(_lc_bytes(c.a) + _lc_bytes(c.b) + _lc_bytes(c.c) for c in r1cs.constraints)
    labels = b"".join(_u64(i) for i in range(r1cs.n_wires))
    _write_binfile(path, b"r1cs", 1, [(1, header), (2, body), (3, labels)])


def write_wtns(path: PathLike, witness: Sequence[int]) -> None:
    """iden3 `.wtns` v2."""
    header = _u32(_N8) + _le(SCALAR_FIELD) + _u32(len(witness))
    body = b"".join(_le(int(v) % SCALAR_FIELD) for v in witness)
    _write_binfile(path, b"wtns", 2, [(1, header), (2, body)])


# ---------------------------------------------------------------- .zkey


def _g1_lem(p: G1Point) -> bytes:
    if p is None:
        return bytes(2 * _N8)
    return _le(p[0] * _RQ % FIELD_MODULUS) + _le(p[1] * _RQ % FIELD_MODULUS)


def _g2_lem(p: G2Point) -> bytes:
    if p is None:
        return bytes(4 * _N8)
    return b"".join(_le(c * _RQ % FIELD_MODULUS) for c in p)


def write_zkey(path: PathLike, r1cs: R1CS, pk: ProvingKey, vk: VerifyingKey) -> None:
    """Our key pair as a snarkjs Groth16 `.zkey` (no MPC contributions recorded)."""
    if pk.n_wires != r1cs.n_wires or pk.n_constraints != r1cs.n_constraints:
        raise ValueError("proving key and R1CS describe different circuits")
    if pk.domain_size != domain_size(r1cs):
        raise ValueError("proving key domain does not match the R1CS")
    npub = pk.n_public
    header = b"".join(
        [
            _u32(_N8),
            _le(FIELD_MODULUS),
            _u32(_N8),
            _le(SCALAR_FIELD),
            _u32(pk.n_wires),
            _u32(npub),
            _u32(pk.domain_size),
            _g1_lem(pk.alpha1),
            _g1_lem(pk.beta1),
            _g2_lem(pk.beta2),
            _g2_lem(vk.gamma2),
            _g1_lem(pk.delta1),
            _g2_lem(pk.delta2),
        ]
    )
    coefs: list[bytes] = []
    for j, con in enumerate(r1cs.constraints):
        for matrix, lc in ((0, con.a), (1, con.b)):
            for wire, c in lc:
                coefs.append(_u32(matrix) + _u32(j) + _u32(wire) + _le(c * _R2R % SCALAR_FIELD))
    one = _le(_R2R)
    for i in range(npub + 1):
        coefs.append(_u32(0) + _u32(r1cs.n_constraints + i) + _u32(i) + one)
    sections = [
        (1, _u32(1)),  # protocol: Groth16
        (2, header),
        (3, b"".join(_g1_lem(p) for p in vk.ic)),
        (4, _u32(len(coefs)) + b"".join(coefs)),
        (5, b"".join(_g1_lem(p) for p in pk.a_query)),
        (6, b"".join(_g1_lem(p) for p in pk.b1_query)),
        (7, b"".join(_g2_lem(p) for p in pk.b2_query)),
        (8, b"".join(_g1_lem(p) for p in pk.c_query)),
        (9, b"".join(_g1_lem(p) for p in pk.h_query)),
        # Contributions: a 64-byte circuit hash placeholder and zero contributions.
        (10, bytes(64) + _u32(0)),
    ]
    _write_binfile(path, b"zkey", 1, sections)
