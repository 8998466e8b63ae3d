"""Run a Python snippet in a fresh interpreter and read the JSON it prints: what a process
started elsewhere, or with another environment, sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def python_json(code: str, cwd: Path, *, unset: tuple[str, ...] = (), timeout: float = 300, **env: str) -> Any:
    """`code` run by this interpreter in `cwd`, with `env` added to the environment and
    the variables in `unset` removed; its stdout parsed as JSON (it must exit 0)."""
    environ = {k: v for k, v in os.environ.items() if k not in unset} | env
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)
