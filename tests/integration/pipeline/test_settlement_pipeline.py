"""Orders confirmed through the real API settle through real Celery workers on the devnet."""

from __future__ import annotations

import json
from typing import Any

import pytest
from web3 import Web3

from app.client import CrossbookClient
from tests.integration.pipeline.conftest import manifest_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A, B = 31002, 31003  # 1 s / 3 blocks and 0.25 s / 20 blocks


def _balance(net: Any, chain: int, symbol: str, holder: str) -> int:
    c = manifest_of(net).chain(chain)
    w3 = Web3(Web3.HTTPProvider(c.rpc_url))
    data = Web3.keccak(text="balanceOf(address)")[:4] + bytes(12) + bytes.fromhex(holder[2:])
    return int.from_bytes(w3.eth.call({"to": c.tokens[symbol].address, "data": data}), "big")


def _status(client: CrossbookClient, oid: str) -> dict[str, Any]:
    return client.order(oid)


def _approve(net: Any, chain: int, symbol: str, owner: str, amount: int) -> None:
    c = manifest_of(net).chain(chain)
    w3 = Web3(Web3.HTTPProvider(c.rpc_url))
    data = Web3.keccak(text="approve(address,uint256)")[:4] + bytes(12) + bytes.fromhex(c.contracts["settlement"][2:]) + amount.to_bytes(32, "big")
    h = w3.eth.send_transaction({"from": owner, "to": c.tokens[symbol].address, "data": data, "gas": 100_000})
    assert w3.eth.wait_for_transaction_receipt(h, timeout=30)["status"] == 1


def test_same_and_cross_chain_orders_finalize(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t1, t2, t3 = m.traders[0], m.traders[1], m.traders[2]
    before = {
        "t1_weth": _balance(vault_devnet, A, "WETH", t1.address),
        "t1_usdc_b": _balance(vault_devnet, B, "USDC", t1.address),
        "t2_weth": _balance(vault_devnet, A, "WETH", t2.address),
        "t2_usdc": _balance(vault_devnet, A, "USDC", t2.address),
    }
    cross = client.swap(client.quote(A, "WETH", B, "USDC", taker=t1.address, sell_amount=10**17), t1.private_key)
    same = client.swap(client.quote(A, "WETH", A, "USDC", taker=t2.address, sell_amount=2 * 10**17), t2.private_key)
    # t3 confirms, then revokes the vault's allowance before the batch settles.
    t3_weth = _balance(vault_devnet, A, "WETH", t3.address)
    t3_usdc_b = _balance(vault_devnet, B, "USDC", t3.address)
    revoked = client.swap(client.quote(A, "WETH", B, "USDC", taker=t3.address, sell_amount=10**17), t3.private_key)
    _approve(vault_devnet, A, "WETH", t3.address, 0)
    # Load for the batch: ten more cross-chain orders from two traders.
    more = [
        client.swap(client.quote(A, "WETH", B, "USDC", taker=t.address, sell_amount=10**16), t.private_key)
        for t in (m.traders[6], m.traders[7])
        for _ in range(5)
    ]

    def done() -> bool:
        states = [_status(client, o["orderId"])["state"] for o in (cross, same, revoked)]
        assert not set(states[:2]) & {"failed", "refunded"}, states
        assert states[2] in ("confirmed", "failed"), states
        rest = [_status(client, o["orderId"])["state"] for o in more]
        return states == ["finalized", "finalized", "failed"] and all(x == "finalized" for x in rest)

    try:
        wait_for(done, 150, "every order terminal", interval=1.0)
    except AssertionError:
        print(celery_procs.log("settle")[-6000:])
        print(celery_procs.log("prove")[-3000:])
        raise
    sc, ss = _status(client, cross["orderId"]), _status(client, same["orderId"])
    for st in (sc, ss):
        assert [h["state"] for h in st["history"]] == ["confirmed", "pull_settled", "settled", "finalized"]
        for leg in st["legs"]:
            assert leg["state"] == "final" and leg["txHash"] and leg["block"] is not None
            assert leg["confirmations"] >= leg["finalityDepth"]
    assert [leg["chainId"] for leg in sc["legs"]] == [A, B]
    # Balances moved exactly as the receipts say.
    assert _balance(vault_devnet, A, "WETH", t1.address) == before["t1_weth"] - 10**17
    assert _balance(vault_devnet, B, "USDC", t1.address) == before["t1_usdc_b"] + int(cross["buyAmount"])
    assert _balance(vault_devnet, A, "WETH", t2.address) == before["t2_weth"] - 2 * 10**17
    assert _balance(vault_devnet, A, "USDC", t2.address) == before["t2_usdc"] + int(same["buyAmount"])
    # Holds are released, and chain and ledger reconcile to the wei.
    o = sc["order"]
    assert int(r.get(f"held:{A}:{o['sellToken'].lower()}:{t1.address.lower()}") or 0) == 0
    assert int(r.get(f"invheld:{B}:{o['buyToken'].lower()}") or 0) == 0

    def reconciled() -> bool:
        reps = [json.loads(r.get(f"stl:{c}:recon") or "{}") for c in (A, B)]
        return all(x.get("status") == "ok" and x.get("applied", 0) > 0 for x in reps)

    wait_for(reconciled, 60, "reconcile ok on both chains")
    # The revoked order failed with its reason; nothing taken, nothing paid, holds released.
    sr = _status(client, revoked["orderId"])
    assert "TRANSFER_FAILED" in sr["reason"] and sr["legs"][1]["state"] == "cancelled"
    assert sr["legs"][1]["logIndex"] is None
    assert _balance(vault_devnet, A, "WETH", t3.address) == t3_weth
    assert _balance(vault_devnet, B, "USDC", t3.address) == t3_usdc_b
    assert int(r.get(f"held:{A}:{o['sellToken'].lower()}:{t3.address.lower()}") or 0) == 0
    # The cross-chain and same-chain pulls are closed on A's vault (confirmPayouts, sent
    # alone since A has nothing more to settle): their traders can no longer reclaim.
    def confirmed() -> bool:
        tx = json.loads(r.get(f"stl:{A}:confirmtx") or "{}")
        return r.scard(f"stl:{A}:confirms") == 0 and (tx == {} or tx.get("block") is not None)

    wait_for(confirmed, 60, "pull refs confirmed on chain A")
    w3 = Web3(Web3.HTTPProvider(m.chain(A).rpc_url))
    vault = m.chain(A).contracts["settlement"]
    for st in (sc, ss):
        ref = int(st["legs"][0]["pullRef"])
        word = w3.eth.call({"to": vault, "data": Web3.keccak(text="pullRecords(uint256)")[:4] + (ref >> 8).to_bytes(32, "big")})
        assert int.from_bytes(word, "big") >> (ref & 0xFF) & 1 == 1
    print("trust windows (s):", [r_ / 1000 for r_ in (json.loads(r.get(f"order:{x['orderId']}"))["trustWindowMs"] for x in (cross, same))])
    from settlement.batching import chain_status

    status_a = chain_status(r, A)
    assert status_a["backlog"] == 0 and status_a["reconcile"]["status"] == "ok"
    batches = [json.loads(r.get(k)) for k in r.keys("stl:*:batch:*") if not k.endswith(":seq")]
    settled = [b for b in batches if b["state"] == "final"]
    assert settled and all(b.get("gasUsed") for b in settled)
    print("batches:", [(b["chainId"], b["count"], b.get("capacity"), b.get("proofSeconds"), b.get("gasUsed")) for b in settled])
