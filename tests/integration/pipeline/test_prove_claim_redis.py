"""The prove task claims its batch (real Redis, real prover): a batch queued twice (the
tick queues a batch again when it waits in the queue longer than PROVE_STALL_SECONDS,
e.g. behind a 20 s proof) is proven once. Before the claim, two prove workers took the
two copies and both proved the same batch; in the 200-order run a third of the proofs
were such copies."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from settlement import tasks
from settlement.batching import BatchState, Keys, cut_batch, load_batch
from settlement.celery_app import app as celery_app
from settlement.prover_gate import API_LOAD_KEY
from settlement.zk.legs import genesis_head
from tests.integration.pipeline.test_group_redis import CHAIN, POLICY, _log

pytestmark = [pytest.mark.integration]


@pytest.fixture
def cut(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[redis.Redis, int]:
    """A cut batch of 3 payout legs; the tasks and the Celery producer on the test Redis."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    monkeypatch.setattr(tasks, "redis_client", lambda: redis.Redis.from_url(redis_url))
    monkeypatch.setattr(celery_app.conf, "broker_url", redis_url)
    _log(r, 3)
    doc = cut_batch(r, POLICY, (0, genesis_head(CHAIN)), now=time.time() + 60)
    assert doc is not None and doc["state"] == BatchState.CUT
    return r, int(doc["number"])


def test_a_batch_claimed_by_another_prover_is_left_to_it(cut: tuple[redis.Redis, int]) -> None:
    r, n = cut
    r.set(Keys.proving(CHAIN, n), "4242:other", ex=30)
    assert tasks.prove(CHAIN, n) == "being proven by another worker"
    doc = load_batch(r, CHAIN, n)
    assert doc is not None and doc["state"] == BatchState.CUT
    assert r.get(Keys.proving(CHAIN, n)) == "4242:other"  # not taken over, not released
    assert r.llen("settle") == 0


def test_two_copies_of_a_prove_task_prove_the_batch_once(cut: tuple[redis.Redis, int]) -> None:
    r, n = cut
    start = threading.Barrier(2)
    results: list[Any] = []

    def run() -> None:
        celery_app.set_current()  # the current app is per thread; a worker sets its own
        start.wait()
        results.append(tasks.prove(CHAIN, n))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == sorted([f"proved {n}", "being proven by another worker"]) or sorted(results) == sorted(
        [f"proved {n}", "done already"]
    ), results
    doc = load_batch(r, CHAIN, n)
    assert doc is not None and doc["state"] == BatchState.PROVED
    assert not r.exists(Keys.proving(CHAIN, n))  # the owner released its claim
    assert r.llen("settle") == 1  # one submission queued


def test_a_proof_waits_while_the_api_is_busy(cut: tuple[redis.Redis, int]) -> None:
    """Proofs give way to a busy API (settlement/prover_gate.py): the task holds its proof
    while an API reports 500 requests/s, proves once it is quiet, and says how long it
    waited; the proof time it records leaves the wait out."""
    r, n = cut
    busy_until = time.time() + 1.5

    def api_reports() -> None:  # as app/api/load.py does, every 0.2 s
        while time.time() < busy_until:
            r.hset(API_LOAD_KEY, "test-api:1", f"500 {time.time()}")
            time.sleep(0.2)
        r.hset(API_LOAD_KEY, "test-api:1", f"0 {time.time()}")

    reporter = threading.Thread(target=api_reports)
    r.hset(API_LOAD_KEY, "test-api:1", f"500 {time.time()}")
    reporter.start()
    try:
        t0 = time.monotonic()
        assert tasks.prove(CHAIN, n) == f"proved {n}"
        wall = time.monotonic() - t0
    finally:
        reporter.join()
    doc = load_batch(r, CHAIN, n)
    assert doc is not None and doc["state"] == BatchState.PROVED
    assert doc["provedAt"] > busy_until
    assert doc["proofHeldSeconds"] >= 1.0
    assert doc["proofSeconds"] < wall - 1.0
