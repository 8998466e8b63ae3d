"""Request schemas at the HTTP edge: strict types, unknown fields refused, addresses
checksummed. Amounts stay strings here; `parse_amount` gives them their error codes."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated

from eth_utils import is_checksum_address, to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

__all__ = ["AddressStr", "QuoteBody", "QuoteQuery"]

_HEX40 = re.compile(r"^0x[0-9a-fA-F]{40}$")


@lru_cache(maxsize=8192)
def _address(v: str) -> str:
    # Cached: EIP-55 costs two keccaks and traders send the same few addresses again.
    if not _HEX40.match(v):
        raise ValueError("must be a 0x-prefixed 20-byte hex address")
    if v[2:] != v[2:].lower() and v[2:] != v[2:].upper() and not is_checksum_address(v):
        raise ValueError("mixed-case address with a wrong EIP-55 checksum")
    return str(to_checksum_address(v))


AddressStr = Annotated[StrictStr, AfterValidator(_address)]


class QuoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sellChainId: StrictInt = Field(description="chain id the trader sells on")
    sellToken: StrictStr = Field(max_length=64, description="token address or asset symbol (e.g. WETH)")
    buyChainId: StrictInt = Field(description="chain id the trader receives on")
    buyToken: StrictStr = Field(max_length=64, description="token address or asset symbol")
    sellAmount: StrictStr | None = Field(default=None, description="exact input, base units, decimal string")
    buyAmount: StrictStr | None = Field(default=None, description="exact output, base units, decimal string")
    taker: AddressStr
    recipient: AddressStr | None = None
    slippageBps: StrictInt = Field(default=50, ge=0, le=5000)
    excludeSources: list[StrictStr] = Field(default_factory=list, max_length=200)
    maxSources: StrictInt | None = Field(default=None, ge=1, le=1000)


class QuoteQuery(QuoteBody):
    """The GET form: query parameters arrive as strings, so integers are parsed (laxly)."""

    sellChainId: int = Field(description="chain id the trader sells on")
    buyChainId: int = Field(description="chain id the trader receives on")
    slippageBps: int = Field(default=50, ge=0, le=5000)
    maxSources: int | None = Field(default=None, ge=1, le=1000)


_HEX32 = re.compile(r"^0x[0-9a-fA-F]{64}$")


def _bytes32(v: str) -> str:
    if not _HEX32.match(v):
        raise ValueError("must be 0x followed by 64 hex digits")
    return v.lower()


Bytes32Str = Annotated[StrictStr, AfterValidator(_bytes32)]


class OrderBody(BaseModel):
    """The signed EIP-712 `Order` (domain: Crossbook / 1 / sellChainId / the sell chain's vault)."""

    model_config = ConfigDict(extra="forbid")

    trader: AddressStr
    sellChainId: StrictInt
    sellToken: AddressStr
    sellAmount: StrictStr = Field(max_length=80)
    buyChainId: StrictInt
    buyToken: AddressStr
    minBuyAmount: StrictStr = Field(max_length=80)
    recipient: AddressStr
    nonce: StrictStr = Field(max_length=80, description="uint256 as a decimal string")
    deadline: StrictInt = Field(ge=0, lt=2**64, description="unix seconds")
    quoteId: Bytes32Str


class SwapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quoteId: Bytes32Str
    order: OrderBody
    signature: StrictStr = Field(max_length=200, description="65-byte r‖s‖v, 0x-hex")
