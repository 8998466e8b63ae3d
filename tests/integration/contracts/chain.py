"""Small helpers for contract tests on the bare Anvil chain: deploy an artifact, send a
transaction from an unlocked dev account and insist it succeeded, read an eth_call's
custom-error revert, and snapshot/revert around a hypothesis example."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import EventData, TxReceipt

from app.domain.amm import AmmError
from scripts.build_contracts import load_artifact
from scripts.devnet.anvil import AnvilNode

__all__ = [
    "MAX_UINT",
    "accounts",
    "deploy",
    "error_selector",
    "events",
    "onchain",
    "revert_data",
    "send",
    "snapshot",
    "twin",
]

MAX_UINT = 2**256 - 1
GAS = 3_000_000  # fixed, so no eth_estimateGas round trip per transaction


def accounts(w3: Web3) -> list[str]:
    """The chain's unlocked dev accounts (20 from the standard test mnemonic)."""
    return [str(a) for a in w3.eth.accounts]


def deploy(w3: Web3, name: str, *args: Any, sender: str | None = None) -> Contract:
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx = factory.constructor(*args).transact({"from": sender or accounts(w3)[0], "gas": 8_000_000})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30, poll_latency=0.005)
    assert receipt["status"] == 1, f"deploying {name} reverted"
    address = receipt["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=art["abi"])


def send(fn: ContractFunction, sender: str, gas: int = GAS) -> TxReceipt:
    """Send and mine (automine) a transaction; fails the test if it reverted."""
    tx = fn.transact({"from": sender, "gas": gas})
    receipt = fn.w3.eth.wait_for_transaction_receipt(tx, timeout=30, poll_latency=0.005)
    assert receipt["status"] == 1, f"{fn.fn_name} reverted"
    return receipt


def events(contract: Contract, name: str, receipt: TxReceipt) -> list[EventData]:
    """The `name` events `contract` itself emitted in `receipt` (token logs skipped)."""
    decoded = contract.events[name]().process_receipt(receipt, errors=DISCARD)
    return [e for e in decoded if e["address"] == contract.address]


def error_selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def revert_data(fn: ContractFunction, sender: str) -> str:
    """The revert data of `fn` as an eth_call (fails the test if it does not revert)."""
    try:
        fn.call({"from": sender, "gas": GAS})
    except ContractLogicError as err:
        data = err.data
        return data if isinstance(data, str) else "0x"
    raise AssertionError(f"{fn.fn_name} did not revert")


@contextmanager
def snapshot(anvil: AnvilNode) -> Iterator[None]:
    snap = anvil.rpc("evm_snapshot")
    try:
        yield
    finally:
        anvil.rpc("evm_revert", [snap])


def twin(fn: Callable[[], int]) -> int | None:
    """A Python twin's answer, or None where it raises (the contract should revert)."""
    try:
        return fn()
    except AmmError:
        return None


def onchain(fn: Callable[[], int]) -> int | None:
    """A contract view's answer, or None where it reverts."""
    try:
        return fn()
    except ContractLogicError:
        return None
