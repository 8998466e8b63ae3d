"""settlement.operator on a real Redis with a scripted chain: the report's numbers (backlog,
revert counts, backoff, inventory against pending payouts) and what clearing drops."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis

from settlement.batching import Keys, save_batch
from settlement.operator import chain_report, clear_backoff, inventory_needs
from settlement.submitter import ChainContext, backing_off, note_revert, vault_ahead

pytestmark = pytest.mark.integration

CHAIN = 7
VAULT = "0x" + "11" * 20
TOKENS = ["0x" + "a1" * 20, "0x" + "b2" * 20]


class ScriptedVault:
    """The chain as the report reads it: a head, the vault's cursor, token balances."""

    def __init__(self, cursor: int, balances: dict[str, int]) -> None:
        self.index, self.bal = cursor, balances

    def head(self) -> int:
        return 500

    def cursor(self, vault: str, block: int | str = "latest") -> tuple[int, int]:
        return self.index, 0

    def balance(self, token: str, holder: str, block: int | str = "latest") -> int:
        assert holder == VAULT
        return self.bal[token]


def _ctx(port: Any) -> ChainContext:
    return ChainContext(CHAIN, VAULT, "0x" + "22" * 20, "0x" + "33" * 32, 3, 1.0, {"USDC": 0, "WETH": 1}, TOKENS, port)


@pytest.fixture
def rr(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def _log(r: redis.Redis, legs: list[tuple[str, int, int]]) -> None:
    for i, (kind, token, amount) in enumerate(legs):
        r.hset(Keys.log_legs(CHAIN), str(i), json.dumps({"kind": kind, "token": token, "amount": str(amount), "account": "0x" + "44" * 20, "orderRef": "1", "orderId": f"0x{i:064x}"}))
    r.set(Keys.log_next(CHAIN), str(len(legs)))


def test_report_counts_what_a_stuck_range_needs_and_clearing_drops_the_pause(rr: redis.Redis) -> None:
    # Legs 0-1 settled; 2-5 pending: two USDC payouts, a pull of USDC (not counted: it may
    # fail), a maker_out of WETH.
    _log(rr, [("pull", 0, 5), ("payout", 1, 7), ("payout", 0, 300), ("pull", 0, 1000), ("payout", 0, 200), ("maker_out", 1, 9)])
    rr.set(f"stl:{CHAIN}:applied", "2")
    assert inventory_needs(rr, CHAIN, 2, 6) == {0: 500, 1: 9}
    save_batch(rr, {"chainId": CHAIN, "number": 4, "start": 2, "count": 4, "state": "reverted", "reason": "estimate reverted: ERC20: transfer amount exceeds balance", "history": []})
    rr.set(Keys.seq(CHAIN), "4")
    for _ in range(3):
        note_revert(rr, CHAIN, 2)
    assert backing_off(rr, CHAIN)

    port = ScriptedVault(cursor=2, balances={TOKENS[0]: 120, TOKENS[1]: 50})
    doc = chain_report(rr, CHAIN, _ctx(port))
    assert doc["backlog"] == 4 and doc["settled"] == 2 and doc["inFlight"] is None
    assert doc["reverts"] == {"2": 3}
    assert doc["backoff"]["start"] == 2 and 0 < doc["backoff"]["secondsLeft"] <= 5
    assert doc["batches"][0]["reason"].startswith("estimate reverted")
    inv = {x["symbol"]: x for x in doc["onChain"]["inventory"]}
    assert inv["USDC"] == {"token": 0, "symbol": "USDC", "balance": "120", "needed": "500", "shortfall": "380"}
    assert inv["WETH"]["shortfall"] == "0"
    assert doc["onChain"] == {**doc["onChain"], "block": 500, "cursor": 2, "pending": 4}
    assert "vault short of 380 USDC" in doc["stuck"] and "reverted 3 times" in doc["stuck"]
    json.dumps(doc)  # JSON-ready, as --json prints it

    # Topped up: no shortfall, but still paused until cleared.
    port.bal[TOKENS[0]] = 10_000
    doc = chain_report(rr, CHAIN, _ctx(port))
    assert all(x["shortfall"] == "0" for x in doc["onChain"]["inventory"]) and doc["stuck"] is not None
    cleared = clear_backoff(rr, CHAIN)
    assert cleared.had_backoff and cleared.reverts == {2: 3}
    assert not backing_off(rr, CHAIN) and not rr.exists(f"stl:{CHAIN}:reverts:2")
    doc = chain_report(rr, CHAIN, _ctx(port))
    assert doc["stuck"] is None and doc["backoff"] is None and doc["reverts"] == {}
    # The counts start over: the next revert is a free try again, not a longer pause.
    assert note_revert(rr, CHAIN, 2) == 1 and not backing_off(rr, CHAIN)
    # Clearing a chain with nothing to clear is harmless.
    assert clear_backoff(rr, CHAIN + 1).to_json() == {"chainId": CHAIN + 1, "hadBackoff": False, "reverts": {}}


def test_report_without_chain_access_is_redis_only(rr: redis.Redis) -> None:
    _log(rr, [("pull", 0, 5)])
    rr.set(Keys.lock(CHAIN), "3")
    save_batch(rr, {"chainId": CHAIN, "number": 3, "start": 0, "count": 1, "state": "proved", "history": []})
    rr.set(Keys.seq(CHAIN), "3")
    doc = chain_report(rr, CHAIN)
    assert doc["inFlight"] == "3" and doc["inFlightState"] == "proved" and "onChain" not in doc
    assert doc["stuck"] is None and doc["backlog"] == 1


def test_a_vault_past_the_applied_batches_pauses_the_chain_with_one_alert(rr: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    # Legs 0-3 in the log, batches applied up to 1, the vault's cursor at 3: legs 1-2 were
    # settled by transactions the pipeline never applied. A cut from the cursor would skip
    # them (their orders would never settle), so nothing is cut and the report says why.
    _log(rr, [("pull", 0, 5), ("payout", 1, 7), ("payout", 0, 300), ("pull", 0, 9)])
    rr.set(Keys.applied(CHAIN), "1")
    assert vault_ahead(rr, CHAIN, 1) is None  # where it should be
    with caplog.at_level(logging.ERROR, logger="crossbook.submitter"):
        why = vault_ahead(rr, CHAIN, 3)
        assert why is not None and "[1, 3)" in why
        assert vault_ahead(rr, CHAIN, 3) == why  # still paused; the ALERT once a minute
    assert [x.getMessage() for x in caplog.records] == [f"ALERT chain {CHAIN}: {why}"]

    port = ScriptedVault(cursor=3, balances={TOKENS[0]: 10**9, TOKENS[1]: 10**9})
    doc = chain_report(rr, CHAIN, _ctx(port))
    assert doc["stuck"] is not None and "legs [1, 3) were settled by transactions this pipeline did not apply" in doc["stuck"]
    # A batch in flight: its receipt may be mined and not yet applied, which is no fault.
    rr.set(Keys.lock(CHAIN), "5")
    save_batch(rr, {"chainId": CHAIN, "number": 5, "start": 1, "count": 2, "state": "signed", "history": []})
    assert chain_report(rr, CHAIN, _ctx(port))["stuck"] is None
