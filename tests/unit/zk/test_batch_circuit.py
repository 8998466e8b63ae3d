"""The batch circuit: honest batches satisfy it; every kind of tampering breaks it.

Most tests use a 4-slot circuit (same gadgets, ~2k constraints) to stay fast; the real
capacities are checked for size and one honest witness.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from functools import cache

import pytest
from eth_abi.packed import encode_packed
from eth_hash.auto import keccak

from settlement.zk.batch import (
    CAPACITIES,
    CONSTRAINTS_PER_LEG,
    N_PUBLIC,
    Batch,
    BatchError,
    BatchPublic,
    Slot,
    batch_constraints,
    batch_r1cs,
    build_batch_witness,
    calldata_words,
    capacity_for,
    public_inputs_for,
    rlc_accumulate,
    rlc_challenge,
    synthesize,
)
from settlement.zk.circuit import ConstraintSystem
from settlement.zk.constants import SCALAR_FIELD as R
from settlement.zk.legs import Leg, LegKind, decode_words, genesis_head
from settlement.zk.poseidon import poseidon
from settlement.zk.r1cs import R1CS

CAP = 4
CHAIN = 31337
rng = random.Random(7)


def _legs(n: int) -> tuple[Leg, ...]:
    kinds = list(LegKind)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        amount = rng.randrange(1, 1 << 96)
        minimum = rng.randrange(0, amount + 1) if kind is LegKind.PAYOUT else 0
        out.append(
            Leg(kind, rng.getrandbits(160), rng.randrange(8), amount, minimum, rng.randrange(R))
        )
    return tuple(out)


BATCH = Batch(chain_id=CHAIN, start_index=5, old_head=genesis_head(CHAIN), legs=_legs(3))


@cache
def _r1cs(cap: int) -> R1CS:
    cs = ConstraintSystem()
    empty = public_inputs_for(Batch(CHAIN, 0, 0, ()))
    synthesize(cs, cap, empty, [Slot.padding()] * cap)
    return cs.compile()


def _witness(cap: int, public: BatchPublic, slots: Sequence[Slot]) -> list[int]:
    cs = ConstraintSystem(emit=False)
    synthesize(cs, cap, public, slots)
    return cs.witness()


def _satisfied(public: BatchPublic, slots: Sequence[Slot], cap: int = CAP) -> bool:
    return _r1cs(cap).is_satisfied(_witness(cap, public, slots))


def _slots(legs: Sequence[Leg], cap: int = CAP) -> list[Slot]:
    return [Slot.of(leg) for leg in legs] + [Slot.padding()] * (cap - len(legs))


def _raw_public(chain_id: int, start: int, old_head: int, slots: Sequence[Slot]) -> BatchPublic:
    """Public inputs for arbitrary slot values, computed the way the contract would."""
    head, words = old_head, []
    active = [s for s in slots if s.active]
    for s in active:
        word = (s.amount + s.min_amount * (1 << 96)) % R
        head = poseidon([head, s.packed, word, s.order_ref])
        words += [s.packed, word]
    z = rlc_challenge(chain_id, start, len(active), old_head, head, words)
    return BatchPublic(
        chain_id, start, len(active), old_head, head, z, rlc_accumulate(z, chain_id, start, words)
    )


# -- sizes ----------------------------------------------------------------------------


def test_constraints_per_leg_within_budget() -> None:
    per_leg = _r1cs(3).n_constraints - _r1cs(2).n_constraints
    assert per_leg == CONSTRAINTS_PER_LEG <= 500
    assert _r1cs(CAP).n_constraints == batch_constraints(CAP)


def test_capacity_16_size_and_public_inputs() -> None:
    r1cs = batch_r1cs(16)
    assert r1cs.n_constraints == batch_constraints(16)
    assert r1cs.n_public == N_PUBLIC and r1cs.n_public_outputs == 0
    assert batch_r1cs(16) is r1cs


@pytest.mark.slow
@pytest.mark.parametrize("cap", [32, 64])
def test_large_capacity_sizes(cap: int) -> None:
    assert batch_r1cs(cap).n_constraints == batch_constraints(cap)


def test_capacity_choice() -> None:
    assert CAPACITIES == (4, 8, 16, 32, 64)
    assert [capacity_for(n) for n in (0, 1, 4, 5, 8, 9, 16, 17, 32, 33, 64)] == [4, 4, 4, 8, 8, 16, 16, 32, 32, 64, 64]
    with pytest.raises(BatchError):
        capacity_for(65)


def test_structure_does_not_depend_on_the_batch() -> None:
    def digest(batch: Batch) -> str:
        cs = ConstraintSystem()
        synthesize(cs, CAP, public_inputs_for(batch), _slots(batch.legs))
        return cs.compile().digest()

    assert digest(BATCH) == digest(Batch(1, 0, 0, ())) == _r1cs(CAP).digest()


# -- contract-side helpers ------------------------------------------------------------


def test_rlc_challenge_is_keccak_of_encode_packed() -> None:
    words = calldata_words(BATCH.legs)
    expected = keccak(
        encode_packed(
            ["uint256"] * 5 + ["uint256[]"],
            [CHAIN, 5, 3, BATCH.old_head, BATCH.new_head, words],
        )
    )
    z = rlc_challenge(CHAIN, 5, 3, BATCH.old_head, BATCH.new_head, words)
    assert z == int.from_bytes(expected, "big") % R
    with pytest.raises(BatchError):
        rlc_challenge(CHAIN, 5, 2, BATCH.old_head, BATCH.new_head, words)


def test_rlc_accumulate_is_the_polynomial() -> None:
    z = 123456789
    words = calldata_words(BATCH.legs)
    poly = CHAIN + 5 * z + sum(w * pow(z, j + 2, R) for j, w in enumerate(words))
    assert rlc_accumulate(z, CHAIN, 5, words) == poly % R


def test_public_inputs_for() -> None:
    pub = public_inputs_for(BATCH)
    assert pub.as_list()[:5] == [CHAIN, 5, 3, BATCH.old_head, BATCH.new_head]
    assert len(pub.as_list()) == N_PUBLIC


# -- honest batches -------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3, CAP])
def test_honest_batch_satisfies(n: int) -> None:
    batch = dataclasses.replace(BATCH, legs=_legs(n))
    assert _satisfied(public_inputs_for(batch), _slots(batch.legs))


def test_build_batch_witness_at_the_smallest_capacity_that_holds_it() -> None:
    bw = build_batch_witness(BATCH)
    assert bw.capacity == capacity_for(BATCH.count) == 4
    assert bw.r1cs.is_satisfied(bw.witness)
    assert (
        bw.r1cs.public_inputs(bw.witness) == bw.public_inputs == public_inputs_for(BATCH).as_list()
    )


def test_build_batch_witness_refuses_unprovable() -> None:
    low = Leg(LegKind.PAYOUT, 1, 0, amount=5, min_amount=6)
    with pytest.raises(BatchError):
        build_batch_witness(dataclasses.replace(BATCH, legs=(low,)), (CAP,))
    bw = build_batch_witness(dataclasses.replace(BATCH, legs=(low,)), (CAP,), strict=False)
    assert not _r1cs(CAP).is_satisfied(bw.witness)
    with pytest.raises(BatchError):
        build_batch_witness(dataclasses.replace(BATCH, legs=_legs(CAP + 1)), (CAP,))


def test_padding_contents_are_irrelevant() -> None:
    # Inactive slots may hold anything; they change neither head nor acc.
    slots = _slots(BATCH.legs)
    slots[3] = Slot(0, 99, 1000, 10, 5)
    assert _satisfied(public_inputs_for(BATCH), slots)


# -- tampering ------------------------------------------------------------------------

PUBLIC = public_inputs_for(BATCH)
SLOTS = _slots(BATCH.legs)


@pytest.mark.parametrize(
    "field", ["chain_id", "start_index", "count", "old_head", "new_head", "z", "acc"]
)
def test_changing_a_public_input_breaks_it(field: str) -> None:
    bad = dataclasses.replace(PUBLIC, **{field: (getattr(PUBLIC, field) + 1) % R})
    assert not _satisfied(bad, SLOTS)


@pytest.mark.parametrize("field", ["packed", "amount", "min_amount", "order_ref"])
@pytest.mark.parametrize("index", [0, 2])
def test_changing_a_leg_field_breaks_it(field: str, index: int) -> None:
    slots = list(SLOTS)
    s = slots[index]
    # min_amount decreases (stays provable) so only the binding can catch it.
    delta = -1 if field == "min_amount" else 1
    slots[index] = dataclasses.replace(s, **{field: getattr(s, field) + delta})
    assert not _satisfied(PUBLIC, slots)


def test_changing_a_leg_with_a_consistent_new_head_breaks_the_rlc() -> None:
    # The prover recomputes newHead for its altered leg, but the contract's calldata
    # (hence z and acc) still describes the original legs.
    slots = list(SLOTS)
    slots[1] = dataclasses.replace(slots[1], amount=slots[1].amount - 1, min_amount=0)
    forged = _raw_public(CHAIN, 5, BATCH.old_head, slots)
    assert _satisfied(forged, slots)  # a consistent statement about other legs ...
    assert not _satisfied(dataclasses.replace(forged, z=PUBLIC.z, acc=PUBLIC.acc), slots)
    assert forged.new_head != PUBLIC.new_head


def test_changing_z_with_a_recomputed_acc_is_the_contracts_business() -> None:
    # z is an input: the R1CS accepts any z with its matching acc. Binding z to the
    # calldata is the contract's job (it computes z itself), documented in docs/proofs.md.
    z = (PUBLIC.z + 1) % R
    acc = rlc_accumulate(z, CHAIN, 5, calldata_words(BATCH.legs))
    assert _satisfied(dataclasses.replace(PUBLIC, z=z, acc=acc), SLOTS)
    assert not _satisfied(dataclasses.replace(PUBLIC, z=z), SLOTS)


@pytest.mark.parametrize(("amount", "minimum"), [(1 << 96, 0), ((1 << 96) + 5, 5), (R - 1, 0)])
def test_amount_out_of_range_breaks_it(amount: int, minimum: int) -> None:
    slots = list(SLOTS)
    slots[0] = dataclasses.replace(slots[0], amount=amount, min_amount=minimum)
    assert not _satisfied(_raw_public(CHAIN, 5, BATCH.old_head, slots), slots)


def test_min_amount_out_of_range_breaks_it() -> None:
    # minAmount >= 2^96 exceeds any in-range amount: rejected in circuit.
    slots = list(SLOTS)
    slots[0] = dataclasses.replace(slots[0], amount=10, min_amount=1 << 96)
    assert not _satisfied(_raw_public(CHAIN, 5, BATCH.old_head, slots), slots)


def test_negative_min_amount_only_fits_a_word_no_contract_can_send() -> None:
    # minAmount = amount - diff is not range-checked from below (that would cost 96 more
    # constraints per leg). A "negative" minimum satisfies the R1CS only with an
    # amountWord in (r - 2^192, r), which is not a canonical word (< 2^192), so it
    # cannot equal what the contract hashes into z and accumulates (docs/proofs.md).
    slots = list(SLOTS)
    slots[0] = dataclasses.replace(slots[0], amount=10, min_amount=R - 1)
    forged = _raw_public(CHAIN, 5, BATCH.old_head, slots)
    assert _satisfied(forged, slots)
    word = (10 + (R - 1) * (1 << 96)) % R
    assert word >= 1 << 192
    with pytest.raises(ValueError):
        decode_words(slots[0].packed, word)
    # With the words a contract could have received for this leg (any canonical
    # minimum), z and acc differ and the witness fails.
    for canonical_min in (0, 10):
        honest = dataclasses.replace(slots[0], min_amount=canonical_min)
        pub = _raw_public(CHAIN, 5, BATCH.old_head, [honest, *slots[1:]])
        assert not _satisfied(dataclasses.replace(pub, new_head=forged.new_head), slots)


@pytest.mark.parametrize(("amount", "minimum"), [(5, 6), (0, 1), ((1 << 96) - 2, (1 << 96) - 1)])
def test_payout_below_minimum_breaks_it(amount: int, minimum: int) -> None:
    slots = list(SLOTS)
    slots[1] = dataclasses.replace(slots[1], amount=amount, min_amount=minimum)
    assert not _satisfied(_raw_public(CHAIN, 5, BATCH.old_head, slots), slots)
    slots[1] = dataclasses.replace(slots[1], amount=minimum, min_amount=minimum)
    assert _satisfied(_raw_public(CHAIN, 5, BATCH.old_head, slots), slots)


def test_broken_hash_chain_breaks_it() -> None:
    for head in (BATCH.old_head + 1, genesis_head(1)):
        assert not _satisfied(dataclasses.replace(PUBLIC, old_head=head), SLOTS)
    # Reordering legs changes the chain.
    slots = [SLOTS[1], SLOTS[0], *SLOTS[2:]]
    assert not _satisfied(PUBLIC, slots)


def test_dropping_a_leg_breaks_it() -> None:
    slots = [*SLOTS[:2], Slot.padding(), Slot.padding()]
    assert not _satisfied(PUBLIC, slots)
    assert not _satisfied(dataclasses.replace(PUBLIC, count=2), slots)


def test_padding_cannot_hide_a_leg() -> None:
    # A gap (active, active, inactive, active): a real leg behind padding is rejected
    # even with heads and acc computed over the active slots.
    hidden = Slot.of(_legs(1)[0])
    slots = [SLOTS[0], SLOTS[1], Slot(0, 1, 2, 0, 3), hidden]
    assert not _satisfied(_raw_public(CHAIN, 5, BATCH.old_head, slots), slots)
    # A padding slot claimed active without counting it.
    slots = [*SLOTS[:3], dataclasses.replace(hidden, active=1)]
    assert not _satisfied(PUBLIC, slots)
    # A padding slot inactive in the count but hashed into the head.
    slots = [*SLOTS[:3], dataclasses.replace(hidden, active=0)]
    with_hidden = _raw_public(CHAIN, 5, BATCH.old_head, [*SLOTS[:3], hidden])
    assert not _satisfied(dataclasses.replace(with_hidden, count=3), slots)
    # A non-boolean activity flag.
    slots = [*SLOTS[:2], dataclasses.replace(SLOTS[2], active=2), Slot.padding()]
    assert not _satisfied(PUBLIC, slots)


def test_tampering_any_witness_wire_of_a_leg_breaks_it() -> None:
    r1cs = _r1cs(CAP)
    w = _witness(CAP, PUBLIC, SLOTS)
    assert r1cs.is_satisfied(w)
    wires = random.Random(1).sample(range(1 + N_PUBLIC, r1cs.n_wires), 25)
    for wire in wires:
        bad = list(w)
        bad[wire] = (bad[wire] + 1) % R
        # Padding slots' private wires are free only where they do not matter; every
        # sampled wire is checked to either break the system or be a padding-slot input.
        if r1cs.is_satisfied(bad):
            assert wire >= r1cs.n_wires * 3 // 4 - 10, wire


def test_witness_only_build_equals_full_build() -> None:
    cs = ConstraintSystem()
    synthesize(cs, CAP, PUBLIC, SLOTS)
    assert cs.witness() == _witness(CAP, PUBLIC, SLOTS)
