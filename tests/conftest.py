"""Shared fixtures: real processes on free ports, always cleaned up.

- `anvil` / `w3`: one bare Anvil chain (automine) for the session; each test using `w3`
  runs inside an evm_snapshot/evm_revert pair.
- `devnet` / `clean_devnet`: the default 3-chain devnet (tokens, pools, funded accounts,
  block production at each chain's block time) on free ports, once per session; a test
  using `clean_devnet` gets every chain reverted to the same state afterwards.
- `redis_server` / `redis_url`: an embedded Redis (AOF, fsync always) on a free port;
  `redis_url` flushes it after each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from web3 import Web3

from scripts.devnet.anvil import AnvilNode
from scripts.devnet.config import load_config
from scripts.devnet.devnet import Devnet
from scripts.devnet.ports import free_port
from scripts.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    node = AnvilNode(port=free_port(), chain_id=31337)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def w3(anvil: AnvilNode) -> Iterator[Web3]:
    client = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    snap = anvil.rpc("evm_snapshot")
    try:
        yield client
    finally:
        anvil.rpc("evm_revert", [snap])


@contextmanager
def own_devnet(directory: Path) -> Iterator[Devnet]:
    """A 3-chain devnet on free ports in `directory`, stopped on exit."""
    net = Devnet(load_config(chains=3, base_port=0), directory)
    net.start()
    try:
        yield net
    finally:
        net.stop()


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with own_devnet(tmp_path_factory.mktemp("devnet")) as net:
        yield net


@pytest.fixture
def clean_devnet(devnet: Devnet) -> Iterator[Devnet]:
    # A revert consumes its snapshot, so each test takes fresh ones. Reverted before the
    # chains resume, so nothing the test left pending is mined first (the revert also
    # drops what is pending: it would be mined on the reverted state).
    snaps = devnet.snapshot()
    try:
        yield devnet
    finally:
        devnet.revert(snaps)
        for cid in devnet.manifest_chain_ids():
            devnet.resume(cid)
            devnet.set_block_time(cid, next(c.block_time for c in devnet.cfg.chains if c.chain_id == cid))


@contextmanager
def embedded_redis(directory: Path) -> Iterator[EmbeddedRedis]:
    """A real redis-server (AOF, fsync always) in `directory`, stopped on exit."""
    server = EmbeddedRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with embedded_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    try:
        yield redis_server.url
    finally:
        if redis_server.proc is None:  # a test killed it: bring it back for the next one
            redis_server.start()
        redis.Redis.from_url(redis_server.url).flushall()


class ApiProcess:
    """The API as users run it: `crossbook api` in its own process, on a free port."""

    def __init__(self, manifest: Path, redis_url: str, state_dir: Path, **env: str) -> None:
        import os
        import subprocess
        import sys

        self.port = free_port()
        self.redis_url = redis_url
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state_dir / f"api-{self.port}.log"
        full_env = {
            **os.environ,
            "CROSSBOOK_MANIFEST": str(manifest),
            "REDIS_URL": redis_url,
            "CROSSBOOK_STATE_DIR": str(state_dir),
            **env,
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "api", "--port", str(self.port)],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                r = httpx.get(self.url + "/healthz", timeout=1)
                if r.status_code == 200 and all(c["available"] for c in r.json()["chains"].values()):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"API not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def api(devnet: Devnet, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    proc = ApiProcess(devnet.manifest_path, redis_server.url, tmp_path_factory.mktemp("api"))
    try:
        yield proc
    finally:
        proc.stop()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With CROSSBOOK_TEST_TIMELINE=FILE, every phase of every test is appended to FILE
    as a JSON line (worker, test, phase, start and stop times): where a run's wall time
    goes across the two workers, for keeping the suite within its budget."""
    import json
    import os

    path = os.environ.get("CROSSBOOK_TEST_TIMELINE")
    # Under xdist the controller gets every worker's report too (with `node` set): the
    # worker has written that row already.
    if path and getattr(report, "node", None) is None:
        row = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "test": report.nodeid, "phase": report.when,
               "start": report.start, "stop": report.stop, "outcome": report.outcome}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
