"""Random satisfiable R1CS instances for tests and benchmarks.

A circuit of a given size is built together with a witness that satisfies it. The mix of
constraint kinds imitates a settlement circuit: booleanity checks (range-check bits),
products of full-size field elements (hashes), and linear combinations folded into
multiplications; public inputs appear in constraints so that the IC terms matter.
`bit_fraction` sets the share of bit wires, i.e. of 0/1 witness values that a real batch
circuit is full of and that the MSM handles almost for free.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from settlement.zk.constants import SCALAR_FIELD
from settlement.zk.r1cs import R1CS, Constraint, LinearCombination

__all__ = ["RandomCircuit", "random_circuit"]

R = SCALAR_FIELD


@dataclass(frozen=True, slots=True)
class RandomCircuit:
    r1cs: R1CS
    witness: tuple[int, ...]

    @property
    def public_inputs(self) -> list[int]:
        return self.r1cs.public_inputs(self.witness)


def _lc(terms: dict[int, int]) -> LinearCombination:
    return tuple(sorted((w, c % R) for w, c in terms.items() if c % R))


def random_circuit(
    n_constraints: int,
    n_public: int = 2,
    *,
    seed: int | None = None,
    bit_fraction: float = 0.0,
    name: str = "",
) -> RandomCircuit:
    """A satisfiable circuit with exactly `n_constraints` constraints and `n_public`
    public signals (wires 1..n_public). Each constraint defines one new private wire."""
    rng = random.Random(seed)
    n_wires = 1 + n_public + n_constraints
    w = [1] + [rng.randrange(R) for _ in range(n_public)] + [0] * n_constraints
    cons: list[Constraint] = []
    for k in range(n_constraints):
        out = 1 + n_public + k
        existing = out  # wires 0..out-1 are defined
        if rng.random() < bit_fraction:
            # b * (b - 1) = 0 with b a fresh bit wire: a = b, b = b - 1, c = 0.
            bit = rng.randrange(2)
            w[out] = bit
            cons.append(Constraint(_lc({out: 1}), _lc({out: 1, 0: -1}), ()))
            continue
        # (c1 x + c2 y + k) * (z + k1 + p) = out, touching a public wire now and then; k1
        # keeps a zero z from zeroing the output (the 0/1 share stays near bit_fraction).
        x, y, z = (rng.randrange(existing) for _ in range(3))
        c1, c2, k0 = rng.randrange(1, R), rng.randrange(R), rng.randrange(R)
        p = rng.randrange(1, n_public + 1) if n_public and rng.random() < 0.1 else None
        a_terms: dict[int, int] = {}
        for wire, c in ((x, c1), (y, c2), (0, k0)):
            a_terms[wire] = a_terms.get(wire, 0) + c
        b_terms: dict[int, int] = {z: 1, 0: rng.randrange(1, R)} if z else {0: rng.randrange(1, R)}
        if p is not None:
            b_terms[p] = b_terms.get(p, 0) + 1
        a_lc, b_lc = _lc(a_terms), _lc(b_terms)
        va = sum(c * w[i] for i, c in a_lc) % R
        vb = sum(c * w[i] for i, c in b_lc) % R
        w[out] = va * vb % R
        cons.append(Constraint(a_lc, b_lc, ((out, 1),)))
    r1cs = R1CS(
        n_wires=n_wires,
        n_public=n_public,
        constraints=tuple(cons),
        name=name or f"random-{n_constraints}",
    )
    return RandomCircuit(r1cs, tuple(w))
