"""The vault tests' chain: one Anvil with the vault, tokens and verifiers per test module
(harness.vault_chain), and every test on a snapshot of it that is reverted afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.settlement.harness import RECLAIM_TIMEOUT, VaultChain, vault_chain


@pytest.fixture(scope="module")
def chain() -> Iterator[VaultChain]:
    with vault_chain(capacities=(16, 32), reclaim_timeout=RECLAIM_TIMEOUT) as c:
        yield c


@pytest.fixture(autouse=True)
def _isolated(chain: VaultChain) -> Iterator[None]:
    snap = chain.snapshot()
    try:
        yield
    finally:
        chain.revert(snap)
