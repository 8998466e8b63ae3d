"""The fast settlement tier end to end: real API, real Celery workers, real Anvil chains.

Chain A's fast tier here: payouts up to 100 USD, at most 130 USD outstanding, a loss
budget of 20 USD. Four cross-chain orders A → B, confirmed back to back, decided in order
by A's tick: small (≈ 90 USD, fast), revoked (≈ 30 USD, fast: 120 ≤ 130; its trader then
revokes the allowance), over-exposure (≈ 90 USD, standard: 210 > 130), large (≈ 300 USD,
standard). Then the loss budget: one revoked fast order's loss (≈ 30 USD) turns A's tier
off, the next order settles standard, the operator's command turns it on again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from web3 import Web3

from app.client import CrossbookClient
from scripts.devnet.devnet import Devnet
from settlement.tier import Switch, exposure_key, losses_key, switch_key
from tests.integration.pipeline.conftest import (
    assert_balances_moved,
    balances,
    manifest_of,
    pool_trade_deltas,
    wait_for,
    wait_reconciled,
)
from tests.integration.pipeline.test_settlement_operator import _cli
from tests.integration.pipeline.test_settlement_pipeline import _approve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A, B = 31002, 31003  # 1 s / 3 blocks and 0.25 s / 20 blocks
CAP_USD, EXPOSURE_USD, LOSS_BUDGET_USD = 100.0, 130.0, 20.0


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """This module's own devnet, with chain A's fast-tier limits small enough to fill."""
    from scripts.devnet.config import load_config

    cfg = load_config(chains=3, base_port=0)
    chains = tuple(
        dataclasses.replace(c, fast_tier_usd=CAP_USD, fast_exposure_usd=EXPOSURE_USD, fast_loss_budget_usd=LOSS_BUDGET_USD)
        if c.chain_id == A else c
        for c in cfg.chains
    )
    net = Devnet(dataclasses.replace(cfg, chains=chains), tmp_path_factory.mktemp("fast-tier-devnet"))
    net.start()
    try:
        yield net
    finally:
        net.stop()


def _batch(r: Any, chain: int, n: int) -> dict[str, Any]:
    return json.loads(r.get(f"stl:{chain}:batch:{n}"))


def test_small_orders_pay_out_before_their_pulls_large_and_overflow_wait(
    vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any
) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t_small, t_rev, t_over, t_large = m.traders[0], m.traders[1], m.traders[2], m.traders[3]
    holders = [t.address for t in (t_small, t_rev, t_over, t_large)] + [m.chain(c).contracts["settlement"] for c in (A, B)]
    before = balances(vault_devnet, holders, [A, B])
    # The settle worker ticks both chains (its first tick records the vault's baseline).
    wait_for(lambda: all(r.exists(f"stl:{c}:baseline") for c in (A, B)), 60, "the settle worker ticking")

    q_small = client.quote(A, "WETH", B, "USDC", taker=t_small.address, sell_amount=3 * 10**16)
    q_large = client.quote(A, "WETH", B, "USDC", taker=t_large.address, sell_amount=10**17)
    assert q_small["settlementTier"] == "fast" and q_large["settlementTier"] == "standard"
    by_tier = q_small["settlement"]["etaSecondsByTier"]
    assert by_tier["fast"] < by_tier["standard"] and q_small["settlement"]["etaSeconds"] == by_tier["fast"]
    assert q_large["settlement"]["etaSeconds"] == q_large["settlement"]["etaSecondsByTier"]["standard"]

    small = client.swap(q_small, t_small.private_key)
    revoked = client.swap(client.quote(A, "WETH", B, "USDC", taker=t_rev.address, sell_amount=10**16), t_rev.private_key)
    over = client.swap(client.quote(A, "WETH", B, "USDC", taker=t_over.address, sell_amount=3 * 10**16), t_over.private_key)
    large = client.swap(q_large, t_large.private_key)
    _approve(vault_devnet, A, "WETH", t_rev.address, 0)  # before A's first batch is cut (4 s window)
    ids = {"small": small["orderId"], "revoked": revoked["orderId"], "over": over["orderId"], "large": large["orderId"]}

    def tiers() -> dict[str, Any] | None:
        got = {k: client.order(v)["settlementTier"] for k, v in ids.items()}
        return got if None not in got.values() else None

    assert wait_for(tiers, 30, "the tier decisions") == {"small": "fast", "revoked": "fast", "over": "standard", "large": "standard"}
    docs = {k: json.loads(r.get(f"order:{v}")) for k, v in ids.items()}
    assert "exceed" in docs["over"]["tierReason"] and "above" in docs["large"]["tierReason"]
    # Exposure within the cap: both fast payouts counted, the overflow not.
    assert int(r.get(exposure_key(A)) or 0) == int(docs["small"]["tierValueUsd6"]) + int(docs["revoked"]["tierValueUsd6"]) <= EXPOSURE_USD * 10**6

    def done() -> bool:
        states = {k: client.order(v)["state"] for k, v in ids.items()}
        assert not set(states.values()) & {"failed", "refunded"}, states
        return set(states.values()) == {"finalized"}

    try:
        wait_for(done, 300, "every order finalized", interval=1.0)
    except AssertionError:
        print(celery_procs.log("settle")[-8000:])
        raise
    st = {k: client.order(v) for k, v in ids.items()}
    docs = {k: json.loads(r.get(f"order:{v}")) for k, v in ids.items()}

    for c in (A, B):
        for n in range(1, int(r.get(f"stl:{c}:batch:seq") or 0) + 1):
            b = json.loads(r.get(f"stl:{c}:batch:{n}") or "{}")
            print("batch", c, n, b.get("start"), b.get("count"), b.get("proofSeconds"), [(h["state"], round(h["at"] % 1000, 2)) for h in b.get("history", [])])
    for k, d in docs.items():
        print(k, d["confirmedAt"] / 1000 % 1000, [(x.get("batch"), x.get("logIndex")) for x in d["legs"]], [(h["state"], h["at"] / 1000 % 1000) for h in d["history"]])
    # Fast: the payout's batch was mined before the pull's (the pull waited for A's window and proof).
    for k in ("small", "revoked"):
        pull, payout = docs[k]["legs"]
        assert _batch(r, B, payout["batch"])["minedAt"] <= _batch(r, A, pull["batch"])["minedAt"], k
        assert [h["state"] for h in st[k]["history"]] == ["confirmed", "settled", "finalized"], k
    # Standard: the payout entered B's log only after the pull was applied, exactly once.
    for k in ("over", "large"):
        pull, payout = docs[k]["legs"]
        assert [h["state"] for h in st[k]["history"]] == ["confirmed", "pull_settled", "settled", "finalized"], k
        entry = json.loads(r.hget(f"log:{B}:legs", str(payout["logIndex"])))
        assert entry["at"] / 1000 >= _batch(r, A, pull["batch"])["minedAt"] - 1, k
    payouts = [json.loads(v) for v in r.hvals(f"log:{B}:legs")]
    assert sorted(e["orderId"] for e in payouts if e["kind"] == "payout") == sorted(ids.values())

    # The revoked order: nothing taken, the recipient paid, the payout booked as the operator's loss.
    rev = docs["revoked"]
    assert rev["legs"][0]["state"] == "failed_final" and "TRANSFER_FAILED" in rev["legs"][0]["reason"]
    assert rev["legs"][1]["state"] == "final" and "operator's loss" in st["revoked"]["reason"]
    assert rev["operatorLoss"]["amount"] == rev["buyAmount"]
    usdc = list(m.assets).index("USDC")
    assert int(r.hget(losses_key(B), str(usdc)) or 0) == int(rev["buyAmount"])
    assert [json.loads(x)["orderId"] for x in r.lrange("stl:losses", 0, -1)] == [ids["revoked"]]
    assert int(r.get(exposure_key(A)) or 0) == 0

    # Balances moved exactly: three pulls and four payouts; the vaults to the wei.
    after = balances(vault_devnet, holders, [A, B])
    vaults = {m.chain(c).contracts["settlement"].lower() for c in (A, B)}
    assert_balances_moved({k: v for k, v in before.items() if k[2] not in vaults}, after, list(docs.values()))
    moved = [d for d in docs.values() if "operatorLoss" not in d]
    weth_a, usdc_b = m.chain(A).tokens["WETH"].address.lower(), m.chain(B).tokens["USDC"].address.lower()
    rev_addr = t_rev.address.lower()
    assert after[(A, weth_a, rev_addr)] == before[(A, weth_a, rev_addr)]
    assert after[(B, usdc_b, rev_addr)] == before[(B, usdc_b, rev_addr)] + int(rev["buyAmount"])
    va, vb = m.chain(A).contracts["settlement"].lower(), m.chain(B).contracts["settlement"].lower()
    # The vaults: pulls in, payouts out, and the netted pool trades their batches ran
    # (read once every leg, pool legs included, is applied).
    wait_reconciled(r, [A, B])
    after = balances(vault_devnet, [va, vb], [A, B])
    pools_a, pools_b = pool_trade_deltas(r, m, A), pool_trade_deltas(r, m, B)
    pulled = sum(int(d["order"]["sellAmount"]) for d in moved)
    assert after[(A, weth_a, va)] - before[(A, weth_a, va)] == pulled + pools_a.get(weth_a, 0)
    paid = sum(int(d["buyAmount"]) for d in docs.values())
    assert after[(B, usdc_b, vb)] - before[(B, usdc_b, vb)] == -paid + pools_b.get(usdc_b, 0)

    # The fast order's pull is closed on A's vault: its trader cannot reclaim a paid order.
    def confirmed() -> bool:
        tx = json.loads(r.get(f"stl:{A}:confirmtx") or "{}")
        return r.scard(f"stl:{A}:confirms") == 0 and (tx == {} or tx.get("block") is not None)

    wait_for(confirmed, 90, "pull refs confirmed on chain A")
    w3 = Web3(Web3.HTTPProvider(m.chain(A).rpc_url))
    ref = int(docs["small"]["legs"][0]["pullRef"])
    word = w3.eth.call({"to": m.chain(A).contracts["settlement"], "data": Web3.keccak(text="pullRecords(uint256)")[:4] + (ref >> 8).to_bytes(32, "big")})
    assert int.from_bytes(word, "big") >> (ref & 0xFF) & 1 == 1
    print("trust windows (s):", {k: d["trustWindowMs"] / 1000 for k, d in docs.items()})


def _fast_tier_public(api: Any, chain: int) -> dict[str, Any]:
    chains = httpx.get(f"{api.url}/v1/chains", timeout=30).json()["chains"]
    return dict(next(c["fastTier"] for c in chains if c["chainId"] == chain))


def test_losses_over_the_budget_turn_the_tier_off_until_the_operator_turns_it_on(
    vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any, redis_url: str
) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t_rev, t = m.traders[4], m.traders[5]
    wait_for(lambda: all(r.exists(f"stl:{c}:baseline") for c in (A, B)), 60, "the settle worker ticking")
    assert _fast_tier_public(pipeline_api, A) == {"on": True, "maxValueUsd": "100", "traderCapUsd": "500"}

    def small(trader: Any) -> dict[str, Any]:
        return client.quote(A, "WETH", B, "USDC", taker=trader.address, sell_amount=10**16)  # ≈ 30 USD

    def quoted(tier: str) -> dict[str, Any] | None:
        x = small(t)
        return x if x["settlementTier"] == tier else None

    def switched_off() -> Switch | None:
        sw = Switch.from_hash(r.hgetall(switch_key(A)))
        return None if sw.on else sw

    q = small(t_rev)
    assert q["settlementTier"] == "fast"
    revoked = client.swap(q, t_rev.private_key)["orderId"]
    _approve(vault_devnet, A, "WETH", t_rev.address, 0)  # before A's first batch is cut
    assert wait_for(lambda: client.order(revoked)["settlementTier"], 30, "the revoked order's tier") == "fast"
    # Its pull fails on A: ≈ 30 USD lost > the 20 USD budget, A's tier turns itself off.
    sw = wait_for(switched_off, 120, "A's fast tier turned off", interval=0.5)
    assert sw.by == "loss budget" and "exceed the loss budget of 20000000 usd6" in sw.reason
    loss = json.loads(r.get(f"order:{revoked}"))["operatorLoss"]
    assert loss["sellChainId"] == A and f"fast-tier losses of {loss['valueUsd6']} usd6" in sw.reason
    wait_for(lambda: not _fast_tier_public(pipeline_api, A)["on"], 30, "GET /v1/chains showing A's tier off")
    # The quote does not promise fast (the API's copy follows within a second); the order settles standard.
    q = wait_for(lambda: quoted("standard"), 30, "a standard quote")
    standard = client.swap(q, t.private_key)["orderId"]
    assert wait_for(lambda: client.order(standard)["settlementTier"], 30, "the next order's tier") == "standard"
    doc = json.loads(r.get(f"order:{standard}"))
    assert "fast tier is off: fast-tier losses" in doc["tierReason"]
    # Standard: its payout enters B's log only once its pull has settled (that path is
    # followed to the end in the test above).
    assert doc["legs"][1]["logIndex"] is None or doc["legs"][0]["state"] != "pending"
    alerts = [x for x in celery_procs.log("settle").splitlines() if "ALERT" in x and "fast tier turned off" in x]
    assert len(alerts) == 1, alerts
    status = _cli(vault_devnet, redis_url, "status", "--chain", str(A))
    assert status.returncode == 0 and "fast tier: OFF (loss budget:" in status.stdout, status.stdout + status.stderr

    # The operator turns it back on: quotes and decisions are fast again.
    p = _cli(vault_devnet, redis_url, "fast-tier", "--chain", str(A), "--enable", "--reason", "trader blocked")
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["on"] is True and shown["switch"]["reason"] == "trader blocked" and shown["losses"]["countedUsd6"] == "0"
    assert int(shown["losses"]["inWindowUsd6"]) == int(loss["valueUsd6"])
    q = wait_for(lambda: quoted("fast"), 30, "a fast quote again")
    fast = client.swap(q, t.private_key)["orderId"]
    assert wait_for(lambda: client.order(fast)["settlementTier"], 30, "the last order's tier") == "fast"
    assert _fast_tier_public(pipeline_api, A)["on"] is True
    assert json.loads(r.get(f"order:{fast}"))["legs"][1]["logIndex"] is not None  # in B's log at once
