"""A small R1CS builder: one description gives both the constraints and the witness.

A circuit is ordinary Python over `LC` values (linear combinations of signals, each also
carrying its value under the current assignment). Allocating a signal takes its value;
`mul` allocates the product and emits `a * b = product`. So running a circuit function
once yields the constraint system and a satisfying witness together, and gadgets never
need a separate witness generator; values that are not polynomial in the inputs
(bits, inverses) come from hints: plain Python computing the value that is then
constrained.

The structure must not depend on the values (only on sizes); tests check this by
comparing `R1CS.digest()` of two builds. `ConstraintSystem(emit=False)` skips storing
constraints, for witness-only runs once the key exists.

Wire order on compile follows iden3: 0 = one, then public outputs, public inputs,
then private signals in allocation order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

from settlement.zk.constants import SCALAR_FIELD
from settlement.zk.r1cs import R1CS, Constraint, LinearCombination

__all__ = ["LC", "ONE", "ConstraintSystem", "Witness", "lc_sum"]

R = SCALAR_FIELD
Witness: TypeAlias = list[int]

# Internal variable ids: 0 is the constant one; others in allocation order. Coefficients
# are kept unreduced inside a build (cheap adds) and reduced once on compile.
_Terms: TypeAlias = dict[int, int]


class LC:
    """A linear combination sum(coeff * var) together with its value. Immutable."""

    __slots__ = ("terms", "value")

    terms: _Terms
    value: int

    def __init__(self, terms: _Terms, value: int) -> None:
        self.terms = terms
        self.value = value

    @staticmethod
    def const(c: int) -> LC:
        c %= R
        return LC({0: c} if c else {}, c)

    def constant_value(self) -> int | None:
        """The value when no signal occurs with a non-zero coefficient, else None."""
        for k, v in self.terms.items():
            if k != 0 and v % R:
                return None
        return self.value

    def __add__(self, other: LC | int) -> LC:
        if isinstance(other, LC):
            a, b = self.terms, other.terms
            if len(a) < len(b):
                a, b = b, a
            d = dict(a)
            for k, v in b.items():
                d[k] = d.get(k, 0) + v
            return LC(d, (self.value + other.value) % R)
        if isinstance(other, int):
            d = dict(self.terms)
            d[0] = d.get(0, 0) + other
            return LC(d, (self.value + other) % R)
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> LC:
        return LC({k: -v for k, v in self.terms.items()}, -self.value % R)

    def __sub__(self, other: LC | int) -> LC:
        if isinstance(other, LC):
            d = dict(self.terms)
            for k, v in other.terms.items():
                d[k] = d.get(k, 0) - v
            return LC(d, (self.value - other.value) % R)
        if isinstance(other, int):
            return self + (-other)
        return NotImplemented

    def __rsub__(self, other: int) -> LC:
        return (-self) + other

    def __mul__(self, k: int) -> LC:
        if not isinstance(k, int):
            # Products of signals need a constraint: use ConstraintSystem.mul.
            return NotImplemented
        k %= R
        return LC({v: c * k % R for v, c in self.terms.items()}, self.value * k % R)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"LC({self.terms!r}, value={self.value})"


ONE = LC({0: 1}, 1)


def lc_sum(items: Iterable[LC], coeffs: Iterable[int] | None = None) -> LC:
    """sum(coeff_i * item_i) in one pass (cheaper than chained +)."""
    d: _Terms = {}
    val = 0
    if coeffs is None:
        for it in items:
            for k, v in it.terms.items():
                d[k] = d.get(k, 0) + v
            val += it.value
    else:
        for it, c in zip(items, coeffs, strict=True):
            c %= R
            for k, v in it.terms.items():
                # Reduce products so coefficients stay near r through chained mixing.
                d[k] = d.get(k, 0) + v * c % R
            val += it.value * c
    return LC(d, val % R)


class ConstraintSystem:
    """Allocates signals, records constraints and the assignment; compiles to R1CS."""

    __slots__ = ("_constraints", "_emit", "_inputs", "_outputs", "_values", "name")

    def __init__(self, name: str = "", *, emit: bool = True) -> None:
        self.name = name
        self._emit = emit
        self._values: list[int] = [1]
        self._outputs: list[int] = []
        self._inputs: list[int] = []
        self._constraints: list[tuple[_Terms, _Terms, _Terms]] = []

    # -- allocation ---------------------------------------------------------------
    def _alloc(self, value: int) -> LC:
        v = len(self._values)
        value %= R
        self._values.append(value)
        return LC({v: 1}, value)

    def public_input(self, value: int) -> LC:
        s = self._alloc(value)
        self._inputs.append(len(self._values) - 1)
        return s

    def public_output(self, value: int) -> LC:
        s = self._alloc(value)
        self._outputs.append(len(self._values) - 1)
        return s

    def private(self, value: int) -> LC:
        """A private signal whose value the caller computed (a hint): constrain it!"""
        return self._alloc(value)

    # -- constraints --------------------------------------------------------------
    def constrain(self, a: LC, b: LC, c: LC) -> None:
        """Emit a * b = c."""
        if self._emit:
            self._constraints.append((a.terms, b.terms, c.terms))

    def mul(self, a: LC, b: LC) -> LC:
        """A new signal equal to a * b (one constraint; none when a factor is constant)."""
        ka = a.constant_value() if len(a.terms) <= 1 else None
        if ka is not None:
            return b * ka
        kb = b.constant_value() if len(b.terms) <= 1 else None
        if kb is not None:
            return a * kb
        out = self._alloc(a.value * b.value)
        if self._emit:
            self._constraints.append((a.terms, b.terms, out.terms))
        return out

    def assert_equal(self, a: LC, b: LC | int) -> None:
        """a == b, as (a - b) * 1 = 0."""
        self.constrain(a - b, ONE, LC({}, 0))

    def assert_zero(self, a: LC) -> None:
        self.constrain(a, ONE, LC({}, 0))

    # -- results ------------------------------------------------------------------
    @property
    def emitting(self) -> bool:
        """False in witness-only mode: gadgets may then compute values natively."""
        return self._emit

    @property
    def n_constraints(self) -> int:
        return len(self._constraints)

    @property
    def n_signals(self) -> int:
        return len(self._values)

    def _order(self) -> list[int]:
        """Internal id for each final wire, iden3 order."""
        pub = set(self._outputs) | set(self._inputs)
        order = [0, *self._outputs, *self._inputs]
        order.extend(v for v in range(1, len(self._values)) if v not in pub)
        return order

    def wire_of(self, signal: LC) -> int:
        """The compiled wire index of a single signal (for tests that tamper with a wire)."""
        (v,) = (k for k, c in signal.terms.items() if k and c % R)
        return self._order().index(v)

    def witness(self) -> Witness:
        return [self._values[v] for v in self._order()]

    def public_values(self) -> list[int]:
        return [self._values[v] for v in (*self._outputs, *self._inputs)]

    def compile(self) -> R1CS:
        if not self._emit:
            raise RuntimeError("built with emit=False: no constraints recorded")
        order = self._order()
        identity = all(v == i for i, v in enumerate(order))
        wire = list(range(len(order)))
        if not identity:
            for i, v in enumerate(order):
                wire[v] = i

        def conv(terms: _Terms) -> LinearCombination:
            out = []
            for v, c in terms.items():
                c %= R
                if c:
                    out.append((wire[v], c))
            if len(out) > 1:
                out.sort()
                # Distinct internal ids map to distinct wires, so no merging is needed.
            return tuple(out)

        cons = tuple(Constraint(conv(a), conv(b), conv(c)) for a, b, c in self._constraints)
        return R1CS(
            n_wires=len(order),
            n_public=len(self._outputs) + len(self._inputs),
            constraints=cons,
            name=self.name,
            n_public_outputs=len(self._outputs),
        )

    def first_unsatisfied(self) -> int | None:
        """Index of the first recorded constraint the current assignment violates."""
        vals = self._values

        def ev(terms: _Terms) -> int:
            return sum(c * vals[v] for v, c in terms.items()) % R

        for k, (a, b, c) in enumerate(self._constraints):
            if (ev(a) * ev(b) - ev(c)) % R:
                return k
        return None
