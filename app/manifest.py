"""The devnet manifest: every chain's RPC URL, chain id, block time, finality depth and
contract addresses, plus the named test accounts. The devnet writes it; every other
component reads it and nothing else to find the chains.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Account",
    "ChainInfo",
    "Manifest",
    "ManifestError",
    "PoolInfo",
    "TokenInfo",
]


class ManifestError(ValueError):
    """The manifest is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    address: str
    private_key: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address, "privateKey": self.private_key}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Account:
        return cls(name=d["name"], address=d["address"], private_key=d["privateKey"])


@dataclass(frozen=True, slots=True)
class TokenInfo:
    symbol: str
    address: str
    decimals: int


@dataclass(frozen=True, slots=True)
class PoolInfo:
    address: str
    kind: str  # "constant_product" | "stableswap"
    token0: str
    token1: str
    symbol0: str
    symbol1: str
    fee_bps: int
    amp: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind,
            "token0": self.token0,
            "token1": self.token1,
            "symbol0": self.symbol0,
            "symbol1": self.symbol1,
            "feeBps": self.fee_bps,
            "amp": self.amp,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PoolInfo:
        return cls(
            address=d["address"],
            kind=d["kind"],
            token0=d["token0"],
            token1=d["token1"],
            symbol0=d["symbol0"],
            symbol1=d["symbol1"],
            fee_bps=int(d["feeBps"]),
            amp=int(d.get("amp", 0)),
        )


@dataclass(frozen=True, slots=True)
class ChainInfo:
    name: str
    chain_id: int
    rpc_url: str
    ws_url: str
    block_time: float
    finality_depth: int
    tokens: dict[str, TokenInfo]
    pools: tuple[PoolInfo, ...]
    inventory: str  # the operator's inventory holder (account now, the vault once deployed)
    contracts: dict[str, str] = field(default_factory=dict)  # settlement, verifier, ...
    deploy_block: int = 0
    # Fast settlement tier for pulls on this chain (settlement/tier.py), USD with 6
    # decimals: the largest payout fronted before its pull settles (0: none), the most
    # outstanding at once, and per trader; the failed-pull losses per window that turn the
    # tier off. 0 (a manifest without the field): the tier's default.
    fast_tier_usd6: int = 0
    fast_exposure_usd6: int = 0
    fast_trader_cap_usd6: int = 0
    fast_loss_budget_usd6: int = 0
    fast_loss_window_seconds: int = 0

    def token_by_address(self, address: str) -> TokenInfo | None:
        low = address.lower()
        for t in self.tokens.values():
            if t.address.lower() == low:
                return t
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "chainId": self.chain_id,
            "rpcUrl": self.rpc_url,
            "wsUrl": self.ws_url,
            "blockTime": self.block_time,
            "finalityDepth": self.finality_depth,
            "tokens": {s: {"address": t.address, "decimals": t.decimals} for s, t in self.tokens.items()},
            "pools": [p.to_json() for p in self.pools],
            "inventory": self.inventory,
            "contracts": dict(self.contracts),
            "deployBlock": self.deploy_block,
            "fastTier": {
                "maxValueUsd6": str(self.fast_tier_usd6),
                "exposureCapUsd6": str(self.fast_exposure_usd6),
                "traderCapUsd6": str(self.fast_trader_cap_usd6),
                "lossBudgetUsd6": str(self.fast_loss_budget_usd6),
                "lossWindowSeconds": self.fast_loss_window_seconds,
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ChainInfo:
        return cls(
            name=d["name"],
            chain_id=int(d["chainId"]),
            rpc_url=d["rpcUrl"],
            ws_url=d["wsUrl"],
            block_time=float(d["blockTime"]),
            finality_depth=int(d["finalityDepth"]),
            tokens={
                s: TokenInfo(symbol=s, address=t["address"], decimals=int(t["decimals"]))
                for s, t in d["tokens"].items()
            },
            pools=tuple(PoolInfo.from_json(p) for p in d["pools"]),
            inventory=d["inventory"],
            contracts=dict(d.get("contracts", {})),
            deploy_block=int(d.get("deployBlock", 0)),
            fast_tier_usd6=int(d.get("fastTier", {}).get("maxValueUsd6", 0)),
            fast_exposure_usd6=int(d.get("fastTier", {}).get("exposureCapUsd6", 0)),
            fast_trader_cap_usd6=int(d.get("fastTier", {}).get("traderCapUsd6", 0)),
            fast_loss_budget_usd6=int(d.get("fastTier", {}).get("lossBudgetUsd6", 0)),
            fast_loss_window_seconds=int(d.get("fastTier", {}).get("lossWindowSeconds", 0)),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    chains: tuple[ChainInfo, ...]
    assets: dict[str, str]  # symbol -> name
    deployer: Account
    operator: Account
    traders: tuple[Account, ...]
    makers: tuple[Account, ...]
    created_at: float = 0.0
    prices: dict[str, int] = field(default_factory=dict)  # symbol -> reference USD price, 6 decimals

    def chain(self, chain_id: int) -> ChainInfo:
        for c in self.chains:
            if c.chain_id == chain_id:
                return c
        raise KeyError(chain_id)

    @property
    def chain_ids(self) -> tuple[int, ...]:
        return tuple(c.chain_id for c in self.chains)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "createdAt": self.created_at,
            "chains": [c.to_json() for c in self.chains],
            "assets": [
                {"symbol": s, "name": n, **({"usd6": str(self.prices[s])} if s in self.prices else {})}
                for s, n in self.assets.items()
            ],
            "accounts": {
                "deployer": self.deployer.to_json(),
                "operator": self.operator.to_json(),
                "traders": [a.to_json() for a in self.traders],
                "makers": [a.to_json() for a in self.makers],
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        try:
            acc = d["accounts"]
            return cls(
                chains=tuple(ChainInfo.from_json(c) for c in d["chains"]),
                assets={a["symbol"]: a["name"] for a in d["assets"]},
                deployer=Account.from_json(acc["deployer"]),
                operator=Account.from_json(acc["operator"]),
                traders=tuple(Account.from_json(a) for a in acc["traders"]),
                makers=tuple(Account.from_json(a) for a in acc["makers"]),
                created_at=float(d.get("createdAt", 0.0)),
                prices={a["symbol"]: int(a["usd6"]) for a in d["assets"] if "usd6" in a},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"malformed manifest: {e!r}") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path | str) -> Manifest:
        p = Path(path)
        try:
            return cls.from_json(json.loads(p.read_text()))
        except FileNotFoundError:
            raise ManifestError(f"no manifest at {p}: start a devnet with `crossbook devnet up`") from None
        except json.JSONDecodeError as e:
            raise ManifestError(f"{p}: not JSON: {e}") from None
