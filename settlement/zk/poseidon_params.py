"""Poseidon parameters for BN254, generated the way circomlib's were.

circomlib took its round constants and MDS matrices from the Poseidon authors' reference
script (`generate_parameters_grain.sage`, arguments `1 0 254 t 8 R_P p`): an 80-bit Grain
LFSR, seeded with the instance description, drives a self-shrinking generator; its output
bits, 254 at a time, give the round constants (rejection-sampled below p) and then the
2t Cauchy points of the MDS matrix M[i][j] = 1 / (x_i + y_j). We regenerate them here
instead of shipping a table, so the numbers have one source: this algorithm. A test checks
the resulting hashes against circomlibjs.

Round numbers: R_F = 8 full rounds; R_P per width is circomlib's choice (the paper's
128-bit security bound for x^5 plus margin, rounded up to a multiple of t).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from settlement.zk.constants import SCALAR_FIELD

__all__ = ["FULL_ROUNDS", "MAX_WIDTH", "MIN_WIDTH", "PoseidonParams", "params", "partial_rounds"]

FULL_ROUNDS = 8
# Partial rounds for t = 2..17, as circomlib's N_ROUNDS_P (its supported widths).
_PARTIAL_ROUNDS = (56, 57, 56, 60, 60, 63, 64, 63, 60, 66, 60, 65, 70, 60, 64, 68)
MIN_WIDTH = 2
MAX_WIDTH = MIN_WIDTH + len(_PARTIAL_ROUNDS) - 1
_FIELD_BITS = 254


@dataclass(frozen=True, slots=True)
class PoseidonParams:
    t: int
    full_rounds: int
    partial_rounds: int
    # round_constants[r][i] is added to state[i] at the start of round r.
    round_constants: tuple[tuple[int, ...], ...]
    # new_state[i] = sum_j mds[i][j] * state[j]
    mds: tuple[tuple[int, ...], ...]


def partial_rounds(t: int) -> int:
    if not MIN_WIDTH <= t <= MAX_WIDTH:
        raise ValueError(f"Poseidon width t={t} outside {MIN_WIDTH}..{MAX_WIDTH}")
    return _PARTIAL_ROUNDS[t - MIN_WIDTH]


class _Grain:
    """The reference script's Grain LFSR with self-shrinking output.

    The 80-bit register is a ring buffer: `_pos` indexes the oldest bit (b[0]); the
    feedback is b[62]^b[51]^b[38]^b[23]^b[13]^b[0], which replaces b[0] and becomes b[79].
    """

    __slots__ = ("_bits", "_pos")

    def __init__(self, t: int, r_f: int, r_p: int) -> None:
        # field=1 (prime), sbox=0 (x^alpha), then n, t, R_F, R_P, and thirty ones.
        seed = (
            format(1, "02b")
            + format(0, "04b")
            + format(_FIELD_BITS, "012b")
            + format(t, "012b")
            + format(r_f, "010b")
            + format(r_p, "010b")
            + "1" * 30
        )
        assert len(seed) == 80
        self._bits = [int(c) for c in seed]
        self._pos = 0
        for _ in range(160):  # warm-up, output discarded
            self._step()

    def _step(self) -> int:
        b, p = self._bits, self._pos
        new = (
            b[(p + 62) % 80]
            ^ b[(p + 51) % 80]
            ^ b[(p + 38) % 80]
            ^ b[(p + 23) % 80]
            ^ b[(p + 13) % 80]
            ^ b[p]
        )
        b[p] = new
        self._pos = (p + 1) % 80
        return new

    def bit(self) -> int:
        # Self-shrinking: read pairs (x, y); output y when x == 1, else drop the pair.
        while True:
            x = self._step()
            y = self._step()
            if x:
                return y

    def bits(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | self.bit()
        return v


@cache
def params(t: int) -> PoseidonParams:
    """Parameters for state width t (t - 1 inputs); generated once per process."""
    r_p = partial_rounds(t)
    r_f = FULL_ROUNDS
    p = SCALAR_FIELD
    grain = _Grain(t, r_f, r_p)

    flat: list[int] = []
    for _ in range((r_f + r_p) * t):
        v = grain.bits(_FIELD_BITS)
        while v >= p:
            v = grain.bits(_FIELD_BITS)
        flat.append(v)
    rc = tuple(tuple(flat[r * t : (r + 1) * t]) for r in range(r_f + r_p))

    while True:
        # The script reduces these mod p (no rejection) and resamples all 2t on a repeat.
        pts = [grain.bits(_FIELD_BITS) % p for _ in range(2 * t)]
        while len(set(pts)) != len(pts):
            pts = [grain.bits(_FIELD_BITS) % p for _ in range(2 * t)]
        xs, ys = pts[:t], pts[t:]
        if all((x + y) % p for x in xs for y in ys):
            break
    mds = tuple(tuple(pow(x + y, -1, p) for y in ys) for x in xs)
    return PoseidonParams(t=t, full_rounds=r_f, partial_rounds=r_p, round_constants=rc, mds=mds)
