"""An N-chain Anvil devnet: start, deploy, describe, fault-inject, stop.

`Devnet.start()` starts every chain at once, waits until each answers JSON-RPC, deploys
the contracts in parallel (automine on), writes the manifest, then hands block production
to the `BlockProducer` at each chain's block time. Foreground devnets (tests, `make up`)
own their processes; detached ones (`crossbook devnet up`) record them in `state.json`
so that `crossbook devnet down` stops exactly what was started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.manifest import ChainInfo, Manifest
from scripts.devnet.anvil import AnvilError, AnvilNode, rpc_call
from scripts.devnet.config import DevnetConfig
from scripts.devnet.ports import free_port, port_in_use
from scripts.devnet.producer import BlockProducer, ChainClock, read_control, write_control
from settlement.tier import usd6

__all__ = ["Devnet", "DevnetError", "DevnetState", "stop_detached"]

ROOT = Path(__file__).resolve().parents[2]


def _die_with_parent() -> None:
    from scripts.stack import die_with_parent

    die_with_parent()


class DevnetError(RuntimeError):
    """The devnet could not start, or an operation on it failed; the message says why."""


@dataclass
class DevnetState:
    """What a detached devnet started, so `down` can stop exactly that."""

    state_dir: Path
    pids: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.state_dir / "state.json"

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"pids": self.pids}, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> DevnetState | None:
        p = state_dir / "state.json"
        if not p.exists():
            return None
        return cls(state_dir=state_dir, pids=json.loads(p.read_text()).get("pids", []))


def _pid_alive(pid: int) -> bool:
    """Running (a zombie is not: it has exited and holds no port; a detached devnet's
    processes are reaped by init, which here can take ~2 s each)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def _kill_group(pid: int, timeout: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # Reap it if it is our child; otherwise poll until it is gone.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                if not _pid_alive(pid):
                    return
            time.sleep(0.02)


class Devnet:
    def __init__(self, cfg: DevnetConfig, state_dir: Path | None = None, *, detached: bool = False) -> None:
        self.cfg = cfg
        d = Path(state_dir or cfg.state_dir)
        self.state_dir = d if d.is_absolute() else ROOT / d
        self.detached = detached
        self.nodes: dict[int, AnvilNode] = {}
        self.manifest: Manifest | None = None
        self.producer: BlockProducer | None = None
        self.producer_proc: subprocess.Popen[bytes] | None = None

    @property
    def manifest_path(self) -> Path:
        return self.state_dir / "manifest.json"

    @property
    def control_path(self) -> Path:
        return self.state_dir / "control.json"

    # -- lifecycle -------------------------------------------------------------------

    def start(self, progress: Callable[[str], None] = lambda _m: None) -> Manifest:
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        busy = [c.port for c in self.cfg.chains if c.port and port_in_use(c.port)]
        if busy:
            raise DevnetError(
                f"port(s) {', '.join(map(str, busy))} already in use: another devnet running? "
                "(`crossbook devnet down`, or choose ports with --base-port)"
            )
        try:
            progress(f"starting {len(self.cfg.chains)} anvil chains")
            for spec in self.cfg.chains:
                node = AnvilNode(
                    port=spec.port or free_port(),
                    chain_id=spec.chain_id,
                    accounts=self.cfg.accounts,
                    log_path=self.state_dir / f"anvil-{spec.chain_id}.log",
                )
                self.nodes[spec.chain_id] = node
            # Spawned from this thread (a foreground devnet's chains die with this process,
            # whatever kills it), then waited for in parallel.
            tie = None if self.detached else _die_with_parent
            for n in self.nodes.values():
                n.spawn(preexec_fn=tie)
            with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
                list(pool.map(lambda n: n.wait_ready(), self.nodes.values()))
            # Imported here: web3 and eth-account cost ~1.5 s of CPU to import, which
            # `crossbook devnet halt|resume|slow|reorg|status` need not pay.
            from scripts.devnet.accounts import named_accounts
            from scripts.devnet.deploy import deploy_chain
            from scripts.devnet.deploy_settlement import deploy_settlement

            accounts = named_accounts(self.cfg.makers, self.cfg.traders)

            def deploy(spec: Any) -> ChainInfo:
                node = self.nodes[spec.chain_id]
                dep = deploy_chain(
                    self.cfg, spec, node.rpc_url, accounts,
                    progress=lambda step: progress(f"chain {spec.chain_id}: {step}"),
                )
                info = ChainInfo(
                    name=spec.name,
                    chain_id=spec.chain_id,
                    rpc_url=node.rpc_url,
                    ws_url=node.ws_url,
                    block_time=spec.block_time,
                    finality_depth=spec.finality_depth,
                    tokens=dep.tokens,
                    pools=dep.pools,
                    inventory=accounts["operator"][0].address,
                    deploy_block=dep.block,
                    fast_tier_usd6=usd6(spec.fast_tier_usd),
                    fast_exposure_usd6=usd6(spec.fast_exposure_usd),
                    fast_trader_cap_usd6=usd6(spec.fast_trader_cap_usd),
                    fast_loss_budget_usd6=usd6(spec.fast_loss_budget_usd),
                    fast_loss_window_seconds=round(spec.fast_loss_window_hours * 3600),
                )
                # The vault (verifiers + Settlement) takes over the operator's inventory.
                vault = deploy_settlement(
                    info, node.rpc_url, accounts, progress=lambda step: progress(f"chain {spec.chain_id}: {step}")
                )
                return replace(info, contracts=vault["contracts"], inventory=vault["inventory"], deploy_block=vault["block"])

            with ThreadPoolExecutor(max_workers=len(self.cfg.chains)) as pool:
                chains = tuple(pool.map(deploy, self.cfg.chains))
            self.manifest = Manifest(
                chains=chains,
                assets={a.symbol: a.name for a in self.cfg.assets},
                deployer=accounts["deployer"][0],
                operator=accounts["operator"][0],
                traders=tuple(accounts["traders"]),
                makers=tuple(accounts["makers"]),
                created_at=time.time(),
                prices={a.symbol: usd6(a.usd) for a in self.cfg.assets},
            )
            self.manifest.save(self.manifest_path)
            progress("starting block production")
            for node in self.nodes.values():
                node.rpc("evm_setAutomine", [False])
            clocks = {
                s.chain_id: ChainClock(s.chain_id, self.nodes[s.chain_id].rpc_url, s.block_time)
                for s in self.cfg.chains
            }
            write_control(self.control_path, clocks)
            if self.detached:
                self.producer_proc = subprocess.Popen(
                    [sys.executable, "-m", "scripts.devnet.producer", "--control", str(self.control_path)],
                    cwd=ROOT,
                    start_new_session=True,
                    stdout=open(self.state_dir / "producer.log", "ab"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                )
                self._save_state()
            else:
                self.producer = BlockProducer(clocks, control_file=self.control_path)
                self.producer.start()
            progress(f"devnet ready in {time.monotonic() - t0:.1f}s; manifest {self.manifest_path}")
            return self.manifest
        except BaseException:
            self.stop()
            raise

    def _save_state(self) -> None:
        pids: list[dict[str, Any]] = [
            {"pid": n.proc.pid, "role": "anvil", "chainId": cid, "port": n.port}
            for cid, n in self.nodes.items()
            if n.proc is not None
        ]
        if self.producer_proc is not None:
            pids.append({"pid": self.producer_proc.pid, "role": "producer"})
        DevnetState(self.state_dir, pids).save()

    def stop(self) -> None:
        if self.producer is not None:
            self.producer.stop()
            self.producer = None
        if self.producer_proc is not None:
            _kill_group(self.producer_proc.pid)
            self.producer_proc = None
        for node in self.nodes.values():
            node.stop()
        self.nodes.clear()
        state = DevnetState(self.state_dir)
        if state.path.exists():
            state.path.unlink()

    # -- faults and test helpers --------------------------------------------------------

    def _clocks(self) -> dict[int, ChainClock]:
        return read_control(self.control_path)

    def _set_clock(self, chain_id: int, **changes: Any) -> None:
        clocks = self._clocks()
        if chain_id not in clocks:
            raise DevnetError(f"unknown chain id {chain_id}; chains: {sorted(clocks)}")
        for k, v in changes.items():
            setattr(clocks[chain_id], k, v)
        write_control(self.control_path, clocks)
        if self.producer is not None:  # in-process: apply now rather than on the next poll
            p = self.producer
            if "halted" in changes:
                (p.halt if changes["halted"] else p.resume)(chain_id)
            if "block_time" in changes:
                p.set_block_time(chain_id, changes["block_time"])

    def halt(self, chain_id: int) -> None:
        self._set_clock(chain_id, halted=True)

    def resume(self, chain_id: int) -> None:
        self._set_clock(chain_id, halted=False)

    def set_block_time(self, chain_id: int, block_time: float) -> None:
        if block_time <= 0:
            raise DevnetError("block time must be > 0")
        self._set_clock(chain_id, block_time=block_time)

    def rpc_url(self, chain_id: int) -> str:
        if self.manifest is None:
            raise DevnetError("devnet not started")
        return self.manifest.chain(chain_id).rpc_url

    def snapshot(self) -> dict[int, str]:
        return {cid: rpc_call(self.rpc_url(cid), "evm_snapshot") for cid in self.manifest_chain_ids()}

    def revert(self, snaps: dict[int, str]) -> None:
        """Back to the snapshots, pending transactions dropped. Anvil keeps its mempool
        across `evm_revert`: a transaction sent after the snapshot and still pending (on a
        halted chain, say) would otherwise be mined on the reverted state, where its nonce
        is valid again."""
        for cid, snap in snaps.items():
            url = self.rpc_url(cid)
            rpc_call(url, "anvil_dropAllTransactions")  # before: the producer may mine any time
            if not rpc_call(url, "evm_revert", [snap]):
                raise DevnetError(f"chain {cid}: snapshot {snap} could not be reverted")
            rpc_call(url, "anvil_dropAllTransactions")

    def manifest_chain_ids(self) -> tuple[int, ...]:
        if self.manifest is None:
            raise DevnetError("devnet not started")
        return self.manifest.chain_ids


def reorg(rpc_url: str, depth: int) -> dict[str, int]:
    """Replace the last `depth` blocks with new ones (their transactions are dropped)."""
    if depth < 1:
        raise DevnetError("reorg depth must be ≥ 1")
    before = int(rpc_call(rpc_url, "eth_blockNumber"), 16)
    if depth > before:
        raise DevnetError(f"cannot reorg {depth} blocks: the chain has only {before}")
    rpc_call(rpc_url, "anvil_reorg", [depth, []])
    after = int(rpc_call(rpc_url, "eth_blockNumber"), 16)
    return {"heightBefore": before, "heightAfter": after, "depth": depth}


def reorg_from(rpc_url: str, block: int, attempts: int = 5) -> dict[str, int]:
    """Replace every block from `block` up to the head. `anvil_reorg` counts its depth
    from the head at the time of the call, so a chain that mines a block between our
    reading the head and the call would keep `block`: check its hash and go again. (An
    empty block can come back with the same hash; there is nothing to check then.)"""
    old = rpc_call(rpc_url, "eth_getBlockByNumber", [hex(block), False])
    if old is None:
        raise DevnetError(f"cannot reorg from block {block}: the chain is not that high")
    for _ in range(attempts):
        head = int(rpc_call(rpc_url, "eth_blockNumber"), 16)
        res = reorg(rpc_url, head - block + 1)
        new = rpc_call(rpc_url, "eth_getBlockByNumber", [hex(block), False])
        if not old["transactions"] or new["hash"] != old["hash"]:
            return {**res, "fromBlock": block}
    raise DevnetError(f"block {block} outlived {attempts} reorgs: the chain mines faster than we can reorg it")


def stop_detached(state_dir: Path) -> list[dict[str, Any]]:
    """Stop every process a detached devnet recorded; returns what was stopped."""
    state = DevnetState.load(state_dir)
    if state is None:
        return []
    stopped = []
    for entry in state.pids:
        if _pid_alive(int(entry["pid"])):
            _kill_group(int(entry["pid"]))
            stopped.append(entry)
    for entry in state.pids:
        port = entry.get("port")
        deadline = time.monotonic() + 5
        while port and port_in_use(int(port)) and time.monotonic() < deadline:
            time.sleep(0.05)
    state.path.unlink(missing_ok=True)
    return stopped


def ensure_anvil() -> None:
    from scripts.devnet.anvil import anvil_binary

    try:
        anvil_binary()
    except AnvilError as e:
        raise DevnetError(str(e)) from None
