"""Deploys one chain's settlement: batch verifiers, the Settlement vault, and its funding.

Per chain, after `deploy.deploy_chain`:
1. one Groth16 verifier per batch capacity (settlement.zk.batch.CAPACITIES), generated from the
   batch circuit's cached verifying key (`groth16.load_or_setup`: the first run makes the
   keys, with progress, and every later run reads them);
2. `Settlement(operator, genesis_head(chainId), reclaimTimeout, tokens, capacities,
   verifiers)`, tokens in the chain's `tokens` order, which is the manifest's asset order
   (`DevnetConfig.assets`): token index k is the k-th asset;
3. the operator's whole token balance moves into the vault (the vault is the inventory);
4. every trader and market maker approves the vault for every token.

Verifier bytecode is cached beside the keys (`batch-verifier-<capacity>.json`), keyed by
the circuit's source files and the key file it came from, so a devnet start with warm keys
neither builds an R1CS nor runs the compiler. Runs with automine on.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from app.manifest import Account, ChainInfo
from scripts.build_contracts import load_artifact
from settlement.zk.batch import CAPACITIES
from settlement.zk.legs import genesis_head

__all__ = [
    "DEFAULT_CAPACITIES",
    "DEFAULT_RECLAIM_TIMEOUT",
    "SettlementDeployError",
    "batch_verifier_bytecode",
    "deploy_settlement",
]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CAPACITIES = CAPACITIES
DEFAULT_RECLAIM_TIMEOUT = 3600  # seconds; devnet
MAX_UINT = 2**256 - 1
# The files whose change changes the batch circuit or the generated verifier.
_CIRCUIT_SOURCES = (
    "batch.py",
    "legs.py",
    "poseidon.py",
    "poseidon_params.py",
    "circuit.py",
    "gadgets.py",
    "r1cs.py",
    "constants.py",
    "verifier_sol.py",
)
_lock = threading.Lock()
_bytecode: dict[int, str] = {}


class SettlementDeployError(RuntimeError):
    """A settlement deployment step failed; the message names it."""


# -- verifiers ------------------------------------------------------------------------


def _cache_dir() -> Path:
    from settlement.zk.groth16 import CACHE_ENV, DEFAULT_CACHE_DIR

    # Same resolution as groth16.load_or_setup, so prover and verifier share the keys.
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def _sources_digest() -> str:
    h = hashlib.sha256()
    for name in _CIRCUIT_SOURCES:
        h.update(name.encode() + b"\0" + (ROOT / "settlement" / "zk" / name).read_bytes())
    return h.hexdigest()


def _key_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _cached(capacity: int, sources: str) -> str | None:
    entry_path = _cache_dir() / f"batch-verifier-{capacity}.json"
    try:
        entry = json.loads(entry_path.read_text())
        keys = _cache_dir() / f"{entry['digest']}.g16"
        if entry["sources"] == sources and entry["keyStamp"] == _key_stamp(keys):
            return str(entry["bytecode"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def batch_verifier_bytecode(
    capacities: Sequence[int] = DEFAULT_CAPACITIES,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[int, str]:
    """Creation bytecode of the verifier of each batch capacity (thread-safe, cached)."""
    with _lock:
        missing = [c for c in capacities if c not in _bytecode]
        if not missing:
            return {c: _bytecode[c] for c in capacities}
        sources = _sources_digest()
        build: list[int] = []
        for c in missing:
            hit = _cached(c, sources)
            if hit is None:
                build.append(c)
            else:
                _bytecode[c] = hit
        if build:
            _build_verifiers(build, sources, progress)
        return {c: _bytecode[c] for c in capacities}


def _throttled(progress: Callable[[str], None], prefix: str) -> Callable[[str, int, int], None]:
    last = [0.0]

    def tick(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 2.0 or done == total:  # a line every 2 s is progress enough
            last[0] = now
            progress(f"{prefix} {stage} {done}/{total}")

    return tick


def _build_verifiers(capacities: list[int], sources: str, progress: Callable[[str], None]) -> None:
    from scripts.solc import compile_sources
    from settlement.zk import groth16
    from settlement.zk.batch import batch_r1cs
    from settlement.zk.verifier_sol import generate_verifier

    srcs: dict[str, str] = {}
    digests: dict[int, str] = {}
    for c in capacities:
        progress(f"batch circuit {c}: building R1CS")
        r1cs = batch_r1cs(c)
        digests[c] = r1cs.digest()
        tick = _throttled(progress, f"batch circuit {c}: key setup")

        if not (_cache_dir() / f"{digests[c]}.g16").exists():
            progress(f"batch circuit {c}: no cached keys, running the devnet setup (once)")
        _, vk = groth16.load_or_setup(r1cs, progress=tick)
        srcs[f"BatchVerifier{c}.sol"] = generate_verifier(vk, contract_name=f"BatchVerifier{c}")
    progress(f"compiling verifiers {', '.join(map(str, capacities))}")
    arts = compile_sources(srcs)
    for c in capacities:
        code = arts[f"BatchVerifier{c}"].bytecode
        _bytecode[c] = code
        entry = {
            "capacity": c,
            "sources": sources,
            "digest": digests[c],
            "keyStamp": _key_stamp(_cache_dir() / f"{digests[c]}.g16"),
            "bytecode": code,
        }
        path = _cache_dir() / f"batch-verifier-{c}.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)


# -- chain I/O ------------------------------------------------------------------------


class _Chain:
    """Minimal JSON-RPC client for unlocked-account transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._id = 0
        self.sent: list[tuple[str, str]] = []

    def _post(self, payload: Any) -> Any:
        req = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def call(self, method: str, params: list[Any]) -> Any:
        self._id += 1
        reply = self._post({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        if "error" in reply:
            raise SettlementDeployError(f"{method}: {reply['error'].get('message')}")
        return reply["result"]

    def send_many(self, txs: list[tuple[dict[str, Any], str]]) -> None:
        """Send one by one (a JSON-RPC batch races on nonces); `check_all` checks receipts."""
        for tx, step in txs:
            self.sent.append((str(self.call("eth_sendTransaction", [tx])), step))

    def receipt(self, tx_hash: str, step: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.call("eth_getTransactionReceipt", [tx_hash])
            if rc is not None:
                if int(rc["status"], 16) != 1:
                    raise SettlementDeployError(f"{step}: transaction failed")
                return dict(rc)
            if time.monotonic() > deadline:
                raise SettlementDeployError(f"{step}: not mined within {timeout}s")
            time.sleep(0.005)

    def deploy(self, sender: str, code: str, step: str) -> str:
        h = self.call(
            "eth_sendTransaction", [{"from": sender, "data": code, "gas": hex(12_000_000)}]
        )
        return _checksum(self.receipt(h, step)["contractAddress"])

    def check_all(self) -> int:
        block = 0
        for h, step in self.sent:
            block = max(block, int(self.receipt(h, step)["blockNumber"], 16))
        self.sent.clear()
        return block


def _calldata(signature: str, types: list[str], args: list[Any]) -> str:
    return "0x" + (keccak(signature.encode())[:4] + abi_encode(types, args)).hex()


def _checksum(addr: str) -> str:
    hexaddr = addr.lower().removeprefix("0x")
    h = keccak(hexaddr.encode()).hex()
    return "0x" + "".join(c.upper() if int(h[i], 16) >= 8 else c for i, c in enumerate(hexaddr))


def deploy_settlement(
    chain: ChainInfo,
    rpc_url: str,
    accounts: dict[str, list[Account]],
    progress: Callable[[str], None] = lambda _m: None,
    *,
    capacities: Sequence[int] = DEFAULT_CAPACITIES,
    reclaim_timeout: int = DEFAULT_RECLAIM_TIMEOUT,
) -> dict[str, Any]:
    """Deploy verifiers and vault on `chain`, move the inventory in, add the approvals.

    Returns {"contracts": {"settlement": vault, "verifier16": ..., ...}, "inventory":
    vault, "tokenOrder": [symbols by token index], "reclaimTimeout": s, "block": n}.
    """
    codes = batch_verifier_bytecode(capacities, progress)
    rpc = _Chain(rpc_url)
    deployer = accounts["deployer"][0].address
    operator = accounts["operator"][0].address

    progress("verifiers")
    verifiers = {c: rpc.deploy(deployer, codes[c], f"deploy verifier {c}") for c in capacities}
    progress("settlement vault")
    symbols = list(chain.tokens)
    tokens = [chain.tokens[s].address for s in symbols]
    art = load_artifact("Settlement")
    ctor = abi_encode(
        ["address", "uint256", "uint256", "address[]", "uint256[]", "address[]"],
        [
            operator,
            genesis_head(chain.chain_id),
            reclaim_timeout,
            tokens,
            list(capacities),
            [verifiers[c] for c in capacities],
        ],
    )
    vault = rpc.deploy(deployer, art["bytecode"] + ctor.hex(), "deploy Settlement")

    progress("inventory and approvals")
    balances = [
        int(
            rpc.call(
                "eth_call",
                [
                    {"to": t, "data": _calldata("balanceOf(address)", ["address"], [operator])},
                    "latest",
                ],
            ),
            16,
        )
        for t in tokens
    ]
    txs: list[tuple[dict[str, Any], str]] = []
    for sym, tok, bal in zip(symbols, tokens, balances, strict=True):
        if bal:
            data = _calldata("transfer(address,uint256)", ["address", "uint256"], [vault, bal])
            txs.append(
                (
                    {"from": operator, "to": tok, "data": data, "gas": hex(100_000)},
                    f"inventory {sym}",
                )
            )
    approve = _calldata("approve(address,uint256)", ["address", "uint256"], [vault, MAX_UINT])
    for acct in [*accounts.get("makers", []), *accounts.get("traders", [])]:
        for sym, tok in zip(symbols, tokens, strict=True):
            txs.append(
                (
                    {"from": acct.address, "to": tok, "data": approve, "gas": hex(80_000)},
                    f"approve {acct.name} {sym}",
                )
            )
    rpc.send_many(txs)
    block = rpc.check_all()
    contracts = {"settlement": vault, **{f"verifier{c}": verifiers[c] for c in capacities}}
    return {
        "contracts": contracts,
        "inventory": vault,
        "tokenOrder": symbols,
        "reclaimTimeout": reclaim_timeout,
        "block": block,
    }
