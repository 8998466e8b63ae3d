"""BN254 (alt_bn128) moduli, as py_ecc and the EVM precompiles define them."""

from __future__ import annotations

__all__ = ["FIELD_MODULUS", "SCALAR_FIELD"]

# Base field Fq: coordinates of curve points.
FIELD_MODULUS = 21888242871839275222246405745257275088696311157297823662689037894645226208583
# Scalar field Fr: circuit values, witness, public inputs.
SCALAR_FIELD = 21888242871839275222246405745257275088548364400416034343698204186575808495617
