"""`make up` / `crossbook up`: the whole system on one machine, in the foreground.

Starts Redis (the one at REDIS_URL if it answers, else the embedded server with AOF),
the devnet, then every service as a child process in its own process group; prints
the URLs; on Ctrl-C or SIGTERM stops everything it started, newest first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.settings import ROOT, Settings
from scripts import sched
from scripts.devnet.config import ConfigError, load_config
from scripts.devnet.devnet import Devnet, DevnetError
from scripts.devnet.ports import free_port, port_in_use
from scripts.redis_server import EmbeddedRedis, RedisError, redis_answers

__all__ = ["Service", "Stack", "StackError", "wait_for_signal"]


class StackError(RuntimeError):
    """Something the stack needs could not start; the message names it."""


def die_with_parent() -> None:
    """In a child before exec: receive SIGTERM when the process that started it dies, even
    by SIGKILL, so a crashed stack never leaves services behind (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_for_signal(extra: threading.Event | None = None) -> None:
    """Block until SIGINT/SIGTERM (or `extra` is set)."""
    done = extra or threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class Service:
    """A long-running child process of the stack."""

    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    ready: str | None = None  # an HTTP URL that answers 200 once the service is up
    nice: int = 0  # CPU priority below the others (batch work that must not slow confirmations)
    latency: bool = False  # on the confirmation path: a short time slice (scripts/sched.py)
    background: bool = False  # only CPU nobody else wants (scripts/sched.py)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec,  # from the main thread: the death signal follows it
            )

    def _preexec(self) -> None:
        die_with_parent()
        if self.background:
            sched.background()
        elif self.nice:
            sched.lower_priority(self.nice)
        if self.latency:
            sched.latency_critical()

    def wait_ready(self, log_dir: Path, timeout: float = 60.0) -> None:
        if self.ready is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(f"{self.name} exited with {self.proc.returncode}; see {log_dir / (self.name + '.log')}")
            try:
                with urllib.request.urlopen(self.ready, timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise StackError(f"{self.name} not ready after {timeout}s; see {log_dir / (self.name + '.log')}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return


class Stack:
    def __init__(
        self,
        settings: Settings,
        *,
        chains: int = 3,
        config: Path | None = None,
        base_port: int | None = None,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.chains = chains
        self.config = config or settings.devnet_config
        self.base_port = base_port
        self.progress = progress
        self.redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.devnet: Devnet | None = None
        self.services: list[Service] = []

    def start(self) -> None:
        try:
            self._start_redis()
            cfg = load_config(self.config, chains=self.chains, base_port=self.base_port)
            self.devnet = Devnet(cfg, self.settings.state_dir / "devnet")
            self.devnet.start(progress=self.progress)
            # In order, each ready before the next starts: the maker needs the API up.
            for svc in self.service_plan():
                self.progress(f"starting {svc.name}")
                svc.start(self.settings.state_dir / "logs")
                self.services.append(svc)
                svc.wait_ready(self.settings.state_dir / "logs")
        except (ConfigError, DevnetError, RedisError, StackError) as e:
            self.stop()
            raise StackError(str(e)) from None
        except BaseException:
            self.stop()
            raise

    def service_plan(self) -> list[Service]:
        """The services `make up` runs beside the devnet and Redis."""
        assert self.devnet is not None
        env = {
            "REDIS_URL": self.redis_url,
            "CROSSBOOK_MANIFEST": str(self.devnet.manifest_path),
            "CROSSBOOK_STATE_DIR": str(self.settings.state_dir),
        }
        port = self.settings.api_port if not port_in_use(self.settings.api_port) else free_port()
        api_url = f"http://{self.settings.api_host}:{port}"
        return [
            Service(
                "api",
                [sys.executable, "-m", "app.cli", "api", "--host", self.settings.api_host, "--port", str(port)],
                env,
                url=api_url,
                ready=api_url + "/healthz",
                latency=True,
            ),
            # Settlement: a worker for proving and submitting, and the beat that ticks
            # every chain's window and the reconciliation.
            # Two workers: proofs (CPU) never hold up a chain's ticks and submissions.
            # Everything but the API and Redis runs niced, the prover on idle CPU only
            # (scripts/sched.py): on a small machine they share the cores the
            # confirmations need, and a confirmation's milliseconds matter more than a
            # tick's (0.5 s apart) or a proof's (seconds).
            Service("worker-settle", [sys.executable, "-m", "app.cli", "worker", "--queues", "settle"], env, nice=5),
            Service("worker-prove", [sys.executable, "-m", "app.cli", "worker", "--queues", "prove"], env, background=True),
            Service("beat", [sys.executable, "-m", "app.cli", "beat"], env, nice=5),
            # A market maker quoting ladders around the pools' mid prices, over the
            # maker WebSocket like any external maker.
            Service(
                "maker",
                [sys.executable, "-m", "scripts.demo_maker", "--api", api_url, "--manifest", str(self.devnet.manifest_path)],
                env,
                nice=5,
            ),
        ]

    def _start_redis(self) -> None:
        url = self.settings.redis_url
        if url and redis_answers(url):
            self.redis_url = url
            self.progress(f"using Redis at {url}")
            return
        if url:
            self.progress(f"REDIS_URL {url} does not answer; starting an embedded Redis")
        self.redis = EmbeddedRedis(self.settings.state_dir / "redis", die_with_parent=True)
        self.redis.start()
        self.redis_url = self.redis.url
        self.progress(f"embedded Redis (AOF, fsync always) at {self.redis_url}")

    def summary(self) -> list[str]:
        lines = [f"redis     {self.redis_url}"]
        if self.devnet and self.devnet.manifest:
            lines.append(f"manifest  {self.devnet.manifest_path}")
            for c in self.devnet.manifest.chains:
                lines.append(f"chain     {c.chain_id} {c.name:<14} {c.rpc_url}  block {c.block_time}s depth {c.finality_depth}")
        for s in self.services:
            if s.url:
                lines.append(f"{s.name:<9} {s.url}")
                if s.name == "api":
                    lines.append(f"docs      {s.url}/docs")
                    lines.append(f"metrics   {s.url}/metrics")
        return lines

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.stop()
        self.services.clear()
        if self.devnet is not None:
            self.devnet.stop()
            self.devnet = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def run(self) -> None:
        self.start()
        try:
            for line in self.summary():
                print(line, flush=True)
            print("Ctrl-C stops everything.", flush=True)
            stop = threading.Event()
            watcher = threading.Thread(target=self._watch, args=(stop,), daemon=True)
            watcher.start()
            wait_for_signal(stop)
        finally:
            # A second Ctrl-C (or a forwarded signal) must not cut the cleanup short.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.progress("still stopping, please wait"))
            self.progress("stopping")
            self.stop()

    def _watch(self, stop: threading.Event) -> None:
        """A service that dies takes the stack down, loudly, rather than limping on."""
        while not stop.is_set():
            for s in self.services:
                if s.proc is not None and s.proc.poll() is not None:
                    print(f"{s.name} exited with {s.proc.returncode}; see var/logs/{s.name}.log", file=sys.stderr)
                    stop.set()
            time.sleep(0.5)
