"""`devnet down` waits for each process it stopped to be gone. An exited process that its
parent (init, for a detached devnet) has not reaped yet is a zombie: gone for us, though
kill(pid, 0) still succeeds. Counting zombies as alive made `down` wait ~2 s per process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from scripts.devnet.devnet import _pid_alive


def test_running_zombie_and_reaped() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _pid_alive(p.pid)
    finally:
        p.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # dead but not reaped: a zombie
        with open(f"/proc/{p.pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == "Z":
                break
        time.sleep(0.01)
    os.kill(p.pid, 0)  # still a process entry...
    assert not _pid_alive(p.pid)  # ...but not alive
    p.wait()
    assert not _pid_alive(p.pid)
