"""RFQ and notices: the hub (as the quote and settlement paths call it) against real
maker sockets, with the app served in a thread of the test process."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from app.domain.eip712 import Domain, recover
from app.domain.maker_messages import MakerQuote
from app.domain.types import Asset, ChainId
from app.services.makers import NOTICE_CHANNEL, MakerFill, fill_notice, settlement_notice
from scripts.demo_maker import MakerClient
from scripts.devnet.devnet import Devnet
from scripts.redis_server import EmbeddedRedis
from tests.integration.mm.conftest import InThreadApi, manifest_of, ws_url

pytestmark = pytest.mark.integration

E18 = 10**18


@contextlib.asynccontextmanager
async def _makers(api: InThreadApi, devnet: Devnet) -> AsyncIterator[list[MakerClient]]:
    clients = [
        await MakerClient.open(ws_url(api), mk.private_key) for mk in manifest_of(devnet).makers
    ]
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


def _assets(api: InThreadApi, chain_id: int) -> tuple[Asset, Asset]:
    book = api.hub.books.book  # an immutable snapshot: safe to read from this thread
    return book.asset("WETH", ChainId(chain_id)), book.asset("USDC", ChainId(chain_id))


def _quote(
    client: MakerClient, rfq: dict[str, Any], maker_amount: int, taker_amount: int
) -> MakerQuote:
    leg = rfq["legs"][0]
    q = MakerQuote(
        rfq_id=rfq["rfqId"],
        chain_id=leg["chainId"],
        maker=client.address,
        maker_token=leg["makerToken"],
        maker_amount=maker_amount,
        taker_token=leg["takerToken"],
        taker_amount=taker_amount,
        expires_at=rfq["minExpiresAt"] + 5,
    )
    return client.sign_quote(q, leg["domain"])


async def _reply(client: MakerClient, typ: str, payload: dict[str, Any]) -> dict[str, Any]:
    ref = await client.send(typ, payload)
    msg = await client.recv("ack", "error")
    assert msg["payload"]["ref"] == ref
    return msg


async def test_firm_quote_accepted_bad_signature_ignored_decline_and_deadline(
    mm_inproc: InThreadApi, devnet: Devnet
) -> None:
    cid = manifest_of(devnet).chains[0].chain_id
    weth, usdc = _assets(mm_inproc, cid)
    async with _makers(mm_inproc, devnet) as (good, forger, decliner):
        t0 = time.monotonic()
        pending = mm_inproc.submit(
            mm_inproc.hub.request_quotes(
                sell=weth, buy=usdc, side="exactIn", amount=10 * E18, deadline_ms=600
            )
        )
        rfqs = [(await c.recv("rfq"))["payload"] for c in (good, forger, decliner)]
        assert len({r["rfqId"] for r in rfqs}) == 1
        rfq = rfqs[0]
        assert (
            rfq["side"] == "exactIn" and rfq["sellSymbol"] == "WETH" and rfq["buySymbol"] == "USDC"
        )
        assert [(leg["chainId"], leg["amount"], leg["takerToken"]) for leg in rfq["legs"]] == [
            (cid, str(10 * E18), weth.address)
        ]

        ok = _quote(good, rfq, 30_000 * 10**6, 10 * E18)
        assert (await _reply(good, "quote", ok.to_json()))["payload"]["accepted"] is True

        forged = _quote(forger, rfq, 31_000 * 10**6, 10 * E18)
        bad = {
            **forged.to_json(),
            "signature": _quote(good, rfq, 31_000 * 10**6, 10 * E18).signature,
        }
        assert (await _reply(forger, "quote", bad))["payload"]["code"] == "BAD_SIGNATURE"
        wrong_amount = _quote(forger, rfq, 31_000 * 10**6, 9 * E18)
        assert (await _reply(forger, "quote", wrong_amount.to_json()))["payload"][
            "code"
        ] == "INVALID_QUOTE"
        too_much = _quote(forger, rfq, 10**9 * 10**6, 10 * E18)  # more USDC than the maker holds
        assert (await _reply(forger, "quote", too_much.to_json()))["payload"][
            "code"
        ] == "INSUFFICIENT_MAKER_BALANCE"

        declined = await _reply(decliner, "decline", {"rfqId": rfq["rfqId"]})
        assert declined["payload"]["declined"] is True

        quotes = await pending
        elapsed = time.monotonic() - t0
    # The forger never answered validly, so the hub waited out the deadline, no longer.
    assert 0.55 <= elapsed <= 1.2
    assert quotes == [ok]
    q = quotes[0]
    domain = Domain(cid, rfq["legs"][0]["domain"]["verifyingContract"])
    assert recover(q.digest(domain), q.signature) == good.address


async def test_all_answered_returns_early_best_first_exact_out(
    mm_inproc: InThreadApi, devnet: Devnet
) -> None:
    cid = manifest_of(devnet).chains[1].chain_id
    weth, usdc = _assets(mm_inproc, cid)
    async with _makers(mm_inproc, devnet) as (a, b, c):
        t0 = time.monotonic()
        # The taker wants exactly 2 WETH for USDC: makers compete on the USDC they take.
        pending = mm_inproc.submit(
            mm_inproc.hub.request_quotes(
                sell=usdc, buy=weth, side="exactOut", amount=2 * E18, deadline_ms=3000
            )
        )
        rfq = (await a.recv("rfq"))["payload"]
        await b.recv("rfq")
        await c.recv("rfq")
        qa = _quote(a, rfq, 2 * E18, 6_100 * 10**6)
        qb = _quote(b, rfq, 2 * E18, 6_050 * 10**6)
        assert (await _reply(a, "quote", qa.to_json()))["type"] == "ack"
        assert (await _reply(b, "quote", qb.to_json()))["type"] == "ack"
        assert (await _reply(b, "quote", qb.to_json()))["payload"][
            "code"
        ] == "INVALID_QUOTE"  # once only
        await _reply(c, "decline", {"rfqId": rfq["rfqId"], "reason": "flat"})
        quotes = await pending
        elapsed = time.monotonic() - t0
    assert elapsed < 1.5  # everyone answered: no wait for the 3 s deadline
    assert [q.maker for q in quotes] == [b.address, a.address]


async def test_late_quote_is_refused_and_not_returned(
    mm_inproc: InThreadApi, devnet: Devnet
) -> None:
    cid = manifest_of(devnet).chains[0].chain_id
    weth, usdc = _assets(mm_inproc, cid)
    async with _makers(mm_inproc, devnet) as clients:
        pending = mm_inproc.submit(
            mm_inproc.hub.request_quotes(
                sell=weth, buy=usdc, side="exactIn", amount=E18, deadline_ms=200
            )
        )
        rfq = (await clients[0].recv("rfq"))["payload"]
        assert rfq["deadlineMs"] == 200
        assert await pending == []
        late = _quote(clients[0], rfq, 3_000 * 10**6, E18)
        assert (await _reply(clients[0], "quote", late.to_json()))["payload"][
            "code"
        ] == "RFQ_CLOSED"
        unknown = {**late.to_json(), "rfqId": "0x" + "ab" * 32}
        assert (await _reply(clients[0], "quote", unknown))["payload"]["code"] == "UNKNOWN_RFQ"


async def test_no_makers_means_no_wait(mm_inproc: InThreadApi, devnet: Devnet) -> None:
    cid = manifest_of(devnet).chains[0].chain_id
    weth, usdc = _assets(mm_inproc, cid)
    t0 = time.monotonic()
    assert (
        await mm_inproc.submit(
            mm_inproc.hub.request_quotes(sell=weth, buy=usdc, side="exactIn", amount=E18)
        )
        == []
    )
    assert time.monotonic() - t0 < 0.2


async def test_fill_and_settlement_notices_and_unsettled_fills_hold_funds(
    mm_inproc: InThreadApi, devnet: Devnet
) -> None:
    m = manifest_of(devnet)
    cid = m.chains[0].chain_id
    weth, usdc = _assets(mm_inproc, cid)
    maker = await MakerClient.open(ws_url(mm_inproc), m.makers[0].private_key)
    try:
        funds = next(c for c in maker.welcome["chains"] if c["chainId"] == cid)["funds"]["USDC"]
        have = min(int(funds["balance"]), int(funds["allowance"]))
        fill = MakerFill(
            order_id="0x" + "01" * 32,
            chain_id=cid,
            maker_token=usdc.address,
            maker_amount=have - 1_000 * 10**6,  # all but 1,000 USDC is now owed to a taker
            taker_token=weth.address,
            taker_amount=100 * E18,
            source_id=f"{cid}:mm:{maker.address.lower()}:USDC-WETH",
        )
        assert await mm_inproc.submit(mm_inproc.hub.notify_fill(maker.address, fill)) is True
        got = (await maker.recv("fill"))["payload"]
        assert got == fill.to_json()
        bids = {
            "chainId": cid,
            "base": "WETH",
            "quote": "USDC",
            "bids": [["3000", str(E18)]],
            "expiresAt": int(time.time()) + 30,
        }
        assert (await _reply(maker, "levels", bids))["payload"][
            "code"
        ] == "INSUFFICIENT_MAKER_BALANCE"

        settled = mm_inproc.hub.notify_settlement(
            maker.address,
            order_id=fill.order_id,
            chain_id=cid,
            status="settled",
            tx_hash="0x" + "aa" * 32,
            block_number=7,
        )
        assert await mm_inproc.submit(settled) is True
        note = (await maker.recv("settlement"))["payload"]
        assert (
            note["orderId"] == fill.order_id
            and note["status"] == "settled"
            and note["blockNumber"] == 7
        )
        # No real transfer happened on chain, so the funds are the maker's again.
        assert (await _reply(maker, "levels", bids))["type"] == "ack"
    finally:
        await maker.close()
    # A maker that is not connected gets nothing (the fill still counts against its funds).
    assert await mm_inproc.submit(mm_inproc.hub.notify_fill(m.makers[0].address, fill)) is False
    await mm_inproc.submit(
        mm_inproc.hub.notify_settlement(
            m.makers[0].address, order_id=fill.order_id, chain_id=cid, status="failed"
        )
    )


async def test_should_rfq_values_orders_in_usd(mm_inproc: InThreadApi, devnet: Devnet) -> None:
    cid = manifest_of(devnet).chains[0].chain_id
    weth, usdc = _assets(mm_inproc, cid)
    hub = mm_inproc.hub
    assert not hub.should_rfq(weth, 1_000 * E18)  # nobody to ask
    async with _makers(mm_inproc, devnet):
        assert hub.config.rfq_min_usd == 250_000
        assert hub.should_rfq(weth, 100 * E18)  # ~300k USD at the pools' price
        assert not hub.should_rfq(weth, 10 * E18)
        assert hub.should_rfq(usdc, 250_000 * 10**6)
        assert not hub.should_rfq(usdc, 249_999 * 10**6)


async def test_notices_published_by_other_processes_reach_the_maker(
    mm_inproc: InThreadApi, devnet: Devnet, redis_server: EmbeddedRedis
) -> None:
    m = manifest_of(devnet)
    cid = m.chains[2].chain_id
    weth, usdc = _assets(mm_inproc, cid)
    maker = await MakerClient.open(ws_url(mm_inproc), m.makers[1].private_key)
    pub = redis.Redis.from_url(redis_server.url)
    try:
        fill = MakerFill("0x" + "02" * 32, cid, weth.address, E18, usdc.address, 3_000 * 10**6)
        pub.publish(NOTICE_CHANNEL, "not json")  # dropped with a warning, the relay carries on
        pub.publish(NOTICE_CHANNEL, fill_notice(maker.address, fill))
        assert (await maker.recv("fill"))["payload"] == fill.to_json()
        done = settlement_notice(
            maker.address, order_id=fill.order_id, chain_id=cid, status="settled", batch_id="b-1"
        )
        pub.publish(NOTICE_CHANNEL, done)
        note = (await maker.recv("settlement"))["payload"]
        assert (note["orderId"], note["status"], note["batchId"]) == (
            fill.order_id,
            "settled",
            "b-1",
        )
    finally:
        pub.close()
        await maker.close()
