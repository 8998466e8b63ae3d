"""Shared fixtures: real processes on free ports, always cleaned up.

- `anvil`: one bare Anvil chain (automine) for the whole session.
- `w3`: a Web3 client on it; every test runs inside an `evm_snapshot`/`evm_revert`
  pair, so each test starts from the same chain state.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3

from scripts.devnet.anvil import AnvilNode
from scripts.devnet.ports import free_port


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    node = AnvilNode(port=free_port(), chain_id=31337)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def w3(anvil: AnvilNode) -> Iterator[Web3]:
    client = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    snap = anvil.rpc("evm_snapshot")
    try:
        yield client
    finally:
        anvil.rpc("evm_revert", [snap])
