"""Proofs give way to a busy API (settlement/prover_gate.py): when the gate holds, what
it counts, and that a held proof really stops, in the prover and in its forked helper."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from settlement.prover_gate import ProverGate
from settlement.zk import groth16, msm
from settlement.zk.testing import random_circuit


class Clocked:
    """A gate on a hand-moved clock and a hand-set API rate (50 requests/s is busy)."""

    def __init__(self, **kw: float) -> None:
        self.now = 0.0
        self.rate = 0.0
        self.gate = ProverGate(lambda: self.rate, clock=lambda: self.now, **{"busy_rate": 50.0, "quiet_seconds": 1.0, "max_hold_seconds": 10.0, **kw})

    def at(self, now: float, rate: float) -> bool:
        self.now, self.rate = now, rate
        return self.gate.step()


def test_holds_a_proof_while_the_api_is_busy_and_resumes_after_a_quiet_second() -> None:
    c = Clocked()
    assert not c.at(0.0, 500.0)  # no proof running: nothing to hold
    with c.gate.proof() as held:
        assert c.gate.holding  # busy when the proof starts
        assert c.at(0.5, 200.0)
        assert c.at(1.0, 49.0)  # below the rate, but not quiet for a second yet
        assert c.at(1.49, 0.0)
        assert not c.at(1.5, 0.0)  # quiet since 0.5
        assert not c.at(2.0, 10.0)
        assert c.at(2.5, 60.0)  # busy again
        assert not c.at(3.5, 0.0)
    assert held.seconds == pytest.approx(1.5 + 1.0)
    assert not c.gate.holding


def test_a_proof_is_held_at_most_max_hold_seconds_in_all() -> None:
    c = Clocked(max_hold_seconds=3.0)
    with c.gate.proof() as held:
        assert c.at(0.0, 500.0)
        assert c.at(2.9, 500.0)
        assert not c.at(3.0, 500.0)  # the API is still busy: the proof runs anyway
        assert not c.at(60.0, 500.0)
    assert held.seconds == pytest.approx(3.0)
    # The next proof may be held again.
    with c.gate.proof():
        assert c.at(61.0, 500.0)


def test_rate_zero_never_holds_and_an_unreadable_rate_is_not_busy() -> None:
    c = Clocked(busy_rate=0.0)
    with c.gate.proof():
        assert not c.at(0.0, 10_000.0)

    def unreadable() -> float:
        raise ConnectionError("redis down")

    gate = ProverGate(unreadable, busy_rate=50.0)
    with gate.proof() as held:
        assert not gate.step()
    assert held.seconds == 0.0


def test_the_pause_hook_is_installed_for_the_proof_only() -> None:
    gate = ProverGate(lambda: 0.0, busy_rate=50.0)
    before = msm.set_pause_hook(None)
    try:
        with gate.proof():
            assert msm._pause_hook == gate.wait
        assert msm._pause_hook is None
    finally:
        msm.set_pause_hook(before)


def _helper_passes_a_pause_point(conn: multiprocessing.connection.Connection) -> None:
    msm.pause_point()
    conn.send(time.monotonic())


def test_a_forked_helper_waits_at_its_pause_points_while_the_gate_holds() -> None:
    """The flag is shared memory: a helper forked during a proof sees the parent's gate."""
    c = Clocked()
    c.rate = 500.0
    with c.gate.proof():
        assert c.gate.holding
        ctx = multiprocessing.get_context("fork")
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_helper_passes_a_pause_point, args=(theirs,), daemon=True)
        proc.start()
        try:
            assert not mine.poll(0.6)  # held at its pause point
            released = time.monotonic()
            assert not c.at(5.0, 0.0)
            assert mine.poll(5)
            assert mine.recv() >= released
        finally:
            proc.join(5)


def test_a_real_proof_pauses_while_held_and_still_verifies() -> None:
    rc = random_circuit(300, 4, seed=3, bit_fraction=0.4)
    pk, vk = groth16.setup(rc.r1cs, processes=1)
    busy_until = time.monotonic() + 1.0  # the (fake) API is busy for a second
    gate = ProverGate(lambda: 500.0 if time.monotonic() < busy_until else 0.0, busy_rate=50.0, quiet_seconds=0.1, poll_seconds=0.05)
    gate.start()
    stages: list[tuple[str, float]] = []
    try:
        t0 = time.monotonic()
        with gate.proof() as held:
            proof = groth16.prove(pk, rc.r1cs, rc.witness, processes=2, progress=lambda s, d, t: stages.append((s, time.monotonic())))
        wall = time.monotonic() - t0
    finally:
        gate.stop()
    assert groth16.verify(vk, rc.public_inputs, proof)
    assert held.seconds >= 0.9
    assert wall >= 1.0
    # Held at its first pause point: no stage started before the API went quiet.
    assert stages[0][1] >= busy_until


def test_stop_releases_a_held_gate() -> None:
    gate = ProverGate(lambda: 500.0, busy_rate=50.0, poll_seconds=0.01)
    gate.start()
    with gate.proof():
        time.sleep(0.05)
        assert gate.holding
        waiter = threading.Thread(target=gate.wait)
        waiter.start()
        gate.stop()
        waiter.join(2)
        assert not waiter.is_alive()
