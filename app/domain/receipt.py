"""Receipts: the operator's signed promise about a confirmed order.

A receipt binds the operator to the order (its EIP-712 hash), the buy amount it
confirmed, and the position of the order's pull leg in the sell chain's order log with
that leg's leaf hash. Since the log is committed on chain by the settlement cursor, a
dropped or altered confirmed order is provable from the receipt and the chain alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.domain.eip712 import Domain, StructType, typed_digest

__all__ = ["RECEIPT_TYPE", "Receipt"]

RECEIPT_TYPE = StructType(
    "Receipt",
    (
        ("bytes32", "orderHash"),
        ("uint256", "buyAmount"),
        ("uint256", "logChainId"),
        ("uint256", "logIndex"),
        ("uint256", "leafHash"),
        ("uint256", "confirmedAt"),
    ),
)


@dataclass(frozen=True, slots=True)
class Receipt:
    order_hash: str
    buy_amount: int
    log_chain_id: int
    log_index: int
    leaf_hash: int
    confirmed_at: int  # unix milliseconds

    def values(self) -> dict[str, Any]:
        return {
            "orderHash": self.order_hash,
            "buyAmount": self.buy_amount,
            "logChainId": self.log_chain_id,
            "logIndex": self.log_index,
            "leafHash": self.leaf_hash,
            "confirmedAt": self.confirmed_at,
        }

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain, RECEIPT_TYPE, self.values())
