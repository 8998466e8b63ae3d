"""`POST /v1/swap` over real HTTP on the real devnet and Redis: receipts, status, and
every refusal with its documented code and no state left behind."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from web3 import Web3

from app.client import ApiCallError, CrossbookClient, order_from_quote, sign_order, swap_body
from app.domain.eip712 import Domain, recover
from app.domain.quote import QuoteTerms
from app.domain.receipt import Receipt
from app.services.book_service import BookService
from scripts.build_contracts import load_artifact
from scripts.devnet.devnet import Devnet
from tests.conftest import ApiProcess

pytestmark = pytest.mark.integration


def _domain(q: dict[str, Any]) -> Domain:
    d = q["eip712"]["domain"]
    return Domain(chain_id=d["chainId"], verifying_contract=d["verifyingContract"])


def _quote(client: CrossbookClient, m: Any, trader: Any, amount: int = 10**17, **kw: Any) -> dict[str, Any]:
    return client.quote(m.chains[0].chain_id, "WETH", m.chains[1].chain_id, "USDC", taker=trader.address, sell_amount=amount, **kw)


def _post(api: Any, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(api.url + "/v1/swap", json=body, timeout=10)


def _nothing_held(api: Any, m: Any, trader: Any) -> bool:
    r = redis.Redis.from_url(api.redis_url)
    token = m.chains[0].tokens["WETH"].address.lower()
    return int(r.get(f"held:{m.chains[0].chain_id}:{token}:{trader.address.lower()}") or 0) == 0


def test_swap_returns_a_signed_receipt_with_its_log_position(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    trader = m.traders[0]
    c = CrossbookClient(api.url)
    q = _quote(c, m, trader)
    receipt = c.swap(q, trader.private_key)
    assert receipt["state"] == "confirmed"
    assert receipt["log"]["chainId"] == m.chains[0].chain_id and receipt["log"]["index"] >= 0
    assert int(receipt["buyAmount"]) >= int(q["minBuyAmount"])
    r = Receipt(receipt["orderHash"], int(receipt["buyAmount"]), receipt["log"]["chainId"], receipt["log"]["index"], int(receipt["leaf"]["hash"]), receipt["confirmedAt"])
    assert recover(r.digest(_domain(q)), receipt["signature"]) == m.operator.address
    status = c.order(receipt["orderId"])
    assert status["state"] == "confirmed"
    assert [leg["kind"] for leg in status["legs"]] == ["pull", "payout"]
    pull = status["legs"][0]
    assert pull["logIndex"] == receipt["log"]["index"] and pull["finalityDepth"] == m.chains[0].finality_depth
    assert pull["etaSeconds"] > 0 and pull["confirmations"] == 0
    listing = c.orders(trader.address)
    assert receipt["orderId"] in [o["id"] for o in listing["orders"]]


def _metric(api: Any, line: str) -> float:
    text = httpx.get(api.url + "/metrics").text
    return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(line))


def test_log_indices_are_consecutive(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    trader = m.traders[1]
    c = CrossbookClient(api.url)
    ledger_steps = _metric(api, 'crossbook_swap_phase_seconds_count{phase="ledger"}')
    idx = [c.swap(_quote(c, m, trader), trader.private_key)["log"]["index"] for _ in range(5)]
    assert idx == list(range(idx[0], idx[0] + 5))
    # Each confirmation's steps are timed (operators read where its time goes), and the
    # event loop's lag is sampled all along.
    assert _metric(api, 'crossbook_swap_phase_seconds_count{phase="ledger"}') == ledger_steps + 5
    assert _metric(api, "crossbook_event_loop_lag_seconds_count") > 0


def test_reused_nonce_is_409_and_creates_nothing(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    trader = m.traders[2]
    c = CrossbookClient(api.url)
    c.swap(_quote(c, m, trader), trader.private_key, nonce=777)
    with pytest.raises(ApiCallError) as e:
        c.swap(_quote(c, m, trader), trader.private_key, nonce=777)
    assert e.value.status == 409 and e.value.code == "NONCE_REUSED"
    assert len(c.orders(trader.address)["orders"]) == 1


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("foreign_signature", 400, "INVALID_SIGNATURE"),
        ("garbage_signature", 400, "INVALID_SIGNATURE"),
        ("wrong_domain_chain", 400, "INVALID_SIGNATURE"),
        ("expired_deadline", 410, "ORDER_EXPIRED"),
        ("unknown_quote", 404, "QUOTE_NOT_FOUND"),
        ("someone_elses_quote", 400, "ORDER_MISMATCH"),
        ("changed_amount", 400, "ORDER_MISMATCH"),
        ("min_above_quote", 400, "ORDER_MISMATCH"),
        ("negative_amount", 400, "INVALID_REQUEST"),
        ("huge_amount", 400, "AMOUNT_TOO_LARGE"),
        ("non_integer_amount", 400, "INVALID_REQUEST"),
        ("number_not_string", 400, "INVALID_REQUEST"),
        ("unknown_field", 400, "INVALID_REQUEST"),
        ("expired_quote", 410, "QUOTE_EXPIRED"),
    ],
)
def test_bad_swaps_get_their_code_and_leave_no_state(
    api: Any, devnet: Devnet, case: str, status: int, code: str, tmp_path: Path
) -> None:
    m = devnet.manifest
    trader, other = m.traders[5], m.traders[6]
    c = CrossbookClient(api.url)
    q = _quote(c, m, trader)
    order = order_from_quote(q)
    key = trader.private_key
    body: dict[str, Any]
    if case == "foreign_signature":
        key = other.private_key
    if case == "wrong_domain_chain":
        d = _domain(q)
        body = swap_body(q, order, sign_order(order, Domain(chain_id=d.chain_id + 1, verifying_contract=d.verifying_contract), key))
    elif case == "garbage_signature":
        body = swap_body(q, order, "0x" + "11" * 65)
    elif case == "expired_deadline":
        order = order_from_quote(q, deadline=int(time.time()) - 1)
        body = swap_body(q, order, sign_order(order, _domain(q), key))
    elif case == "unknown_quote":
        q2 = {**q, "quoteId": "0x" + "ab" * 32}
        order = order_from_quote(q2)
        body = swap_body(q2, order, sign_order(order, _domain(q), key))
    elif case == "someone_elses_quote":
        theirs = _quote(c, m, other)
        order = order_from_quote({**theirs, "taker": trader.address, "recipient": trader.address})
        body = swap_body(theirs, order, sign_order(order, _domain(theirs), key))
    elif case in ("changed_amount", "min_above_quote"):
        from dataclasses import replace

        order = replace(order, sell_amount=order.sell_amount - 1) if case == "changed_amount" else replace(order, min_buy_amount=int(q["buyAmount"]) + 1)
        body = swap_body(q, order, sign_order(order, _domain(q), key))
    else:
        body = swap_body(q, order, sign_order(order, _domain(q), key))
        if case == "negative_amount":
            body["order"]["sellAmount"] = "-5"
        elif case == "huge_amount":
            body["order"]["sellAmount"] = str(2**130)
        elif case == "non_integer_amount":
            body["order"]["sellAmount"] = "1.5"
        elif case == "number_not_string":
            body["order"]["sellAmount"] = 10**17
        elif case == "unknown_field":
            body["order"]["extra"] = 1
        elif case == "expired_quote":
            r = redis.Redis.from_url(api.redis_url)
            deadline = time.monotonic() + 5  # quotes are written behind their replies
            while not r.exists("quote:" + q["quoteId"]) and time.monotonic() < deadline:
                time.sleep(0.01)
            doc = json.loads(r.get("quote:" + q["quoteId"]))
            doc["expiresAt"] = int(time.time()) - 1
            r.set("quote:" + q["quoteId"], json.dumps(doc), ex=30)
    if case == "expired_quote":
        # The API that issued a quote checks its own copy; another one (or this one after
        # a restart) reads the stored quote, here made to have expired.
        other_api = ApiProcess(devnet.manifest_path, api.redis_url, tmp_path)
        try:
            resp = _post(other_api, body)
        finally:
            other_api.stop()
    else:
        resp = _post(api, body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["message"]
    assert resp.json()["requestId"]
    assert c.orders(trader.address)["orders"] == []
    assert _nothing_held(api, m, trader)


def test_balance_and_allowance_are_checked_from_the_adapter_view(api: Any, clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    trader = m.traders[7]
    chain = m.chains[0]
    c = CrossbookClient(api.url)
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    weth = w3.eth.contract(address=Web3.to_checksum_address(chain.tokens["WETH"].address), abi=load_artifact("TestToken")["abi"])
    balance = weth.functions.balanceOf(trader.address).call()
    with pytest.raises(ApiCallError) as e:
        c.swap(_quote(c, m, trader, amount=balance + 1), trader.private_key)
    assert e.value.code == "INSUFFICIENT_BALANCE"
    # Two orders that each fit but together exceed the balance: the second is refused.
    half = balance // 2 + 1
    c.swap(_quote(c, m, trader, amount=half), trader.private_key)
    # Confirmations reach the book in batches (BookService.FLUSH_SECONDS): quote on a book
    # that shows the first order's trade, or the swap is refused as QUOTE_STALE instead.
    time.sleep(3 * BookService.FLUSH_SECONDS)
    with pytest.raises(ApiCallError) as e:
        c.swap(_quote(c, m, trader, amount=half), trader.private_key)
    assert e.value.code == "INSUFFICIENT_BALANCE"
    # Revoke the allowance on chain: once the adapter has seen the Approval, swaps are refused.
    tx = weth.functions.approve(chain.inventory, 0).transact({"from": trader.address})
    w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    deadline = time.monotonic() + 10
    code = None
    while time.monotonic() < deadline:
        try:
            c.swap(_quote(c, m, trader, amount=10**15), trader.private_key)
        except ApiCallError as err:
            code = err.code
            if code == "INSUFFICIENT_ALLOWANCE":
                break
        time.sleep(0.3)
    assert code == "INSUFFICIENT_ALLOWANCE"


def test_reservation_is_released_once_the_payout_settles(api: Any, devnet: Devnet) -> None:
    """The settlement workers announce state changes on `orders:{trader}`; the API releases
    the order's book reservation when its payout has settled."""
    m = devnet.manifest
    trader = m.traders[0]
    c = CrossbookClient(api.url)
    before = httpx.get(api.url + "/healthz").json()["openReservations"]
    receipt = c.swap(_quote(c, m, trader), trader.private_key)
    assert httpx.get(api.url + "/healthz").json()["openReservations"] == before + 1
    r = redis.Redis.from_url(api.redis_url)
    r.publish(f"orders:{trader.address.lower()}", json.dumps({"orderId": receipt["orderId"], "state": "pull_settled"}))
    time.sleep(0.5)
    assert httpx.get(api.url + "/healthz").json()["openReservations"] == before + 1  # payout not settled yet
    r.publish(f"orders:{trader.address.lower()}", json.dumps({"orderId": receipt["orderId"], "state": "settled"}))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and httpx.get(api.url + "/healthz").json()["openReservations"] != before:
        time.sleep(0.1)
    assert httpx.get(api.url + "/healthz").json()["openReservations"] == before


def test_a_swap_is_repriced_when_the_book_moved_since_its_quote(api: Any, clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    a, b, c3 = m.traders[2], m.traders[3], m.traders[5]
    c = CrossbookClient(api.url)
    # Unmoved book: the receipt pays exactly the quote.
    q = _quote(c, m, a, amount=10**17)
    assert c.swap(q, a.private_key)["buyAmount"] == q["buyAmount"]
    time.sleep(3 * BookService.FLUSH_SECONDS)

    wide = _quote(c, m, a, amount=2 * 10**18, slippageBps=5000)
    tight = _quote(c, m, c3, amount=2 * 10**18, slippageBps=0)
    c.swap(_quote(c, m, b, amount=20 * 10**18), b.private_key)  # the same pools, ahead of both
    time.sleep(3 * BookService.FLUSH_SECONDS)
    # Within its slippage: confirmed at the moved book's price, below the quote.
    receipt = c.swap(wide, a.private_key)
    assert int(wide["minBuyAmount"]) <= int(receipt["buyAmount"]) < int(wide["buyAmount"])
    # Beyond it: QUOTE_STALE with a fresh quote at the moved price.
    with pytest.raises(ApiCallError) as e:
        c.swap(tight, c3.private_key)
    assert e.value.code == "QUOTE_STALE"
    fresh = e.value.body["error"]["details"][0]["freshQuote"]
    assert int(fresh["buyAmount"]) < int(tight["buyAmount"])
    # Signed like any quote (a swap's re-pricing signs only the quote it sends back).
    terms = QuoteTerms(
        quote_id=fresh["quoteId"], taker=fresh["taker"], recipient=fresh["recipient"],
        sell_chain_id=fresh["sellChainId"], sell_token=fresh["sellToken"], sell_amount=int(fresh["sellAmount"]),
        buy_chain_id=fresh["buyChainId"], buy_token=fresh["buyToken"], buy_amount=int(fresh["buyAmount"]),
        min_buy_amount=int(fresh["minBuyAmount"]), expires_at=fresh["expiresAt"], book_version=fresh["bookVersion"],
    )  # fmt: skip
    assert recover(terms.digest(_domain(fresh)), fresh["signature"]) == m.operator.address


def _reused(api: Any) -> float:
    for line in httpx.get(api.url + "/metrics").text.splitlines():
        if line.startswith('crossbook_swap_pricing_total{how="reused"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_for_a_newer_book(api: Any, version: int) -> None:
    deadline = time.monotonic() + 5
    while httpx.get(api.url + "/healthz").json()["bookVersion"] == version and time.monotonic() < deadline:
        time.sleep(BookService.FLUSH_SECONDS)
    assert httpx.get(api.url + "/healthz").json()["bookVersion"] > version


def _wait_for_a_quiet_book(api: Any) -> None:
    """Until the book stops moving: the chains of the previous test were reverted, and the
    API may still be applying the reverted pools (which would re-price a quote made now)."""
    deadline = time.monotonic() + 10
    version = httpx.get(api.url + "/healthz").json()["bookVersion"]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = httpx.get(api.url + "/healthz").json()["bookVersion"]
        if now == version:
            return
        version = now


def _swap_is_paid_as_quoted_without_repricing(api: Any, c: CrossbookClient, q: dict[str, Any], key: str) -> None:
    reused = _reused(api)
    assert c.swap(q, key)["buyAmount"] == q["buyAmount"]
    assert _reused(api) == reused + 1


def test_a_swap_keeps_its_quoted_route_when_only_other_pools_moved(api: Any, clean_devnet: Devnet) -> None:
    """A newer book version whose changes miss the route's pools does not re-price the
    swap: the route pays exactly what was quoted, so the receipt is the quote's amount."""
    m = clean_devnet.manifest
    a, b = m.traders[2], m.traders[3]
    c = CrossbookClient(api.url)
    _wait_for_a_quiet_book(api)
    q = _quote(c, m, a, amount=10**17)
    # A trade on other pools than q's. Which pools q takes depends on what earlier tests
    # left in the book (WETH -> DAI -> USDC through a stable pool, say), so look for one.
    mine = {leg["sourceId"] for leg in q["route"]}
    candidates = (
        c.quote(ch.chain_id, sell, ch.chain_id, buy, taker=b.address, sell_amount=amount)
        for ch in reversed(m.chains)
        for sell, buy, amount in (("DAI", "USDT", 10**19), ("USDT", "DAI", 10**7), ("WBTC", "USDC", 10**5))
    )
    other = next((o for o in candidates if not mine & {leg["sourceId"] for leg in o["route"]}), None)
    assert other is not None, f"every candidate trade shares a pool with {mine}"
    c.swap(other, b.private_key)
    _wait_for_a_newer_book(api, q["bookVersion"])
    _swap_is_paid_as_quoted_without_repricing(api, c, q, a.private_key)
    # A swap whose pools did move is re-priced (the counter does not move).
    q2 = _quote(c, m, a, amount=10**17)
    c.swap(_quote(c, m, b, amount=10**18), b.private_key)  # the same pools, ahead of it
    time.sleep(3 * BookService.FLUSH_SECONDS)
    reused = _reused(api)
    assert int(c.swap(q2, a.private_key)["buyAmount"]) < int(q2["buyAmount"])
    assert _reused(api) == reused


def test_a_same_asset_transfer_keeps_its_quote(api: Any, clean_devnet: Devnet) -> None:
    """A transfer across chains trades on no pool: its swap is paid what was quoted and
    is not re-priced, also after the book moved."""
    m = clean_devnet.manifest
    a, b = m.traders[2], m.traders[3]
    c = CrossbookClient(api.url)
    q = c.quote(m.chains[0].chain_id, "USDC", m.chains[1].chain_id, "USDC", taker=a.address, sell_amount=5 * 10**6)
    assert q["route"] == []
    c.swap(_quote(c, m, b, amount=10**18), b.private_key)  # the book moves
    _wait_for_a_newer_book(api, q["bookVersion"])
    _swap_is_paid_as_quoted_without_repricing(api, c, q, a.private_key)
