"""Batch cutting boundaries, window timing, nonce sequencing, the order state machine."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.order import TERMINAL_STATES, OrderState
from settlement.batching import CutPlan, plan_cut
from settlement.lifecycle import ALLOWED, IllegalTransition, outcomes, transition
from settlement.submitter import NonceManager
from settlement.vault import NO_REF, Paid, Pulled, PullFailed, PullFailure
from settlement.window import policy_for

# -- window timing and cutting -------------------------------------------------------


def test_window_max_wait_follows_block_time() -> None:
    assert policy_for(1, 0.25, 20).max_wait == 2.0  # floor
    assert policy_for(1, 1.0, 3).max_wait == 4.0  # four blocks
    assert policy_for(1, 5.0, 3).max_wait == 12.0  # cap
    p = policy_for(1, 2.0, 12, proof_seconds=2.5)
    assert p.eta_seconds == pytest.approx(8.0 + 2.5 + 24.0)


def test_cut_boundaries() -> None:
    p = policy_for(7, 1.0, 3, target_batch=4)  # max_wait 4 s
    assert plan_cut(p, 10, 10, 100.0) is None  # nothing pending
    assert plan_cut(p, 10, 13, 3.99) is None  # 3 < target, not old enough
    assert plan_cut(p, 10, 13, 4.0) == CutPlan(10, 13)  # oldest waited max_wait
    assert plan_cut(p, 10, 14, 0.0) == CutPlan(10, 14)  # target reached
    assert plan_cut(p, 10, 200, 0.0) == CutPlan(10, 74)  # capped at the largest circuit
    assert plan_cut(p, 10, 200, 0.0, max_batch=16) == CutPlan(10, 26)


@given(st.integers(0, 1000), st.integers(0, 200), st.floats(0, 30), st.integers(1, 64))
def test_cut_is_contiguous_from_cursor(cursor: int, pending: int, wait: float, target: int) -> None:
    p = policy_for(1, 1.0, 3, target_batch=target)
    plan = plan_cut(p, cursor, cursor + pending, wait)
    if plan is None:
        assert pending == 0 or (pending < target and wait < p.max_wait)
    else:
        assert plan.start == cursor and 1 <= plan.count <= min(pending, 64)


# -- nonces ------------------------------------------------------------------------


class _FakeRedis:
    def __init__(self) -> None:
        self.d: dict[str, str] = {}

    def get(self, k: str) -> str | None:
        return self.d.get(k)

    def set(self, k: str, v: str, nx: bool = False) -> bool:
        if nx and k in self.d:
            return False
        self.d[k] = v
        return True

    def incr(self, k: str) -> int:
        self.d[k] = str(int(self.d.get(k, "0")) + 1)
        return int(self.d[k])


class _FakePort:
    def __init__(self, n: int) -> None:
        self.n = n

    def pending_nonce(self, address: str) -> int:
        return self.n


def test_nonces_are_sequential_from_the_chain() -> None:
    r: Any = _FakeRedis()
    port: Any = _FakePort(5)
    nm = NonceManager(r, 1, port, "0xop")
    assert [nm.allocate() for _ in range(4)] == [5, 6, 7, 8]
    # A second manager (another worker) continues, never reuses.
    assert NonceManager(r, 1, port, "0xop").allocate() == 9
    port.n = 7  # the chain is behind (txs pending): resync never moves backwards
    nm.resync()
    assert nm.allocate() == 10
    port.n = 20  # the key was used elsewhere: resync jumps ahead
    nm.resync()
    assert nm.allocate() == 20
    assert NonceManager(r, 2, port, "0xop").allocate() == 20  # per chain


# -- lifecycle state machine ---------------------------------------------------------


def test_happy_path_and_idempotence() -> None:
    path = [OrderState.CONFIRMED, OrderState.PULL_SETTLED, OrderState.SETTLED, OrderState.FINALIZED]
    for a, b in itertools.pairwise(path):
        assert transition(a, b) is True
        assert transition(b, b) is False
    assert transition("confirmed", "failed") is True


@given(st.sampled_from(list(OrderState)), st.sampled_from(list(OrderState)))
def test_no_illegal_transition(a: OrderState, b: OrderState) -> None:
    if a == b:
        assert transition(a, b) is False
    elif b in ALLOWED[a]:
        assert a not in TERMINAL_STATES
        assert transition(a, b) is True
    else:
        with pytest.raises(IllegalTransition):
            transition(a, b)


def test_terminal_states_are_final() -> None:
    for t in TERMINAL_STATES:
        assert ALLOWED[t] == frozenset()
    # Every non-terminal state can still reach a terminal one.
    for s in OrderState:
        seen, todo = {s}, [s]
        while todo:
            for n in ALLOWED[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        assert seen & TERMINAL_STATES


def test_outcomes_match_events_to_legs() -> None:
    h1, h2 = "0x" + "11" * 32, "0x" + "22" * 32
    legs = [
        {"kind": "pull", "orderId": h1, "amount": "5", "token": 0},
        {"kind": "pull", "orderId": h2, "amount": "6", "token": 0},
        {"kind": "payout", "orderId": h1, "amount": "7", "token": 1},
    ]
    events = [
        Pulled(bytes.fromhex("11" * 32), 40 << 8),
        PullFailed(bytes.fromhex("22" * 32), 41, PullFailure.TRANSFER_FAILED),
        Paid(42),
    ]
    outs = outcomes(40, legs, events)
    assert [(o.index, o.ok) for o in outs] == [(40, True), (41, False), (42, True)]
    assert outs[0].pull_ref == 40 << 8
    assert "TRANSFER_FAILED" in outs[1].reason
    with pytest.raises(ValueError):
        outcomes(40, legs, events[:2])
    assert outcomes(0, legs[:1], [Pulled(bytes.fromhex("11" * 32), NO_REF)])[0].pull_ref is None


def test_max_batch_setting_is_a_circuit_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from app.settings import BATCH_CAPACITIES, Settings
    from settlement.zk.batch import CAPACITIES

    assert BATCH_CAPACITIES == CAPACITIES  # the settings' copy stays the circuits' list
    assert Settings().settlement_max_batch == max(CAPACITIES)
    monkeypatch.setenv("CROSSBOOK_SETTLEMENT_MAX_BATCH", "16")
    assert Settings().settlement_max_batch == 16
    monkeypatch.setenv("CROSSBOOK_SETTLEMENT_MAX_BATCH", "20")  # no circuit holds exactly 20
    with pytest.raises(ValidationError, match="one of"):
        Settings()
