"""Pipeline fixtures: the devnet with its settlement vaults, the API on that manifest, and
real Celery processes (a `settle` worker, a `prove` worker, beat) on the test Redis.

Every process runs in its own session (process group) and is killed at teardown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.manifest import Manifest
from scripts.devnet.deploy_settlement import deploy_settlement
from scripts.devnet.devnet import Devnet
from scripts.redis_server import EmbeddedRedis
from tests.conftest import ApiProcess, embedded_redis, own_devnet

ROOT = Path(__file__).resolve().parents[3]



@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """A fresh 3-chain devnet per test module here. Other tests leave chain state behind
    (vault cursors advanced by settlements whose ledger was flushed, reorgs that
    invalidate snapshots, maker and trader balances) that these tests must not inherit.
    Overrides the root fixture in this package only; `clean_devnet` follows it."""
    with own_devnet(tmp_path_factory.mktemp("pipeline-devnet")) as net:
        yield net

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """The pipeline's own Redis: the session one holds order logs of orders confirmed by
    other tests' APIs (on chain states since reverted), which the workers would otherwise
    try to settle first. Overrides the root fixture for this package only."""
    with embedded_redis(tmp_path_factory.mktemp("pipeline-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def vault_devnet(devnet: Devnet) -> Devnet:
    """The session devnet with a Settlement vault per chain (deployed here unless the
    devnet already did), the manifest rewritten to name it."""
    m = devnet.manifest
    assert m is not None
    if all("settlement" in c.contracts for c in m.chains):
        return devnet
    accounts = {"deployer": [m.deployer], "operator": [m.operator], "traders": list(m.traders), "makers": list(m.makers)}
    chains = []
    for c in m.chains:
        dep = deploy_settlement(c, c.rpc_url, accounts)
        chains.append(dataclasses.replace(c, contracts={**c.contracts, **dep["contracts"]}, inventory=dep["inventory"]))
    devnet.manifest = dataclasses.replace(m, chains=tuple(chains))
    devnet.manifest.save(devnet.manifest_path)
    return devnet


@pytest.fixture(scope="module")
def pipeline_api(vault_devnet: Devnet, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    proc = ApiProcess(vault_devnet.manifest_path, redis_server.url, tmp_path_factory.mktemp("papi"))
    try:
        yield proc
    finally:
        proc.stop()


class Celery:
    """Worker and beat processes of settlement.celery_app."""

    def __init__(self, manifest: Path, redis_url: str, state_dir: Path) -> None:
        self.env = {**os.environ, "CROSSBOOK_MANIFEST": str(manifest), "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
        self.dir = state_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.dir / f"{name}.log", "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "settlement.celery_app", *args],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.procs[name] = p
        return p

    def worker(self, name: str, queue: str) -> subprocess.Popen[bytes]:
        return self._spawn(name, ["worker", "-Q", queue, "--pool=solo", "-n", f"{name}@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"])

    def beat(self) -> subprocess.Popen[bytes]:
        return self._spawn("beat", ["beat", "--loglevel=INFO", f"--schedule={self.dir / 'beat-schedule'}"])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.pop(name)
        if p.poll() is None:
            os.killpg(p.pid, sig)
            p.wait(10)

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for name in list(self.procs):
            p = self.procs[name]
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            self.procs.pop(name)


@pytest.fixture
def celery_procs(vault_devnet: Devnet, pipeline_api: ApiProcess, redis_url: str, tmp_path: Path) -> Iterator[Celery]:
    # A previous test may have halted or reverted a chain: wait until the API sees every
    # chain producing blocks again before the test quotes.
    pipeline_api.wait_ready(60)
    c = Celery(vault_devnet.manifest_path, redis_url, tmp_path)
    c.worker("settle", "settle")
    c.worker("prove", "prove")
    c.beat()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def manifest_of(net: Devnet) -> Manifest:
    assert net.manifest is not None
    return net.manifest


# -- money checks shared by the fault and end-to-end tests ------------------------------

_BALANCE_OF = "0x70a08231"  # balanceOf(address)


def balances(net: Devnet, holders: list[str], chains: list[int] | None = None) -> dict[tuple[int, str, str], int]:
    """(chain, token address, holder) -> on-chain balance, for every manifest asset of the
    given chains (default all) and every holder; one JSON-RPC batch per chain."""
    import httpx

    m = manifest_of(net)
    out: dict[tuple[int, str, str], int] = {}
    for c in m.chains:
        if chains is not None and c.chain_id not in chains:
            continue
        keys = [(c.chain_id, t.address.lower(), h.lower()) for t in c.tokens.values() for h in holders]
        body = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_call", "params": [{"to": tok, "data": _BALANCE_OF + "0" * 24 + h[2:]}, "latest"]}
            for i, (_, tok, h) in enumerate(keys)
        ]
        replies = {x["id"]: x for x in httpx.post(c.rpc_url, json=body, timeout=30).json()}
        for i, k in enumerate(keys):
            out[k] = int(replies[i]["result"], 16)
    return out


def ledger_orders(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every order document in the ledger, by id."""
    keys = [k for k in r.scan_iter(match="order:0x*", count=500)]
    return {json.loads(v)["id"]: json.loads(v) for v in r.mget(keys) if v} if keys else {}


def expected_deltas(orders: list[dict[str, Any]]) -> dict[tuple[int, str, str], int]:
    """What the orders' receipts say must have moved: a finalized (or settled) order took
    its sell amount from the trader on the sell chain and paid its buy amount to the
    recipient on the buy chain; a failed or refunded one moved nothing in the end. A
    fast-tier order whose pull failed (`operatorLoss`) paid out and took nothing."""
    d: dict[tuple[int, str, str], int] = {}
    for doc in orders:
        o = doc["order"]
        if doc["state"] not in ("finalized", "settled"):
            continue
        k_sell = (int(o["sellChainId"]), o["sellToken"].lower(), o["trader"].lower())
        k_buy = (int(o["buyChainId"]), o["buyToken"].lower(), o["recipient"].lower())
        if "operatorLoss" not in doc:
            d[k_sell] = d.get(k_sell, 0) - int(o["sellAmount"])
        d[k_buy] = d.get(k_buy, 0) + int(doc["buyAmount"])
    return d


def assert_balances_moved(before: dict[tuple[int, str, str], int], after: dict[tuple[int, str, str], int], orders: list[dict[str, Any]]) -> None:
    """Every tracked balance changed by exactly what the receipts say (to the wei): nothing
    paid twice, nothing lost, nobody else's funds touched."""
    exp = expected_deltas(orders)
    missing = set(exp) - set(before)
    assert not missing, f"balances not tracked: {sorted(missing)[:5]}"
    wrong = {k: (after[k] - before[k], exp.get(k, 0)) for k in before if after[k] - before[k] != exp.get(k, 0)}
    assert not wrong, f"{len(wrong)} balance(s) moved otherwise than the receipts say (actual, expected): {dict(list(wrong.items())[:8])}"


def pool_trade_deltas(r: redis.Redis, m: Manifest, chain: int) -> dict[str, int]:
    """What the vault on `chain` gained (+) and gave (-) per token address in the netted
    pool trades its mined batches executed (their `poolTrades`, from the PoolTrade events):
    the vault's balance moves by these besides the orders' pulls and payouts."""
    tokens = m.chain(chain).tokens
    d: dict[str, int] = {}
    for n in range(1, int(r.get(f"stl:{chain}:batch:seq") or 0) + 1):
        for t in json.loads(r.get(f"stl:{chain}:batch:{n}") or "{}").get("poolTrades", []):
            if t["ok"]:
                tin, tout = tokens[t["tokenIn"]].address.lower(), tokens[t["tokenOut"]].address.lower()
                d[tin] = d.get(tin, 0) - int(t["amountIn"])
                d[tout] = d.get(tout, 0) + int(t["amountOut"])
    return d


def wait_reconciled(r: redis.Redis, chains: list[int], timeout: float = 90) -> dict[int, dict[str, Any]]:
    """Wait for a fresh, clean reconciliation of each chain with every log leg applied and
    no pool flow left to net: the vault holds, per token and to the wei, its baseline plus
    pulls minus payouts plus its maker and pool legs."""
    from celery import Celery

    since = time.time()
    reps: dict[int, dict[str, Any]] = {}
    asked = [0.0]
    kw = r.connection_pool.connection_kwargs
    broker = Celery(broker=f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}", set_as_current=False)

    def clean() -> bool:
        if time.monotonic() - asked[0] >= 2.0:
            _request_reconcile(broker, chains)
            asked[0] = time.monotonic()
        for c in chains:
            rep = json.loads(r.get(f"stl:{c}:recon") or "{}")
            if rep.get("status") == "mismatch":
                raise AssertionError(f"chain {c} does not reconcile: {rep}")
            log_next = int(r.get(f"log:{c}:next") or 0)
            if not (rep.get("status") == "ok" and rep.get("at", 0) > since and rep.get("applied") == rep.get("cursor") == log_next):
                return False
            if r.hlen(f"stl:{c}:flows"):  # pool trades still to be netted into a pool leg
                return False
            reps[c] = rep
        return True

    with broker:
        wait_for(clean, timeout, f"a clean reconciliation of chains {chains}", interval=1.0)
    return reps


def _request_reconcile(broker: Any, chains: list[int]) -> None:
    """Queue the `settlement.reconcile` task the settle worker runs for beat every
    RECONCILE_SECONDS, so a test waits for the next reconciliation by seconds, not by up
    to ten. The worker runs it as it runs beat's."""
    from settlement.celery_app import RECONCILE_SECONDS

    for c in chains:
        broker.send_task("settlement.reconcile", args=(c,), queue="settle", expires=RECONCILE_SECONDS)


def impersonated_transfer(rpc_url: str, token: str, sender: str, to: str, amount: int) -> None:
    """Move `amount` of `token` out of any account (a contract too) through Anvil's
    impersonation: the test's way to drain or top up a vault."""
    from web3 import Web3

    from scripts.devnet.anvil import rpc_call

    rpc_call(rpc_url, "anvil_setBalance", [sender, hex(10**18)])
    rpc_call(rpc_url, "anvil_impersonateAccount", [sender])
    try:
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        data = Web3.keccak(text="transfer(address,uint256)")[:4] + bytes(12) + bytes.fromhex(to[2:]) + amount.to_bytes(32, "big")
        h = w3.eth.send_transaction({"from": Web3.to_checksum_address(sender), "to": Web3.to_checksum_address(token), "data": data, "gas": 200_000})
        assert w3.eth.wait_for_transaction_receipt(h, timeout=60)["status"] == 1
    finally:
        rpc_call(rpc_url, "anvil_stopImpersonatingAccount", [sender])


STANDARD_PATH = ["confirmed", "pull_settled", "settled", "finalized"]
# A fast-tier order's payout enters the log at confirmation: paid before its pull
# settles, it skips pull_settled (or takes the standard path when its pull wins).
FAST_PATH = ["confirmed", "settled", "finalized"]


def finalized_path_ok(doc: dict[str, Any]) -> bool:
    """The order went to `finalized` along a path its tier allows."""
    path = [h["state"] for h in doc["history"]]
    return path == STANDARD_PATH or (doc.get("tier") == "fast" and path == FAST_PATH)


def leg_state(r: redis.Redis, order_id: str, kind: str) -> str:
    """The state of an order's pull or payout leg in the ledger."""
    doc = json.loads(r.get(f"order:{order_id}") or "{}")
    return str(next(x["state"] for x in doc["legs"] if x["kind"] == kind))
