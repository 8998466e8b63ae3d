"""Deploys one chain's devnet contracts and seeds its liquidity.

Per chain: one TestToken per asset, every configured pool (prices skewed per chain so the
best large trade splits across chains), liquidity from the deployer, an operator
inventory, trader and market-maker balances, and max allowances to the inventory holder.
Runs with automine on, so each transaction is mined as it is sent; receipts are all
checked at the end, and a failed one aborts with the step that failed.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from app.manifest import Account, PoolInfo, TokenInfo
from scripts.build_contracts import load_artifact
from scripts.devnet.config import ChainSpec, DevnetConfig, PoolSpec

__all__ = ["ChainDeployment", "DeployError", "deploy_chain"]

MAX_UINT = 2**256 - 1
_W3 = Web3()


class DeployError(RuntimeError):
    """A deployment transaction failed; the message names the step."""


@dataclass(frozen=True, slots=True)
class ChainDeployment:
    tokens: dict[str, TokenInfo]
    pools: tuple[PoolInfo, ...]
    block: int


class _Rpc:
    """A keep-it-simple JSON-RPC client with batching for the deployer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._id = 0

    def _post(self, payload: Any) -> Any:
        req = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def call(self, method: str, params: list[Any]) -> Any:
        self._id += 1
        reply = self._post({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        if "error" in reply:
            raise DeployError(f"{method}: {reply['error'].get('message')}")
        return reply["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        if not calls:
            return []
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        replies = sorted(self._post(payload), key=lambda r: r["id"])
        out = []
        for r in replies:
            if "error" in r:
                raise DeployError(f"{calls[r['id']][0]}: {r['error'].get('message')}")
            out.append(r["result"])
        return out


class _Sender:
    """Sends transactions from unlocked dev accounts and remembers what each was for."""

    def __init__(self, rpc: _Rpc) -> None:
        self.rpc = rpc
        self.sent: list[tuple[str, str]] = []  # (tx hash, step description)

    def send(self, sender: str, to: str | None, data: str, gas: int, step: str) -> str:
        tx: dict[str, Any] = {"from": sender, "data": data, "gas": hex(gas)}
        if to is not None:
            tx["to"] = to
        h = self.rpc.call("eth_sendTransaction", [tx])
        self.sent.append((h, step))
        return str(h)

    def deploy(self, sender: str, artifact: str, args: list[Any], step: str) -> str:
        art = load_artifact(artifact)
        ctor = _W3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor(*args)
        h = self.send(sender, None, ctor.data_in_transaction, 6_000_000, step)
        receipt = self.receipt(h, step)
        if int(receipt["status"], 16) != 1:
            raise DeployError(f"{step}: deployment reverted")
        return Web3.to_checksum_address(receipt["contractAddress"])

    def receipt(self, tx_hash: str, step: str, timeout: float = 10.0) -> dict[str, Any]:
        # Automine mines right after the hash is returned, not before: poll briefly.
        deadline = time.monotonic() + timeout
        while True:
            rc = self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            if rc is not None:
                return dict(rc)
            if time.monotonic() > deadline:
                raise DeployError(f"{step}: not mined within {timeout}s")
            time.sleep(0.005)

    def check_all(self) -> int:
        if self.sent:
            self.receipt(self.sent[-1][0], self.sent[-1][1])  # the last one mined: all are
        receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h, _ in self.sent])
        for (h, step), rc in zip(self.sent, receipts, strict=True):
            rc = rc or self.receipt(h, step)
            if int(rc["status"], 16) != 1:
                raise DeployError(f"{step}: transaction failed")
        return max((int(rc["blockNumber"], 16) for rc in receipts), default=0)


def _encode(artifact: str, fn: str, args: list[Any]) -> str:
    art = load_artifact(artifact)
    return str(_W3.eth.contract(abi=art["abi"]).encode_abi(fn, args=args))


def _pool_reserves(cfg: DevnetConfig, chain: ChainSpec, pool: PoolSpec) -> tuple[int, int]:
    a, b = cfg.asset(pool.pair[0]), cfg.asset(pool.pair[1])
    side_usd = pool.depth_usd * chain.depth_scale
    if pool.kind == "stableswap":
        return a.units(side_usd), b.units(side_usd)
    # Price of a in b moves by the chain's skew: fewer a for the same b makes a dearer.
    skew = (chain.price_skew_bps + pool.skew_extra_bps) / 10_000
    return a.units(side_usd / (1 + skew)), b.units(side_usd)


def deploy_chain(
    cfg: DevnetConfig,
    chain: ChainSpec,
    rpc_url: str,
    accounts: dict[str, list[Account]],
    progress: Callable[[str], None] = lambda _msg: None,
) -> ChainDeployment:
    rpc = _Rpc(rpc_url)
    tx = _Sender(rpc)
    deployer = accounts["deployer"][0].address
    operator = accounts["operator"][0].address
    holders = [("operator", operator, cfg.inventory_usd)]
    holders += [(m.name, m.address, cfg.maker_usd) for m in accounts["makers"]]
    holders += [(t.name, t.address, cfg.trader_usd) for t in accounts["traders"]]

    progress("tokens")
    tokens: dict[str, TokenInfo] = {}
    for asset in cfg.assets:
        addr = tx.deploy(
            deployer, "TestToken", [asset.name, asset.symbol, asset.decimals, deployer], f"deploy {asset.symbol}"
        )
        tokens[asset.symbol] = TokenInfo(symbol=asset.symbol, address=addr, decimals=asset.decimals)

    progress("pools")
    pools: list[PoolInfo] = []
    for spec in cfg.pools:
        t0, t1 = tokens[spec.pair[0]], tokens[spec.pair[1]]
        label = f"{spec.kind} {spec.pair[0]}/{spec.pair[1]} {spec.fee_bps}bps"
        if spec.kind == "constant_product":
            addr = tx.deploy(deployer, "ConstantProductPool", [t0.address, t1.address, spec.fee_bps], label)
        else:
            addr = tx.deploy(deployer, "StableSwapPool", [t0.address, t1.address, spec.amp, spec.fee_bps], label)
        r0, r1 = _pool_reserves(cfg, chain, spec)
        for tok, amount in ((t0, r0), (t1, r1)):
            tx.send(deployer, tok.address, _encode("TestToken", "mint", [deployer, amount]), 120_000, f"mint for {label}")
            tx.send(deployer, tok.address, _encode("TestToken", "approve", [addr, amount]), 80_000, f"approve {label}")
        artifact = "ConstantProductPool" if spec.kind == "constant_product" else "StableSwapPool"
        tx.send(deployer, addr, _encode(artifact, "addLiquidity", [r0, r1, deployer]), 600_000, f"liquidity {label}")
        pools.append(
            PoolInfo(
                address=addr,
                kind=spec.kind,
                token0=t0.address,
                token1=t1.address,
                symbol0=t0.symbol,
                symbol1=t1.symbol,
                fee_bps=spec.fee_bps,
                amp=spec.amp,
            )
        )

    progress("funding accounts")
    for asset in cfg.assets:
        tok = tokens[asset.symbol]
        for name, addr, usd in holders:
            tx.send(deployer, tok.address, _encode("TestToken", "mint", [addr, asset.units(usd)]), 120_000, f"fund {name} {asset.symbol}")
    # Traders and makers approve the inventory holder (the vault once it exists).
    for name, addr, _ in holders[1:]:
        for asset in cfg.assets:
            tok = tokens[asset.symbol]
            tx.send(addr, tok.address, _encode("TestToken", "approve", [operator, MAX_UINT]), 80_000, f"approve {name} {asset.symbol}")
    block = tx.check_all()
    return ChainDeployment(tokens=tokens, pools=tuple(pools), block=block)
