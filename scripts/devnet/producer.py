"""Block production for devnet chains.

Anvil's own interval mining only takes whole seconds once running, so a 0.25 s chain
could not be halted and resumed. Chains therefore run in manual mining and this
producer calls `evm_mine` on each chain's schedule. That makes every fault a tester
needs a one-line change: halt, resume, or slow a chain down (slow finality).

In a detached devnet the producer runs as its own process and follows a control file
(`control.json` in the devnet state dir) that `crossbook devnet halt|resume|slow` edit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.devnet.anvil import rpc_call

__all__ = ["BlockProducer", "ChainClock", "read_control", "write_control"]


@dataclass
class ChainClock:
    chain_id: int
    rpc_url: str
    block_time: float
    halted: bool = False


def read_control(path: Path) -> dict[int, ChainClock]:
    raw = json.loads(path.read_text())
    return {
        int(cid): ChainClock(int(cid), c["rpcUrl"], float(c["blockTime"]), bool(c.get("halted", False)))
        for cid, c in raw["chains"].items()
    }


def write_control(path: Path, clocks: dict[int, ChainClock]) -> None:
    doc: dict[str, Any] = {
        "chains": {
            str(c.chain_id): {"rpcUrl": c.rpc_url, "blockTime": c.block_time, "halted": c.halted}
            for c in clocks.values()
        }
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


class BlockProducer:
    """One thread per chain mining a block every `block_time` seconds unless halted."""

    def __init__(self, clocks: dict[int, ChainClock], control_file: Path | None = None) -> None:
        self.clocks = clocks
        self.control_file = control_file
        self._control_mtime = 0.0
        self._stop = threading.Event()
        self._wake = {cid: threading.Event() for cid in clocks}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for cid in self.clocks:
            t = threading.Thread(target=self._run, args=(cid,), name=f"producer-{cid}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.control_file is not None:
            t = threading.Thread(target=self._follow_control, name="producer-control", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for ev in self._wake.values():
            ev.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    def halt(self, chain_id: int) -> None:
        self.clocks[chain_id].halted = True

    def resume(self, chain_id: int) -> None:
        self.clocks[chain_id].halted = False
        self._wake[chain_id].set()

    def set_block_time(self, chain_id: int, block_time: float) -> None:
        self.clocks[chain_id].block_time = block_time
        self._wake[chain_id].set()

    def _follow_control(self) -> None:
        assert self.control_file is not None
        while not self._stop.wait(0.1):
            try:
                mtime = self.control_file.stat().st_mtime
                if mtime == self._control_mtime:
                    continue
                self._control_mtime = mtime
                for cid, clock in read_control(self.control_file).items():
                    if cid in self.clocks:
                        was = (self.clocks[cid].halted, self.clocks[cid].block_time)
                        self.clocks[cid].halted = clock.halted
                        self.clocks[cid].block_time = clock.block_time
                        if was != (clock.halted, clock.block_time):
                            self._wake[cid].set()
            except (OSError, ValueError, KeyError):
                continue  # a half-written or missing file: the next tick reads it again

    def _run(self, cid: int) -> None:
        clock = self.clocks[cid]
        wake = self._wake[cid]
        due = time.monotonic() + clock.block_time
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0 and wake.wait(wait):
                wake.clear()
                due = time.monotonic() + clock.block_time
                continue
            if self._stop.is_set():
                return
            if not clock.halted:
                # A chain that is down (killed in a fault test) just misses blocks.
                with contextlib.suppress(Exception):
                    rpc_call(clock.rpc_url, "evm_mine", timeout=2.0)
            due += clock.block_time
            now = time.monotonic()
            if due < now:  # fell behind (machine busy): skip, never burst-mine
                due = now + clock.block_time


def main() -> None:
    ap = argparse.ArgumentParser(description="Crossbook devnet block producer")
    ap.add_argument("--control", required=True, type=Path)
    args = ap.parse_args()
    producer = BlockProducer(read_control(args.control), control_file=args.control)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    producer.start()
    done.wait()
    producer.stop()


if __name__ == "__main__":
    main()
