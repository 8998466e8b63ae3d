"""One Anvil node as a child process: located in the pinned npm package, started on a
given port, ready when it answers JSON-RPC (never by sleeping a fixed time), stopped with
its whole process group so nothing is left behind."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.devnet.ports import port_in_use

__all__ = ["DEV_MNEMONIC", "AnvilError", "AnvilNode", "anvil_binary", "rpc_call"]

ROOT = Path(__file__).resolve().parents[2]
DEV_MNEMONIC = "test test test test test test test test test test test junk"


class AnvilError(RuntimeError):
    """Anvil is missing, could not start, or did not answer."""


def anvil_binary() -> str:
    """The Anvil executable shipped by `@foundry-rs/anvil` (platform package first)."""
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = platform.system().lower()
    candidates = [
        ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil",
        ROOT / "node_modules" / ".bin" / "anvil",
    ]
    for c in candidates:
        if c.exists() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("anvil")
    if found:
        return found
    raise AnvilError("anvil not found: run `make install` (npm install of @foundry-rs/anvil)")


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout: float = 5.0) -> Any:
    """A plain JSON-RPC call (used where pulling in web3 is not worth it)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise AnvilError(f"{method}: {reply['error'].get('message', reply['error'])}")
    return reply["result"]


@dataclass
class AnvilNode:
    """A running (or startable) Anvil chain."""

    port: int
    chain_id: int
    block_time: float | None = None  # None: mine a block per transaction
    accounts: int = 20
    host: str = "127.0.0.1"
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            anvil_binary(),
            "--host", self.host,
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.accounts),
            "--mnemonic", DEV_MNEMONIC,
            "--hardfork", "cancun",
            "--gas-limit", "60000000",
            "--code-size-limit", "100000",
            # Old block states beyond the ones Anvil keeps in memory are dropped, not
            # written under ~/.foundry/anvil/tmp: a chain mining a block a second wrote
            # ~300 MB an hour there, never removed after a kill (73 GB over a day of
            # test runs filled the disk). Nothing here reads state that old.
            "--max-persisted-states", "0",
        ]
        if self.block_time is not None:
            cmd += ["--block-time", _fmt_seconds(self.block_time)]
        return cmd + self.extra_args

    def start(self, timeout: float = 15.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self, preexec_fn: Callable[[], None] | None = None) -> None:
        """Start the process without waiting (`wait_ready` next); `preexec_fn` runs in the
        child, e.g. to tie its life to the caller's."""
        if port_in_use(self.port, self.host):
            raise AnvilError(f"port {self.port} is already in use (chain {self.chain_id})")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec_fn
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AnvilError(
                    f"anvil for chain {self.chain_id} exited with code {self.proc.returncode}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                got = int(rpc_call(self.rpc_url, "eth_chainId", timeout=1.0), 16)
                if got != self.chain_id:
                    raise AnvilError(f"port {self.port} answers chain id {got}, not {self.chain_id}")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        self.stop()
        raise AnvilError(f"anvil for chain {self.chain_id} did not answer on {self.rpc_url} in {timeout}s")

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc_call(self.rpc_url, method, params)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def _fmt_seconds(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else repr(float(s))
