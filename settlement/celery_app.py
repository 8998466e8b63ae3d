"""The Celery app of the settlement pipeline: Redis broker and result backend, beat schedule.

Delivery is at-least-once: tasks are acknowledged after they finish (`acks_late`), a task
whose worker process died is re-queued (`task_reject_on_worker_lost`), and the broker
re-delivers an unacknowledged task after the visibility timeout, which is far longer than
the longest task (a capacity-64 proof, ~10 s) so a slow task is never run twice for being
slow. Tasks are idempotent (settlement/tasks.py), so a second run is harmless.

Two queues: `settle` (ticks, submissions, reconciliation: short, I/O) and `prove` (CPU),
so a proof in progress never delays following a chain. Beat sends each chain a `tick`
every TICK_SECONDS (expiring after TICK_EXPIRES, so a busy worker drops stale ticks
instead of running a backlog) and a `reconcile` every RECONCILE_SECONDS.

Entry points for the CLI: `run_worker(queues, concurrency)` and `run_beat()`.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.beat import PersistentScheduler
from celery.signals import celeryd_init

__all__ = [
    "RECONCILE_SECONDS",
    "TICK_EXPIRES",
    "TICK_SECONDS",
    "app",
    "beat_schedule",
    "run_beat",
    "run_worker",
]

TICK_SECONDS = 0.5
TICK_EXPIRES = 2.0
RECONCILE_SECONDS = 10.0
VISIBILITY_TIMEOUT = 600  # seconds; > any task (proof at capacity 64 ≈ 10 s, setup excluded)


def _redis_url() -> str:
    return os.environ.get("REDIS_URL") or os.environ.get("CROSSBOOK_REDIS_URL") or "redis://127.0.0.1:6379/0"


def beat_schedule() -> dict[str, dict[str, Any]]:
    """A tick per chain at min(TICK_SECONDS, block time) and a reconcile per chain."""
    try:
        from app.manifest import Manifest
        from app.settings import get_settings

        manifest = Manifest.load(get_settings().manifest)
    except Exception:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for c in manifest.chains:
        out[f"tick-{c.chain_id}"] = {
            "task": "settlement.tick",
            "schedule": max(0.1, min(TICK_SECONDS, c.block_time)),
            "args": (c.chain_id,),
            "options": {"queue": "settle", "expires": TICK_EXPIRES},
        }
        out[f"reconcile-{c.chain_id}"] = {
            "task": "settlement.reconcile",
            "schedule": RECONCILE_SECONDS,
            "args": (c.chain_id,),
            "options": {"queue": "settle", "expires": RECONCILE_SECONDS},
        }
    return out


# No `include`: beat, which only sends tasks by name, would import the task modules
# (web3, eth-account, the prover) for nothing, ~2.5 s of CPU at every start. A worker
# imports them as it initialises (`celeryd_init`, before it consumes anything).
app = Celery("crossbook", broker=_redis_url(), backend=_redis_url())
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # with acks_late: a dying worker holds at most one task
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    result_expires=3600,
    task_default_queue="settle",
    task_routes={"settlement.prove": {"queue": "prove"}},
    broker_connection_retry_on_startup=True,
    beat_schedule=beat_schedule(),
    beat_scheduler="settlement.celery_app:Scheduler",
    timezone="UTC",
)


@celeryd_init.connect
def _import_tasks(**_: Any) -> None:
    import settlement.tasks  # noqa: F401  (registers the tasks and the worker's signal handlers)


# Beat's shortest sleep between two looks at its schedule.
BEAT_MIN_SLEEP = 0.02


class Scheduler(PersistentScheduler):
    """Celery's scheduler keeps its heap in whole seconds (`_when` goes through
    `utctimetuple`), so with entries under a second apart `tick()` returns zero or less
    for most of each second and beat loops without sleeping: ~115 looks a second, 6 % of
    a core, to send 8 ticks a second. Sleeping at least BEAT_MIN_SLEEP between looks
    sends each tick up to 20 ms late (a tick is an idempotent poll every 0.25-0.5 s)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        return max(float(super().tick(*args, **kwargs)), BEAT_MIN_SLEEP)


def run_worker(queues: str = "settle,prove", concurrency: int = 1, loglevel: str = "INFO") -> None:
    """Run a worker in this process (blocks). Solo pool for one slot: the prover forks its
    own helper, which a daemonic pool child may not."""
    argv = ["worker", "-Q", queues, f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    argv += ["--pool=solo"] if concurrency <= 1 else ["--pool=prefork", f"--concurrency={concurrency}"]
    app.worker_main(argv)


def run_beat(loglevel: str = "INFO", schedule_file: str | None = None) -> None:
    """Run beat in this process (blocks)."""
    argv = ["beat", f"--loglevel={loglevel}"]
    if schedule_file:
        argv.append(f"--schedule={schedule_file}")
    app.start(argv)
