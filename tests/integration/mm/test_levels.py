"""Ladders over `/v1/ws/mm` reach the book and the router; bad ladders are refused and
the connection stays; closing, a missed heartbeat or a drop in funds pulls liquidity."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from typing import Any

import httpx
import pytest
from eth_typing import HexStr
from web3 import Web3

from scripts.demo_maker import MakerClient, MakerClosed, price_str
from scripts.devnet.devnet import Devnet
from tests.conftest import ApiProcess
from tests.integration.mm.conftest import manifest_of, ws_url

pytestmark = pytest.mark.integration

E18 = 10**18


async def _book(
    api: ApiProcess, chain_id: int, base: str = "WETH", quote: str = "USDC"
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api.url) as http:
        r = await http.get(
            "/v1/book", params={"base": base, "quote": quote, "levels": 3, "stepBps": 10}
        )
        assert r.status_code == 200, r.text
        return next(c for c in r.json()["chains"] if c["chainId"] == chain_id)


async def _mid(api: ApiProcess, chain_id: int) -> Fraction:
    """USDC per WETH near the chain's best pool bid (the depth grid starts one step below)."""
    book = await _book(api, chain_id)
    return Fraction(int(book["bids"][0]["price"]), E18) / Fraction(999, 1000)


def _levels(
    chain_id: int, bids: list[list[Any]], asks: list[list[Any]], ttl: int = 30
) -> dict[str, Any]:
    return {
        "chainId": chain_id,
        "base": "WETH",
        "quote": "USDC",
        "bids": bids,
        "asks": asks,
        "expiresAt": int(time.time()) + ttl,
    }


async def _ack(client: MakerClient, payload: dict[str, Any]) -> dict[str, Any]:
    ref = await client.send("levels", payload)
    msg = await client.recv("ack", "error")
    assert msg["type"] == "ack", msg
    assert msg["payload"]["ref"] == ref
    return msg["payload"]


async def _error(client: MakerClient, typ: str, payload: dict[str, Any]) -> str:
    ref = await client.send(typ, payload)
    msg = await client.recv("ack", "error")
    assert msg["type"] == "error", msg
    assert msg["payload"]["ref"] == ref
    code: str = msg["payload"]["code"]
    return code


async def _wait(pred: Any, timeout: float = 3.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await pred():
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def _quote(
    api: ApiProcess, devnet: Devnet, chain_id: int, sell_amount: int
) -> dict[str, Any]:
    body = {
        "sellChainId": chain_id,
        "sellToken": "WETH",
        "buyChainId": chain_id,
        "buyToken": "USDC",
        "sellAmount": str(sell_amount),
        "taker": manifest_of(devnet).traders[0].address,
    }
    async with httpx.AsyncClient(base_url=api.url) as http:
        r = await http.post("/v1/quote", json=body)
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc


async def test_ladder_shows_in_book_and_routes_then_leaves_on_close(
    mm_api: ApiProcess, devnet: Devnet
) -> None:
    m = manifest_of(devnet)
    cid = m.chains[1].chain_id
    mid = await _mid(mm_api, cid)
    bid = mid * Fraction(101, 100)  # better than every pool: the router must use it
    client = await MakerClient.open(ws_url(mm_api), m.makers[0].private_key)
    try:
        ack = await _ack(
            client,
            _levels(
                cid,
                [[price_str(bid), str(2 * E18)]],
                [[price_str(mid * Fraction(103, 100)), str(E18)]],
            ),
        )
        assert ack["bids"] == 1 and ack["asks"] == 1
        assert ack["sourceId"] == f"{cid}:mm:{m.makers[0].address.lower()}:USDC-WETH"
        book = await _book(mm_api, cid)
        assert Fraction(int(book["bids"][0]["price"]), E18) >= bid * Fraction(998, 1000)
        assert int(book["bids"][0]["base"]) >= 2 * E18  # the whole level is inside the first step

        q = await _quote(mm_api, devnet, cid, E18)
        ladder_legs = [leg for leg in q["route"] if leg["kind"] == "ladder"]
        assert ladder_legs and ladder_legs[0]["sourceId"] == ack["sourceId"]
        assert int(q["buyAmount"]) >= int(bid * 10**6) * 99 // 100  # priced at the maker's bid
    finally:
        await client.close()

    async def gone() -> bool:
        return Fraction(int((await _book(mm_api, cid))["bids"][0]["price"]), E18) < bid * Fraction(
            998, 1000
        )

    assert await _wait(gone, timeout=1.0) < 1.0  # within one heartbeat (1 s on the test API)
    q = await _quote(mm_api, devnet, cid, E18)
    assert all(leg["kind"] != "ladder" for leg in q["route"])


async def test_invalid_ladders_get_codes_and_the_connection_stays(
    mm_api: ApiProcess, devnet: Devnet
) -> None:
    m = manifest_of(devnet)
    cid = m.chains[0].chain_id
    client = await MakerClient.open(ws_url(mm_api), m.makers[1].private_key)
    good_bid, good_ask = ["2900.5", str(E18)], ["3100", str(E18)]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("CROSSED_LADDER", _levels(cid, [["3000", str(E18)]], [["2999.99", str(E18)]])),
        ("CROSSED_LADDER", _levels(cid, [["3000", str(E18)]], [["3000", str(E18)]])),
        ("NEGATIVE_SIZE", _levels(cid, [["2900", str(-E18)]], [good_ask])),
        ("NEGATIVE_SIZE", _levels(cid, [["2900", -5]], [good_ask])),
        ("INVALID_SIZE", _levels(cid, [["2900", "0"]], [good_ask])),
        ("INVALID_SIZE", _levels(cid, [["2900", "1.5"]], [good_ask])),
        ("BAD_PRICE", _levels(cid, [["-2900", str(E18)]], [good_ask])),
        ("BAD_PRICE", _levels(cid, [[2900.5, str(E18)]], [good_ask])),
        ("BAD_PRICE", _levels(cid, [["1e3", str(E18)]], [good_ask])),
        ("UNKNOWN_TOKEN", {**_levels(cid, [good_bid], [good_ask]), "base": "DOGE"}),
        ("UNKNOWN_TOKEN", {**_levels(cid, [good_bid], [good_ask]), "base": "USDC"}),
        ("UNKNOWN_CHAIN", _levels(999, [good_bid], [good_ask])),
        (
            "LADDER_TOO_LONG",
            _levels(cid, [[str(2000 + k), str(E18)] for k in range(21)], [good_ask]),
        ),
        ("EXPIRY_TOO_FAR", _levels(cid, [good_bid], [good_ask], ttl=3600)),
        ("EXPIRED", _levels(cid, [good_bid], [good_ask], ttl=-1)),
        (
            "INSUFFICIENT_MAKER_BALANCE",
            _levels(cid, [["2900", str(10**6 * E18)]], []),
        ),  # ~2.9e9 USDC
        (
            "INSUFFICIENT_MAKER_BALANCE",
            _levels(cid, [], [["3100", str(10**6 * E18)]]),
        ),  # a million WETH
        ("BAD_MESSAGE", {**_levels(cid, [], [good_ask]), "bids": "x"}),
    ]
    try:
        for i, (code, payload) in enumerate(cases):
            # Stay under the test API's 5 levels/s so only validation speaks.
            if i % 5 == 4:
                await asyncio.sleep(1.0)
            assert await _error(client, "levels", payload) == code, (code, payload)
        assert await _error(client, "frobnicate", {}) == "UNKNOWN_TYPE"
        await asyncio.sleep(1.0)
        ack = await _ack(
            client, _levels(cid, [good_bid], [good_ask])
        )  # still connected, still usable
        assert ack["bids"] == 1
        ack = await _ack(client, _levels(cid, [], []))  # an empty ladder pulls the pair
        assert ack["bids"] == 0 and ack["asks"] == 0
    finally:
        await client.close()


async def test_commitments_across_pairs_share_the_maker_funds(
    mm_api: ApiProcess, devnet: Devnet
) -> None:
    m = manifest_of(devnet)
    cid = m.chains[0].chain_id
    client = await MakerClient.open(ws_url(mm_api), m.makers[1].private_key)
    try:
        usdc = next(c for c in client.welcome["chains"] if c["chainId"] == cid)["funds"]["USDC"]
        have = min(int(usdc["balance"]), int(usdc["allowance"]))  # USDC base units (6 decimals)
        # Bids on WETH/USDC worth 60% of the USDC, then bids on WBTC/USDC worth another 60%.
        weth = have * 6 // 10 * 10**12 // 3000
        await _ack(client, _levels(cid, [["3000", str(weth)]], []))
        wbtc = {**_levels(cid, [["60000", str(have * 6 // 10 * 100 // 60000)]], []), "base": "WBTC"}
        assert await _error(client, "levels", wbtc) == "INSUFFICIENT_MAKER_BALANCE"
        # Replacing the first ladder (not adding to it) frees its share again.
        await _ack(client, _levels(cid, [["3000", str(weth // 2)]], []))
        await _ack(client, wbtc)
    finally:
        await client.close()


async def test_missed_heartbeats_close_the_socket_and_pull_the_levels(
    mm_api: ApiProcess, devnet: Devnet
) -> None:
    m = manifest_of(devnet)
    cid = m.chains[2].chain_id
    mid = await _mid(mm_api, cid)
    bid = mid * Fraction(101, 100)
    client = await MakerClient.open(ws_url(mm_api), m.makers[2].private_key, auto_pong=False)
    await _ack(client, _levels(cid, [[price_str(bid), str(E18)]], []))
    assert Fraction(int((await _book(mm_api, cid))["bids"][0]["price"]), E18) >= bid * Fraction(
        998, 1000
    )
    t0 = time.monotonic()
    with pytest.raises(MakerClosed):
        await client.recv("never", timeout=5)
    silent = time.monotonic() - t0
    assert client.close_code == 4408
    assert 1.5 <= silent <= 3.5  # two 1 s heartbeats, checked every 0.25 s
    assert any(msg["type"] == "ping" for msg in client.received)
    assert any(
        msg["payload"].get("code") == "HEARTBEAT_TIMEOUT"
        for msg in client.received
        if msg["type"] == "error"
    )
    book = await _book(mm_api, cid)
    assert Fraction(int(book["bids"][0]["price"]), E18) < bid * Fraction(998, 1000)


async def test_over_the_rate_limit_cools_down(mm_api: ApiProcess, devnet: Devnet) -> None:
    m = manifest_of(devnet)
    cid = m.chains[0].chain_id
    client = await MakerClient.open(ws_url(mm_api), m.makers[0].private_key)
    payload = _levels(cid, [["2900", str(E18)]], [["3100", str(E18)]])
    try:
        refs = [await client.send("levels", payload) for _ in range(8)]  # 5/s allowed, burst 5
        replies = [await client.recv("ack", "error") for _ in refs]
        kinds = [r["type"] if r["type"] == "ack" else r["payload"]["code"] for r in replies]
        assert kinds[:5] == ["ack"] * 5
        assert kinds[5:] == ["RATE_LIMITED"] * 3
        assert 0 < replies[5]["payload"]["details"]["retryAfterMs"] <= 1001
        # During the cool-down every message is refused, even ones under the rate...
        await asyncio.sleep(0.5)
        assert await _error(client, "levels", payload) == "RATE_LIMITED"
        # ...but the heartbeat still works, so a throttled maker is not disconnected.
        ref = await client.send("ping", {})
        assert (await client.recv("pong"))["payload"]["ref"] == ref
        await asyncio.sleep(0.7)
        await _ack(client, payload)
    finally:
        await client.close()


async def test_levels_shrink_when_the_maker_moves_funds_away(
    mm_api: ApiProcess, clean_devnet: Devnet
) -> None:
    m = manifest_of(clean_devnet)
    chain = m.chains[2]  # the fastest chain: the transfer lands within a block or two
    cid = chain.chain_id
    maker = m.makers[0]
    mid = await _mid(mm_api, cid)
    bid = mid * Fraction(101, 100)  # above the pools, so quotes take the ladder first
    client = await MakerClient.open(ws_url(mm_api), maker.private_key)

    async def ladder_in(amount: int) -> int:
        q = await _quote(mm_api, clean_devnet, cid, amount)
        # This maker's ladder only: in a full run another test's maker (the demo maker
        # closes slowly under load) may still quote on this chain, and its ladder is not
        # trimmed by this maker's transfer.
        own = maker.address.lower()
        return sum(int(leg["amountIn"]) for leg in q["route"] if leg["kind"] == "ladder" and own in leg["sourceId"].lower())

    try:
        await _ack(
            client,
            _levels(
                cid,
                [
                    [price_str(bid), str(20 * E18)],
                    [price_str(bid * Fraction(999, 1000)), str(20 * E18)],
                ],
                [],
            ),
        )
        assert await ladder_in(10 * E18) == 10 * E18
        # The maker keeps 10,000 USDC and sends the rest away (Anvil's dev accounts are unlocked).
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        token = chain.tokens["USDC"].address
        call = {"to": token, "data": HexStr("0x70a08231" + maker.address[2:].rjust(64, "0"))}
        balance = int.from_bytes(w3.eth.call(call), "big")  # type: ignore[arg-type]
        keep = 10_000 * 10**6
        data = (
            "0xa9059cbb"
            + m.traders[7].address[2:].lower().rjust(64, "0")
            + hex(balance - keep)[2:].rjust(64, "0")
        )
        w3.eth.send_transaction(
            {"from": maker.address, "to": token, "data": HexStr(data), "gas": 100_000}
        )

        # What the ladder still offers costs at most what the maker kept.
        most = keep * 10**12 * E18 // int(bid * E18)  # WETH base units 10,000 USDC buys at the bid

        async def trimmed() -> bool:
            return await ladder_in(10 * E18) <= most

        await _wait(trimmed, timeout=15.0)  # a block, the adapter and the hub: slow on a busy machine
        assert await ladder_in(10 * E18) > most * 9 // 10  # trimmed to the funds, not pulled
        # And a new ladder must fit what is left.
        await asyncio.sleep(0.3)
        too_big = _levels(cid, [[price_str(bid), str(most * 2)]], [])
        assert await _error(client, "levels", too_big) == "INSUFFICIENT_MAKER_BALANCE"
        await _ack(client, _levels(cid, [[price_str(bid), str(most // 2)]], []))
    finally:
        await client.close()


async def test_cancel_one_pair_or_everything(mm_api: ApiProcess, devnet: Devnet) -> None:
    m = manifest_of(devnet)
    cid = m.chains[1].chain_id
    mid = await _mid(mm_api, cid)
    bid = mid * Fraction(101, 100)
    client = await MakerClient.open(ws_url(mm_api), m.makers[1].private_key)
    try:
        weth = await _ack(client, _levels(cid, [[price_str(bid), str(E18)]], []))
        wbtc = await _ack(client, {**_levels(cid, [["50000", str(10**7)]], []), "base": "WBTC"})
        assert await _error(client, "login", client.login_payload()) == "ALREADY_LOGGED_IN"
        assert await _error(client, "cancel", {"chainId": cid, "base": "WETH"}) == "BAD_MESSAGE"
        same = {"chainId": cid, "base": "WETH", "quote": "weth"}
        assert await _error(client, "cancel", same) == "UNKNOWN_TOKEN"
        await asyncio.sleep(1.0)
        ref = await client.send(
            "cancel", {"chainId": cid, "base": "USDC", "quote": "WETH"}
        )  # either orientation
        ack = await client.recv("ack")
        assert ack["payload"]["ref"] == ref and ack["payload"]["removed"] == [weth["sourceId"]]
        book = await _book(mm_api, cid)
        assert Fraction(int(book["bids"][0]["price"]), E18) < bid * Fraction(998, 1000)
        await asyncio.sleep(1.0)  # the test API allows 5 levels/cancel per second
        ref = await client.send("cancel", {})
        ack = await client.recv("ack")
        assert ack["payload"]["removed"] == [wbtc["sourceId"]]
        await _ack(
            client, _levels(cid, [[price_str(bid), str(E18)]], [])
        )  # and the socket still works
    finally:
        await client.close()


async def test_a_level_is_filled_once_by_concurrent_swaps(mm_api: ApiProcess, clean_devnet: Devnet) -> None:
    """Two traders quote the whole of one maker level, then swap at the same moment: one
    order takes the level, the other is told its quote is stale (never both: a level is
    firm and finite, so confirmations through it are not batched into the book)."""
    from app.client import order_from_quote, sign_order, swap_body
    from app.domain.eip712 import Domain

    m = manifest_of(clean_devnet)
    cid = m.chains[1].chain_id
    maker = m.makers[1]
    bid = await _mid(mm_api, cid) * Fraction(102, 100)  # well above the pools
    size = E18 // 5
    client = await MakerClient.open(ws_url(mm_api), maker.private_key)
    try:
        await _ack(client, _levels(cid, [[price_str(bid), str(size)]], []))
        traders = m.traders[3:5]
        async with httpx.AsyncClient(base_url=mm_api.url, timeout=30) as http:
            bodies = []
            for t in traders:
                r = await http.post(
                    "/v1/quote",
                    json={"sellChainId": cid, "sellToken": "WETH", "buyChainId": cid, "buyToken": "USDC", "sellAmount": str(size), "taker": t.address},
                )
                q = r.json()
                assert [leg["kind"] for leg in q["route"]] == ["ladder"], q["route"]
                d = q["eip712"]["domain"]
                order = order_from_quote(q, nonce=int(time.time() * 1000))
                bodies.append(swap_body(q, order, sign_order(order, Domain(chain_id=d["chainId"], verifying_contract=d["verifyingContract"]), t.private_key)))
            replies = await asyncio.gather(*(http.post("/v1/swap", json=b) for b in bodies))
        codes = sorted(r.status_code for r in replies)
        assert codes == [200, 409], [r.text for r in replies]
        stale = next(r for r in replies if r.status_code == 409).json()["error"]
        assert stale["code"] == "QUOTE_STALE"
        assert "ladder" not in [leg["kind"] for leg in stale["details"][0]["freshQuote"]["route"]]
    finally:
        await client.close()
