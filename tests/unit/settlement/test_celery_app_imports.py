"""Beat sends tasks by name and must not import the task modules (web3, eth-account, the
prover: ~2.5 s of CPU at every start); a worker must have every task registered before
it consumes. Each check runs in a fresh interpreter, where nothing is imported yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_beat_loads_no_task_module() -> None:
    got = _run(
        "import json, sys\n"
        "from settlement.celery_app import app\n"
        "app.loader.import_default_modules()\n"  # what `celery beat` does at start
        "print(json.dumps({'tasks': 'settlement.tasks' in sys.modules, 'web3': 'web3' in sys.modules}))"
    )
    assert got == {"tasks": False, "web3": False}


def test_a_worker_registers_every_task_at_init() -> None:
    got = _run(
        "import json\n"
        "from celery.signals import celeryd_init\n"
        "from settlement.celery_app import app\n"
        "celeryd_init.send(sender='test@host', instance=None, conf=app.conf, options={})\n"
        "print(json.dumps({'names': sorted(n for n in app.tasks if n.startswith('settlement.'))}))"
    )
    assert got == {"names": ["settlement.prove", "settlement.reconcile", "settlement.submit", "settlement.tick"]}
