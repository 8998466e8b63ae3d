"""`crossbook devnet …` and `crossbook up` as a tester runs them: real processes, real ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.devnet.devnet import _pid_alive
from scripts.devnet.ports import port_in_use

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_base(n: int) -> int:
    """A base port with n free consecutive ports above it."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n < 65000 and not any(port_in_use(base + k) for k in range(n)):
            return base
    raise RuntimeError("no free port range")


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CROSSBOOK_STATE_DIR": str(tmp),
        "CROSSBOOK_MANIFEST": str(tmp / "devnet" / "manifest.json"),
        "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing there: `up` must embed its own
    }


def _cli(tmp: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=_env(tmp), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"crossbook {' '.join(args)} failed: {proc.stdout}\n{proc.stderr}")
    return proc


def _pids(tmp: Path) -> list[int]:
    state = tmp / "devnet" / "state.json"
    return [int(p["pid"]) for p in json.loads(state.read_text())["pids"]] if state.exists() else []


def _alive(pid: int) -> bool:
    # Exited but not yet reaped by init (a zombie) counts as gone, as for `devnet down`.
    return _pid_alive(pid)


def test_devnet_up_status_halt_resume_down(tmp_path: Path) -> None:
    base = _free_base(3)
    try:
        _cli(tmp_path, "devnet", "up", "--base-port", str(base))
        pids = _pids(tmp_path)
        assert len(pids) == 4  # three anvils and the block producer
        doc = json.loads(_cli(tmp_path, "devnet", "status", "--json").stdout)
        assert len({c["chainId"] for c in doc["chains"]}) == 3
        for c in doc["chains"]:
            assert c["available"] and c["pools"]
            assert all(int(p["reserve0"]) > 0 < int(p["reserve1"]) for p in c["pools"])
        cid = doc["chains"][2]["chainId"]
        _cli(tmp_path, "devnet", "halt", "--chain", str(cid))
        time.sleep(0.6)  # the producer follows its control file every 0.1 s
        h1 = next(c["height"] for c in json.loads(_cli(tmp_path, "devnet", "status", "--json").stdout)["chains"] if c["chainId"] == cid)
        time.sleep(1.0)
        h2 = next(c["height"] for c in json.loads(_cli(tmp_path, "devnet", "status", "--json").stdout)["chains"] if c["chainId"] == cid)
        assert h2 == h1
        _cli(tmp_path, "devnet", "resume", "--chain", str(cid))
        time.sleep(1.0)
        h3 = next(c["height"] for c in json.loads(_cli(tmp_path, "devnet", "status", "--json").stdout)["chains"] if c["chainId"] == cid)
        assert h3 > h2
        r = json.loads(_cli(tmp_path, "devnet", "reorg", "--chain", str(cid), "--depth", "2").stdout)
        assert r["depth"] == 2
        h4 = next(c["height"] for c in json.loads(_cli(tmp_path, "devnet", "status", "--json").stdout)["chains"] if c["chainId"] == cid)
        r = json.loads(_cli(tmp_path, "devnet", "reorg", "--chain", str(cid), "--from-block", str(h4 - 1)).stdout)
        assert r["fromBlock"] == h4 - 1 and r["depth"] >= 2
        bad = _cli(tmp_path, "devnet", "halt", "--chain", "4242", check=False)
        assert bad.returncode == 2 and "unknown chain id" in bad.stderr
        again = _cli(tmp_path, "devnet", "up", "--base-port", str(base), check=False)
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        _cli(tmp_path, "devnet", "down", check=False)
    assert not any(_alive(p) for p in pids)
    assert not any(port_in_use(base + k) for k in range(3))


def test_port_in_use_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    # Another process (the other pytest worker's clients) can take a port between the
    # check that the range is free and the bind: pick another range then.
    for _ in range(20):
        base = _free_base(3)
        blocker = socket.socket()
        try:
            blocker.bind(("127.0.0.1", base + 1))
            break
        except OSError:
            blocker.close()
    else:
        raise RuntimeError("no port range whose middle port could be bound")
    blocker.listen()
    try:
        proc = _cli(tmp_path, "devnet", "up", "--base-port", str(base), check=False)
        assert proc.returncode == 2
        assert f"{base + 1}" in proc.stderr and "in use" in proc.stderr
        assert not port_in_use(base) and not port_in_use(base + 2)
        assert _pids(tmp_path) == []
    finally:
        blocker.close()


def test_bad_config_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[chains]]\nname = 'x'\n")
    proc = _cli(tmp_path, "devnet", "up", "--config", str(bad), check=False)
    assert proc.returncode == 2
    assert "chain_id" in proc.stderr


def test_status_without_a_devnet_says_how_to_start_one(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "devnet", "status", check=False)
    assert proc.returncode == 2 and "devnet up" in proc.stderr


def _start_up(tmp_path: Path, timeout: float = 120) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    """`crossbook up` until it reports ready; returns the process, what it printed, its env."""
    env = _env(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        env["CROSSBOOK_API_PORT"] = str(sock.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "up", "--base-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(lines)
    if "Ctrl-C stops everything" not in text:
        proc.kill()
        proc.wait()
        raise AssertionError(text)
    return proc, text, env


def _ports(text: str) -> list[int]:
    return sorted({int(p) for p in re.findall(r"(?:http|redis)://127\.0\.0\.1:(\d+)", text)})


def _all_closed(ports: list[int], wait: float) -> list[int]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(port_in_use(p) for p in ports):
        time.sleep(0.1)
    return [p for p in ports if port_in_use(p)]


def test_up_starts_redis_and_devnet_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    import httpx

    proc, text, env = _start_up(tmp_path)
    try:
        ports = _ports(text)
        assert len(ports) >= 5  # Redis, three chains and the API
        assert f"api       http://127.0.0.1:{env['CROSSBOOK_API_PORT']}" in text
        health = httpx.get(f"http://127.0.0.1:{env['CROSSBOOK_API_PORT']}/healthz").json()
        assert health["status"] == "ok" and len(health["chains"]) == 3
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGINT)  # an impatient second Ctrl-C must not cut the cleanup short
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _all_closed(ports, 5) == []
    # No child survived: nothing in the stack's session is still running.
    out = subprocess.run(["ps", "-eo", "pid,sid"], capture_output=True, text=True).stdout.split("\n")[1:]
    assert not [ln for ln in out if ln.split() and ln.split()[1:] == [str(proc.pid)]]


def test_up_killed_with_sigkill_still_leaves_nothing(tmp_path: Path) -> None:
    """Even a stack that cannot clean up (kill -9) takes its services, chains and Redis with it."""
    proc, text, _ = _start_up(tmp_path)
    ports = _ports(text)
    assert len(ports) >= 5
    proc.kill()
    proc.wait()
    assert _all_closed(ports, 20) == []
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in out
