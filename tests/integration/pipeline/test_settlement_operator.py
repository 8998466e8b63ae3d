"""`crossbook settlement status|clear-backoff` on a chain whose payout batch keeps reverting
because its vault lacks the inventory (docs/pipeline.md §11), with the real pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from app.client import CrossbookClient
from tests.integration.pipeline.conftest import (
    ROOT,
    assert_balances_moved,
    balances,
    finalized_path_ok,
    impersonated_transfer,
    ledger_orders,
    leg_state,
    manifest_of,
    wait_for,
    wait_reconciled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A, B = 31002, 31003
SINK = "0x00000000000000000000000000000000000dEaD1"


def _cli(net: Any, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CROSSBOOK_MANIFEST": str(net.manifest_path), "REDIS_URL": redis_url}
    return subprocess.run([sys.executable, "-m", "app.cli", "settlement", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _status(net: Any, redis_url: str, chain: int) -> dict[str, Any]:
    p = _cli(net, redis_url, "status", "--chain", str(chain), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [c["chainId"] for c in doc["chains"]] == [chain]
    return dict(doc["chains"][0])


def test_stuck_chain_status_then_top_up_and_clear_backoff(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any, redis_url: str) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    cb = m.chain(B)
    vault, usdc = cb.contracts["settlement"], cb.tokens["USDC"].address
    t = m.traders[2]
    holders = [t.address, SINK, vault]
    # The baseline of B's vault is taken by the first tick while its cursor is 0: drain
    # only after that, so the drain shows up as a reconciliation difference.
    wait_for(lambda: r.exists(f"stl:{B}:baseline"), 30, "B's reconciliation baseline")
    before = balances(vault_devnet, holders)
    rec = client.swap(client.quote(A, "WETH", B, "USDC", taker=t.address, sell_amount=10**17), t.private_key, deadline=10**10)
    stock = before[(B, usdc.lower(), vault.lower())]
    assert int(rec["buyAmount"]) < stock
    impersonated_transfer(cb.rpc_url, usdc, vault, SINK, stock)  # the vault has no USDC left

    # The pull settles on A; the payout on B reverts at estimation, again and again, until
    # the chain backs off.
    wait_for(lambda: r.exists(f"stl:{B}:backoff"), 180, "B backing off after repeated reverts", interval=0.5)
    # A pause may lapse (and the range revert again) between two reads: read until the
    # command itself sees one.
    st = wait_for(lambda: (s := _status(vault_devnet, redis_url, B))["backoff"] is not None and s, 120, "status showing the backoff", interval=0.2)
    assert st["backoff"]["secondsLeft"] >= 0
    start = st["backoff"]["start"]
    assert st["reverts"][str(start)] >= 3
    assert any(b["state"] == "reverted" and "estimate reverted" in b.get("reason", "") for b in st["batches"])
    inv = {x["symbol"]: x for x in st["onChain"]["inventory"]}
    assert inv["USDC"]["balance"] == "0" and int(inv["USDC"]["needed"]) >= int(rec["buyAmount"])
    assert inv["USDC"]["shortfall"] == inv["USDC"]["needed"]
    assert st["stuck"] and "top it up" in st["stuck"] and "clear-backoff --chain 31003" in st["stuck"]
    assert st["backlog"] >= 1 and st["onChain"]["cursor"] == start
    wait_for(lambda: leg_state(r, rec["orderId"], "pull") in ("settled", "final"), 60, "the pull settled on A")
    assert leg_state(r, rec["orderId"], "payout") not in ("settled", "final")
    # The human view says the same.
    text = _cli(vault_devnet, redis_url, "status", "--chain", str(B))
    assert text.returncode == 0 and "STUCK" in text.stdout and "SHORT" in text.stdout, text.stdout + text.stderr
    # A healthy chain is not reported stuck.
    assert _status(vault_devnet, redis_url, A)["stuck"] is None

    # Clearing before the top-up is refused: it would only burn another proof.
    p = _cli(vault_devnet, redis_url, "clear-backoff", "--chain", str(B))
    assert p.returncode == 2 and "still short" in p.stderr and "USDC" in p.stderr
    assert r.exists(f"stl:{B}:reverts:{start}")

    impersonated_transfer(cb.rpc_url, usdc, SINK, vault, stock)  # the operator tops up
    p = _cli(vault_devnet, redis_url, "clear-backoff", "--chain", str(B))
    assert p.returncode == 0, p.stderr
    cleared = json.loads(p.stdout)
    assert cleared["chainId"] == B and cleared["reverts"][str(start)] >= 3
    wait_for(lambda: client.order(rec["orderId"])["state"] == "finalized", 120, "finalized after the top-up", interval=0.5)

    assert finalized_path_ok(json.loads(r.get(f"order:{rec['orderId']}")))
    after = balances(vault_devnet, holders)
    assert_balances_moved({k: v for k, v in before.items() if k[2] != vault.lower()}, after, list(ledger_orders(r).values()))
    assert after[(B, usdc.lower(), vault.lower())] == stock - int(rec["buyAmount"])
    wait_reconciled(r, [A, B])
    st = _status(vault_devnet, redis_url, B)
    assert st["stuck"] is None and st["backoff"] is None and st["reverts"] == {} and st["backlog"] == 0
    assert st["reconcile"]["status"] == "ok"
    assert "backing off after reverts" in celery_procs.log("settle") or "ALERT chain 31003" in celery_procs.log("settle")
