"""Niced services stay niced against other sessions (Linux autogroup scheduling)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.stack import lower_priority

REPORT = "import os; print(os.nice(0)); print(open('/proc/self/autogroup').read() if os.path.exists('/proc/self/autogroup') else '')"


def test_a_niced_service_in_its_own_session_is_niced_as_a_group() -> None:
    base = os.nice(0)
    out = subprocess.run(
        [sys.executable, "-c", REPORT],
        start_new_session=True,  # as the stack starts every service
        preexec_fn=lambda: lower_priority(7),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert int(out[0]) == min(base + 7, 19)
    if not Path("/proc/self/autogroup").exists():
        pytest.skip("no autogroup scheduling on this system: the process's nice is what applies")
    # "/autogroup-N nice K": the session's scheduling group is niced too.
    assert out[1].split()[-1] == "7", out[1]
