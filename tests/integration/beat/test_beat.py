"""Real beat, real Redis, the devnet's manifest: beat runs with Crossbook's scheduler
(which sleeps at least BEAT_MIN_SLEEP between looks at its schedule instead of spinning
through each second, see settlement/celery_app.py) and still sends every chain its ticks
at the chain's rate."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from settlement.celery_app import TICK_SECONDS

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[3]


def test_beat_sends_every_chain_its_ticks(devnet: Any, redis_url: str, tmp_path: Path) -> None:
    m = devnet.manifest
    env = {**os.environ, "REDIS_URL": redis_url, "CROSSBOOK_MANIFEST": str(devnet.manifest_path)}
    log = tmp_path / "beat.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "celery", "-A", "settlement.celery_app", "beat", "--loglevel=INFO",
                              f"--schedule={tmp_path / 'schedule'}"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    r = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        while r.llen("settle") < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        t0, n0 = time.monotonic(), r.llen("settle")
        time.sleep(4.0)
        elapsed, sent = time.monotonic() - t0, r.llen("settle") - n0
    finally:
        p.terminate()
        p.wait(10)
    text = log.read_text()
    assert "settlement.celery_app.Scheduler" in text, text[-2000:]
    msgs = [json.loads(x) for x in r.lrange("settle", 0, -1)]
    ticks = Counter(json.loads(_args(x))[0][0] for x in msgs if x["headers"]["task"] == "settlement.tick")
    assert set(ticks) == {c.chain_id for c in m.chains}
    # Each chain at its rate (min(TICK_SECONDS, block time)); a tick may leave up to
    # BEAT_MIN_SLEEP late, and the next is scheduled from when it left.
    rate = sum(1 / max(0.1, min(TICK_SECONDS, c.block_time)) for c in m.chains)
    assert sent >= 0.6 * rate * elapsed, (sent, rate, elapsed)


def _args(msg: dict[str, Any]) -> str:
    return base64.b64decode(msg["body"]).decode()
