"""A one-chain settlement harness for the vault tests and `bench/settlement_gas.py`.

`vault_chain()` starts its own Anvil (free port, automine), deploys the devnet contracts
of one chain with `scripts.devnet.deploy.deploy_chain` and the settlement with
`deploy_settlement`, and hands back a `VaultChain`: signed orders, batches from the
stored cursor, real Groth16 proofs (keys from the shared cache), settle/call helpers.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from app.manifest import Account, ChainInfo
from scripts.build_contracts import load_artifact
from scripts.devnet.accounts import named_accounts
from scripts.devnet.anvil import AnvilNode
from scripts.devnet.config import load_config
from scripts.devnet.deploy import deploy_chain
from scripts.devnet.deploy_settlement import deploy_settlement
from scripts.devnet.ports import free_port
from settlement.vault import (
    Order,
    SettleCall,
    SignedOrder,
    VaultEvent,
    decode_logs,
    vault_domain,
)
from settlement.zk import groth16
from settlement.zk.batch import Batch, batch_r1cs, build_batch_witness
from settlement.zk.legs import Leg

__all__ = ["VaultChain", "error_name", "prove", "vault_chain"]

GAS = 8_000_000
RECLAIM_TIMEOUT = 600  # seconds before a pull may be reclaimed, in the vault tests
_keys: dict[int, groth16.ProvingKey] = {}


def prove(batch: Batch, capacity: int) -> groth16.Proof:
    """A real proof of `batch` in the `capacity` circuit (keys cached on disk and here)."""
    if capacity not in _keys:
        _keys[capacity] = groth16.load_or_setup(batch_r1cs(capacity))[0]
    bw = build_batch_witness(batch, (capacity,))
    return groth16.prove(_keys[capacity], bw.r1cs, bw.witness)


_ERRORS = {
    "0x" + keccak(text=sig)[:4].hex(): sig.split("(")[0]
    for sig in (
        "NotOperator()",
        "IsPaused()",
        "Reentrancy()",
        "WrongChain(uint256)",
        "CursorMismatch(uint256,uint256)",
        "BadCount(uint256,uint256)",
        "UnknownVerifier(uint256)",
        "NonCanonicalLeg(uint256)",
        "UnknownToken(uint256)",
        "InvalidProof()",
        "BadExtra(uint256,uint256)",
        "BadPayoutLink(uint256)",
        "TransferFailed(uint256)",
        "UnknownPull(uint256)",
        "NotOpenPull(uint256)",
        "ReclaimTooEarly(uint256)",
        "PullClosed(uint256)",
        "BadConfig()",
    )
}


def error_name(err: ContractLogicError) -> str:
    """The vault's custom error name in a revert (or the raw data)."""
    data = err.data if isinstance(err.data, str) else ""
    return _ERRORS.get(data[:10], data or str(err))


@dataclass
class VaultChain:
    node: AnvilNode
    w3: Web3
    info: ChainInfo
    accounts: dict[str, list[Account]]
    vault: Contract
    tokens: dict[str, Contract]
    index: dict[str, int]  # symbol -> token index in the vault
    _nonces: dict[str, int] = field(default_factory=dict)

    @property
    def chain_id(self) -> int:
        return self.info.chain_id

    @property
    def operator(self) -> str:
        return self.accounts["operator"][0].address

    @property
    def traders(self) -> list[Account]:
        return self.accounts["traders"]

    @property
    def makers(self) -> list[Account]:
        return self.accounts["makers"]

    def order(
        self,
        trader: Account,
        sell: str,
        amount: int,
        *,
        buy_chain: int | None = None,
        buy_token: str | None = None,
        min_buy: int = 0,
        recipient: str | None = None,
        deadline: int | None = None,
        nonce: int | None = None,
    ) -> tuple[SignedOrder, bytes]:
        """A signed order selling `amount` of `sell` here; returns it and its hash."""
        if nonce is None:
            nonce = self._nonces.get(trader.address, 0)
            self._nonces[trader.address] = nonce + 1
        o = Order(
            trader=trader.address,
            sell_chain_id=self.chain_id,
            sell_token=self.tokens[sell].address,
            sell_amount=amount,
            buy_chain_id=buy_chain or self.chain_id,
            buy_token=buy_token or self.tokens["WETH"].address,
            min_buy_amount=min_buy,
            recipient=recipient or trader.address,
            nonce=nonce,
            deadline=deadline if deadline is not None else self.now() + 3600,
            quote_id=secrets.token_bytes(32),
        )
        domain = vault_domain(self.chain_id, self.vault.address)
        return o.sign(domain, trader.private_key), o.digest(domain)

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def cursor(self) -> tuple[int, int]:
        index, head = self.vault.functions.cursor().call()
        return int(index), int(head)

    def batch(self, legs: Sequence[Leg]) -> Batch:
        index, head = self.cursor()
        return Batch(self.chain_id, index, head, tuple(legs))

    def settle(self, call: SettleCall, sender: str | None = None) -> TxReceipt:
        fn = self.vault.functions.settle(*call.args())
        tx = fn.transact({"from": sender or self.operator, "gas": GAS})
        rc = self.w3.eth.wait_for_transaction_receipt(tx, timeout=30, poll_latency=0.005)
        assert rc["status"] == 1, "settle reverted"
        return rc

    def settle_error(self, call: SettleCall, sender: str | None = None) -> str:
        """The error `settle` reverts with (fails if it would succeed)."""
        try:
            self.vault.functions.settle(*call.args()).call(
                {"from": sender or self.operator, "gas": GAS}
            )
        except ContractLogicError as err:
            return error_name(err)
        raise AssertionError("settle did not revert")

    def transact(self, fn: Any, sender: str) -> TxReceipt:
        tx = fn.transact({"from": sender, "gas": GAS})
        rc = self.w3.eth.wait_for_transaction_receipt(tx, timeout=30, poll_latency=0.005)
        assert rc["status"] == 1, f"{fn.fn_name} reverted"
        return rc

    def events(self, receipt: TxReceipt) -> list[VaultEvent]:
        return decode_logs(receipt["logs"], self.vault.address)

    def balance(self, symbol: str, who: str) -> int:
        return int(self.tokens[symbol].functions.balanceOf(who).call())

    def snapshot(self) -> str:
        return str(self.node.rpc("evm_snapshot"))

    def revert(self, snap: str) -> None:
        assert self.node.rpc("evm_revert", [snap])


@contextmanager
def vault_chain(
    *, capacities: Sequence[int] = (16, 32), reclaim_timeout: int = 600, chain: int = 0
) -> Iterator[VaultChain]:
    cfg = load_config(chains=chain + 1, base_port=0)
    spec = cfg.chains[chain]
    node = AnvilNode(port=free_port(), chain_id=spec.chain_id, accounts=cfg.accounts)
    node.start()
    try:
        accounts = named_accounts(cfg.makers, cfg.traders)
        dep = deploy_chain(cfg, spec, node.rpc_url, accounts)
        info = ChainInfo(
            name=spec.name,
            chain_id=spec.chain_id,
            rpc_url=node.rpc_url,
            ws_url=node.ws_url,
            block_time=spec.block_time,
            finality_depth=spec.finality_depth,
            tokens=dep.tokens,
            pools=dep.pools,
            inventory=accounts["operator"][0].address,
        )
        out = deploy_settlement(
            info,
            node.rpc_url,
            accounts,
            capacities=capacities,
            reclaim_timeout=reclaim_timeout,
            progress=lambda m: print(f"[settlement] {m}") if os.environ.get("VERBOSE") else None,
        )
        w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 60}))
        vault = w3.eth.contract(
            address=out["contracts"]["settlement"], abi=load_artifact("Settlement")["abi"]
        )
        token_abi = load_artifact("TestToken")["abi"]
        tokens = {
            s: w3.eth.contract(address=Web3.to_checksum_address(t.address), abi=token_abi)
            for s, t in info.tokens.items()
        }
        index = {s: i for i, s in enumerate(out["tokenOrder"])}
        info = dataclasses.replace(info, inventory=out["inventory"], contracts=out["contracts"])
        yield VaultChain(node, w3, info, accounts, vault, tokens, index)
    finally:
        node.stop()
