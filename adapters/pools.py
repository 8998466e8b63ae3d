"""Pool adapters: one per pool kind, turning on-chain state into the domain's sources.

Each adapter knows how to read a pool's reserves (`getReserves()`), how to decode its
`Sync` event, and how to build the frozen domain `Source` the book holds. Both pool kinds
emit `Sync(reserve0, reserve1)` on every reserve change, so following a chain means
reading logs, never polling every pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from eth_abi import decode
from eth_utils import event_signature_to_log_topic, function_signature_to_4byte_selector

from app.domain.sources import ConstantProductPool, Source, StableSwapPool
from app.domain.types import Address, Asset, AssetSymbol, ChainId
from app.manifest import ChainInfo, PoolInfo

__all__ = [
    "GET_RESERVES",
    "SYNC_TOPIC",
    "ConstantProductAdapter",
    "PoolAdapter",
    "StableSwapAdapter",
    "adapter_for",
    "decode_reserves",
]

GET_RESERVES = "0x" + function_signature_to_4byte_selector("getReserves()").hex()
SYNC_TOPIC = "0x" + event_signature_to_log_topic("Sync(uint256,uint256)").hex()


def decode_reserves(data: str | bytes) -> tuple[int, int]:
    raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(data, str) else data
    r0, r1 = decode(["uint256", "uint256"], raw)
    return int(r0), int(r1)


@dataclass(frozen=True, slots=True)
class PoolAdapter:
    """Static facts about one pool (from the manifest) and how to turn reserves into a source."""

    chain_id: int
    info: PoolInfo
    token0: Asset
    token1: Asset
    gas_units: int

    kind: ClassVar[str] = ""
    source_class: ClassVar[type]  # the domain source this kind of pool becomes

    @property
    def address(self) -> str:
        return self.info.address

    @property
    def source_id(self) -> str:
        return f"{self.chain_id}:{self.info.address.lower()}"

    def source(self, reserve0: int, reserve1: int) -> Source:
        """The domain source for these reserves (fields common to every kind, plus the
        kind's own from `_extra`)."""
        return self.source_class(
            id=self.source_id,
            chain=ChainId(self.chain_id),
            token0=self.token0,
            token1=self.token1,
            balance0=reserve0,
            balance1=reserve1,
            fee_bps=self.info.fee_bps,
            gas_units=self.gas_units,
            **self._extra(),
        )

    def _extra(self) -> dict[str, int]:
        return {}


@dataclass(frozen=True, slots=True)
class ConstantProductAdapter(PoolAdapter):
    kind: ClassVar[str] = "constant_product"
    source_class: ClassVar[type] = ConstantProductPool


@dataclass(frozen=True, slots=True)
class StableSwapAdapter(PoolAdapter):
    kind: ClassVar[str] = "stableswap"
    source_class: ClassVar[type] = StableSwapPool

    def _extra(self) -> dict[str, int]:
        return {"amp": self.info.amp}


# Gas a pool costs a settlement batch that trades on it: one swap inside the settle
# transaction (measured on the devnet: 67k / 79k per swap transaction including the
# 21k base). The router amortises it over the batch, since netting trades each pool once.
DEFAULT_GAS = {"constant_product": 50_000, "stableswap": 60_000}
_KINDS: dict[str, type[PoolAdapter]] = {
    "constant_product": ConstantProductAdapter,
    "stableswap": StableSwapAdapter,
}


def adapter_for(chain: ChainInfo, pool: PoolInfo, gas_units: dict[str, int] | None = None) -> PoolAdapter:
    try:
        cls = _KINDS[pool.kind]
    except KeyError:
        raise ValueError(f"no adapter for pool kind {pool.kind!r}") from None
    t0 = chain.tokens[pool.symbol0]
    t1 = chain.tokens[pool.symbol1]
    cid = ChainId(chain.chain_id)
    return cls(
        chain_id=chain.chain_id,
        info=pool,
        token0=Asset(AssetSymbol(t0.symbol), cid, t0.decimals, Address(t0.address)),
        token1=Asset(AssetSymbol(t1.symbol), cid, t1.decimals, Address(t1.address)),
        gas_units=(gas_units or DEFAULT_GAS)[pool.kind],
    )
