"""The batch circuit: a contiguous range of one chain's order log, proven in one Groth16 proof.

Public inputs (7, in this order): chainId, startIndex, count, oldHead, newHead, z, acc.

The contract computes z and acc itself from its calldata (see `rlc_challenge`,
`rlc_accumulate`), so the proof binds exactly the legs it executes:

    z   = keccak256(chainId, startIndex, count, oldHead, newHead, w_0 .. w_{2n-1}) mod r
          (each a 32-byte big-endian word, i.e. abi.encodePacked of uint256 values;
           w_{2i} = packed_i, w_{2i+1} = amountWord_i)
    acc = chainId + startIndex*z + sum_i (packed_i * z^(2i+2) + amountWord_i * z^(2i+3))  mod r

Per slot i < capacity, the circuit holds a private leg and an `active` bit, and enforces:
  - active is boolean and non-increasing (active_i = 1 implies active_{i-1} = 1), and the
    active bits sum to count: the active slots are exactly the first `count`;
  - amount < 2^96 and amount - minAmount in [0, 2^96): the amount is in range and at least
    its minimum (minAmount = amount - diff; amountWord = amount + minAmount*2^96);
  - the hash chain: head_{i+1} = active ? poseidon(head_i, packed, amountWord, orderRef) : head_i,
    head_0 = oldHead and head_capacity = newHead, so padding slots never touch the head;
  - the accumulator, by Horner's rule from the last slot: H_i = active_i*(packed_i +
    z*amountWord_i) + z^2*H_{i+1}, and acc = chainId + z*(startIndex + z*H_0), so padding
    slots add nothing whatever their contents.

The soundness argument (why equal acc means equal legs) is in docs/proofs.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from eth_hash.auto import keccak

from settlement.zk.circuit import LC, ONE, ConstraintSystem, Witness, lc_sum
from settlement.zk.constants import SCALAR_FIELD
from settlement.zk.gadgets import assert_boolean, bounded
from settlement.zk.legs import AMOUNT_BITS, MIN_AMOUNT_SHIFT, Leg, fold_heads
from settlement.zk.poseidon import poseidon_gadget
from settlement.zk.r1cs import R1CS

__all__ = [
    "CAPACITIES",
    "CONSTRAINTS_FIXED",
    "CONSTRAINTS_PER_LEG",
    "N_PUBLIC",
    "Batch",
    "BatchError",
    "BatchPublic",
    "BatchWitness",
    "Slot",
    "batch_constraints",
    "batch_r1cs",
    "build_batch_witness",
    "calldata_words",
    "capacity_for",
    "public_inputs_for",
    "rlc_accumulate",
    "rlc_challenge",
    "synthesize",
]

R = SCALAR_FIELD
# Circuit sizes a batch is proven at (the smallest that holds it). Proof time is about
# linear in the capacity (495 constraints a slot), so small ones keep a quiet chain's
# small batches quick to prove; every one is a power of two, like its FFT domain.
CAPACITIES = (4, 8, 16, 32, 64)
N_PUBLIC = 7
# 2*96 bits + Poseidon(4) 297 + active boolean, monotone, head select + 3 for the RLC.
CONSTRAINTS_PER_LEG = 495
# z^2, sum(active) = count, z*H_0, the acc equation; minus the first slot's monotone
# constraint and the last slot's Horner step (both vanish).
CONSTRAINTS_FIXED = 2


class BatchError(ValueError):
    """A batch that cannot be proven (too many legs, amount below its minimum, ...)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Legs [start_index, start_index + len(legs)) of chain `chain_id`'s order log."""

    chain_id: int
    start_index: int
    old_head: int
    legs: tuple[Leg, ...]

    @property
    def count(self) -> int:
        return len(self.legs)

    @property
    def end_index(self) -> int:
        return self.start_index + len(self.legs)

    @property
    def new_head(self) -> int:
        return fold_heads(self.old_head, self.legs)


@dataclass(frozen=True, slots=True)
class BatchPublic:
    chain_id: int
    start_index: int
    count: int
    old_head: int
    new_head: int
    z: int
    acc: int

    def as_list(self) -> list[int]:
        """The public input vector, in wire order."""
        return [
            self.chain_id,
            self.start_index,
            self.count,
            self.old_head,
            self.new_head,
            self.z,
            self.acc,
        ]


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot's private values, as field elements (tests may set any of them)."""

    active: int
    packed: int
    amount: int
    min_amount: int
    order_ref: int

    @staticmethod
    def of(leg: Leg) -> Slot:
        return Slot(1, leg.packed, leg.amount, leg.min_amount, leg.order_ref)

    @staticmethod
    def padding() -> Slot:
        return Slot(0, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class BatchWitness:
    capacity: int
    public: BatchPublic
    witness: Witness

    @property
    def r1cs(self) -> R1CS:
        return batch_r1cs(self.capacity)

    @property
    def public_inputs(self) -> list[int]:
        return self.public.as_list()


# -- contract-side helpers: exactly what Solidity computes -----------------------------


def calldata_words(legs: Sequence[Leg]) -> list[int]:
    """[packed_0, amountWord_0, packed_1, amountWord_1, ...]: the legs as the contract gets them."""
    out: list[int] = []
    for leg in legs:
        out.extend(leg.words)
    return out


def rlc_challenge(
    chain_id: int,
    start_index: int,
    count: int,
    old_head: int,
    new_head: int,
    words: Sequence[int],
) -> int:
    """z = uint256(keccak256(abi.encodePacked(chainId, startIndex, count, oldHead, newHead,
    words))) mod r, all uint256 (so: 32-byte big-endian words, no length prefix)."""
    if len(words) != 2 * count:
        raise BatchError("words must hold two words per leg")
    data = b"".join(
        int(v).to_bytes(32, "big")
        for v in (chain_id, start_index, count, old_head, new_head, *words)
    )
    return int.from_bytes(keccak(data), "big") % R


def rlc_accumulate(z: int, chain_id: int, start_index: int, words: Sequence[int]) -> int:
    """acc = chainId + startIndex*z + sum_j words[j] * z^(j+2) mod r, j over all 2n words.

    Solidity: acc = addmod(chainId, mulmod(startIndex, z, r), r); zp = mulmod(z, z, r);
    then per word: acc = addmod(acc, mulmod(w, zp, r), r); zp = mulmod(zp, z, r).
    """
    acc = (chain_id + start_index * z) % R
    zp = z * z % R
    for w in words:
        acc = (acc + w * zp) % R
        zp = zp * z % R
    return acc


def public_inputs_for(batch: Batch) -> BatchPublic:
    words = calldata_words(batch.legs)
    new_head = batch.new_head
    z = rlc_challenge(
        batch.chain_id, batch.start_index, batch.count, batch.old_head, new_head, words
    )
    acc = rlc_accumulate(z, batch.chain_id, batch.start_index, words)
    return BatchPublic(
        chain_id=batch.chain_id,
        start_index=batch.start_index,
        count=batch.count,
        old_head=batch.old_head,
        new_head=new_head,
        z=z,
        acc=acc,
    )


# -- the circuit ----------------------------------------------------------------------


def synthesize(
    cs: ConstraintSystem, capacity: int, public: BatchPublic, slots: Sequence[Slot]
) -> None:
    """Emit the batch circuit for `capacity` slots into `cs`, assigning the given values.

    Values are taken as given (no validation), so a dishonest assignment yields a witness
    that violates some constraint: the negative tests build theirs this way.
    """
    if len(slots) != capacity:
        raise BatchError(f"need exactly {capacity} slots, got {len(slots)}")
    chain_id, start_index, count, old_head, new_head, z, acc = (
        cs.public_input(v) for v in public.as_list()
    )
    z2 = cs.mul(z, z)
    head = old_head
    active_sum: list[LC] = []
    prev_active: LC | None = None
    terms: list[LC] = []  # active_i * (packed_i + z * amountWord_i)
    for i, slot in enumerate(slots):
        active = cs.private(slot.active)
        assert_boolean(cs, active)
        if prev_active is not None:
            # No active slot after an inactive one: padding is a suffix.
            cs.constrain(active, ONE - prev_active, LC({}, 0))
        prev_active = active
        active_sum.append(active)

        amount = bounded(cs, slot.amount, AMOUNT_BITS)
        diff = bounded(cs, slot.amount - slot.min_amount, AMOUNT_BITS)
        min_amount = amount - diff
        amount_word = amount + min_amount * (1 << MIN_AMOUNT_SHIFT)
        packed = cs.private(slot.packed)
        order_ref = cs.private(slot.order_ref)

        h = poseidon_gadget(cs, [head, packed, amount_word, order_ref])
        if i == capacity - 1:
            # The last selection lands directly on the public newHead (no extra signal).
            cs.constrain(active, h - head, new_head - head)
        else:
            head = head + cs.mul(active, h - head)

        terms.append(cs.mul(active, packed + cs.mul(z, amount_word)))

    cs.assert_equal(lc_sum(active_sum), count)
    horner = LC({}, 0)
    for term in reversed(terms):
        horner = term + cs.mul(z2, horner)  # the first step multiplies by 0: free
    cs.constrain(z, start_index + cs.mul(z, horner), acc - chain_id)


def batch_constraints(capacity: int) -> int:
    return CONSTRAINTS_PER_LEG * capacity + CONSTRAINTS_FIXED


def _empty_public() -> BatchPublic:
    return public_inputs_for(Batch(chain_id=1, start_index=0, old_head=0, legs=()))


@cache
def batch_r1cs(capacity: int) -> R1CS:
    """The constraint system for `capacity` slots (built once per process)."""
    cs = ConstraintSystem(f"crossbook-batch-{capacity}")
    synthesize(cs, capacity, _empty_public(), [Slot.padding()] * capacity)
    return cs.compile()


def capacity_for(count: int, capacities: Sequence[int] = CAPACITIES) -> int:
    for cap in sorted(capacities):
        if count <= cap:
            return cap
    raise BatchError(f"{count} legs exceed the largest capacity {max(capacities)}")


def build_batch_witness(
    batch: Batch, capacities: Sequence[int] = CAPACITIES, *, strict: bool = True
) -> BatchWitness:
    """Witness for `batch` in the smallest capacity that fits it, padded with empty slots.

    strict: refuse a batch the proof would reject (a leg below its minimum) instead of
    returning a witness that does not satisfy the circuit.
    """
    capacity = capacity_for(batch.count, capacities)
    if strict:
        for k, leg in enumerate(batch.legs):
            if leg.amount < leg.min_amount:
                raise BatchError(
                    f"leg {batch.start_index + k}: amount {leg.amount} below minimum {leg.min_amount}"
                )
    public = public_inputs_for(batch)
    slots = [Slot.of(leg) for leg in batch.legs]
    slots += [Slot.padding()] * (capacity - len(slots))
    cs = ConstraintSystem(emit=False)
    synthesize(cs, capacity, public, slots)
    return BatchWitness(capacity=capacity, public=public, witness=cs.witness())
