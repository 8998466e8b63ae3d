"""Request schemas at the HTTP edge: strict types, unknown fields refused, addresses
checksummed. Amounts stay strings here; `parse_amount` gives them their error codes."""

from __future__ import annotations

import re
from typing import Annotated

from eth_utils import is_checksum_address, to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

__all__ = ["AddressStr", "QuoteBody", "QuoteQuery"]

_HEX40 = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _address(v: str) -> str:
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

    sellChainId: int = Field(description="chain id the trader sells on")  # type: ignore[assignment]
    buyChainId: int = Field(description="chain id the trader receives on")  # type: ignore[assignment]
    slippageBps: int = Field(default=50, ge=0, le=5000)  # type: ignore[assignment]
    maxSources: int | None = Field(default=None, ge=1, le=1000)  # type: ignore[assignment]
