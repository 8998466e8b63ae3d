"""Rank-1 constraint systems: the contract between circuits and the Groth16 prover.

A constraint says <a, w> * <b, w> = <c, w> over Fr, for the witness vector w.
Wire layout follows iden3/snarkjs: wire 0 is the constant 1, wires 1..n_public are the
public signals (outputs first, then inputs), every later wire is private. So
`witness[1 : 1 + n_public]` is exactly the public input vector a verifier sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from settlement.zk.constants import SCALAR_FIELD

__all__ = ["R1CS", "Constraint", "LinearCombination"]

# ((wire, coefficient mod r), ...), wires strictly increasing, no zero coefficients.
LinearCombination = tuple[tuple[int, int], ...]


def _eval(lc: LinearCombination, w: Sequence[int]) -> int:
    return sum(c * w[i] for i, c in lc) % SCALAR_FIELD


@dataclass(frozen=True, slots=True)
class Constraint:
    a: LinearCombination
    b: LinearCombination
    c: LinearCombination

    def holds(self, w: Sequence[int]) -> bool:
        return (_eval(self.a, w) * _eval(self.b, w) - _eval(self.c, w)) % SCALAR_FIELD == 0


@dataclass(frozen=True, slots=True)
class R1CS:
    n_wires: int  # including wire 0 (the constant one)
    n_public: int  # public outputs + public inputs, at wires 1..n_public
    constraints: tuple[Constraint, ...]
    name: str = ""
    n_public_outputs: int = 0  # of n_public, how many come first as outputs (iden3 nOutputs)

    @property
    def n_constraints(self) -> int:
        return len(self.constraints)

    def public_inputs(self, witness: Sequence[int]) -> list[int]:
        return [v % SCALAR_FIELD for v in witness[1 : 1 + self.n_public]]

    def first_unsatisfied(self, witness: Sequence[int]) -> int | None:
        """Index of the first violated constraint, or None when the witness satisfies all."""
        if len(witness) != self.n_wires or witness[0] % SCALAR_FIELD != 1:
            return -1
        for k, con in enumerate(self.constraints):
            if not con.holds(witness):
                return k
        return None

    def is_satisfied(self, witness: Sequence[int]) -> bool:
        return self.first_unsatisfied(witness) is None

    def digest(self) -> str:
        """A hash of the constraint system's structure (not of any witness): keys are cached by it."""
        h = hashlib.sha256()
        h.update(f"r1cs:{self.n_wires}:{self.n_public}:{self.n_public_outputs}:{len(self.constraints)}".encode())
        for con in self.constraints:
            for lc in (con.a, con.b, con.c):
                h.update(len(lc).to_bytes(4, "little"))
                for wire, coeff in lc:
                    h.update(wire.to_bytes(4, "little"))
                    h.update((coeff % SCALAR_FIELD).to_bytes(32, "little"))
        return h.hexdigest()
