"""Named devnet accounts, derived from Anvil's well-known development mnemonic.

Index 0 deploys and mints, 1 is the operator (inventory, receipts, settlement
submissions), then the market makers, then the traders. These keys are public: devnet only.
"""

from __future__ import annotations

from functools import lru_cache

from eth_account import Account as EthAccount

from app.manifest import Account
from scripts.devnet.anvil import DEV_MNEMONIC

__all__ = ["dev_account", "named_accounts"]

EthAccount.enable_unaudited_hdwallet_features()


@lru_cache(maxsize=64)
def dev_account(index: int) -> tuple[str, str]:
    acct = EthAccount.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return acct.address, "0x" + bytes(acct.key).hex()


def named_accounts(makers: int, traders: int) -> dict[str, list[Account]]:
    def make(name: str, i: int) -> Account:
        addr, key = dev_account(i)
        return Account(name=name, address=addr, private_key=key)

    return {
        "deployer": [make("deployer", 0)],
        "operator": [make("operator", 1)],
        "makers": [make(f"maker{k + 1}", 2 + k) for k in range(makers)],
        "traders": [make(f"trader{k + 1}", 2 + makers + k) for k in range(traders)],
    }
