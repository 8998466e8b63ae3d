"""Pool math: exact integer twins of the on-chain pools.

Every function in `constant_product` and `stableswap` reproduces, to the wei, what the
Solidity contract of the same name computes in its views and in `swap`: the same
operations in the same order, the same floor divisions, and the same failures. Where the
contract would revert (an empty pool, an output that would drain a reserve, an
intermediate above 2**256 - 1), the twin
raises a subclass of `AmmError`, so a caller can treat any `AmmError` as "this source has
no liquidity for this amount".

Exception tree::

    ValueError
     └── AmmError                 the contract would revert for these inputs
          ├── InsufficientLiquidity   zero reserve/balance, or amount_out >= reserve
          └── MathOverflow            a checked uint256 operation would overflow/underflow

Bad arguments that the contract cannot even receive (negative amounts, a fee above the
pool's cap) raise a plain `ValueError`: they are caller bugs, not market conditions.
"""

from __future__ import annotations

__all__ = [
    "BPS",
    "MAX_FEE_BPS",
    "U256_MAX",
    "AmmError",
    "InsufficientLiquidity",
    "MathOverflow",
]

U256_MAX = 2**256 - 1
BPS = 10_000
MAX_FEE_BPS = 1_000  # both pool contracts reject a larger fee at construction


class AmmError(ValueError):
    """The pool contract would revert for these inputs."""


class InsufficientLiquidity(AmmError):
    """A reserve is empty, or the requested output is not available in the pool."""


class MathOverflow(AmmError):
    """An intermediate leaves the uint256 range (Solidity's checked arithmetic reverts)."""
