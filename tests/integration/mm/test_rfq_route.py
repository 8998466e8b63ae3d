"""A large order goes out as an RFQ; the demo maker's firm quote beats the book, becomes
the quote's route, the swap confirms it without re-pricing, and the maker gets a fill."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.client import ApiCallError, CrossbookClient
from scripts.devnet.devnet import Devnet
from scripts.redis_server import EmbeddedRedis
from tests.conftest import ApiProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def rfq_api(devnet: Devnet, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[ApiProcess]:
    proc = ApiProcess(devnet.manifest_path, redis_server.url, tmp_path, CROSSBOOK_RFQ_MIN_USD="10000", CROSSBOOK_RFQ_DEADLINE_MS="1500")
    try:
        yield proc
    finally:
        proc.stop()


def test_rfq_quote_beats_the_book_and_fills_the_maker(rfq_api: ApiProcess, devnet: Devnet, tmp_path: Path) -> None:
    m = devnet.manifest
    assert m is not None
    maker = m.makers[0]
    log = tmp_path / "maker.log"
    with open(log, "wb") as out:
        bot = subprocess.Popen(
            [sys.executable, "-m", "scripts.demo_maker", "--api", rfq_api.url, "--key", maker.private_key,
             "--manifest", str(devnet.manifest_path), "--spread-bps", "5", "--refresh", "1", "--duration", "40"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        c = CrossbookClient(rfq_api.url, timeout=20)
        trader = m.traders[0]
        chain = m.chains[1].chain_id
        # Until the bot has logged in and read its mid prices, quotes come from the book.
        deadline = time.monotonic() + 20
        q = c.quote(chain, "WETH", chain, "USDC", taker=trader.address, sell_amount=60 * 10**18)
        while not q.get("rfq") and time.monotonic() < deadline:
            time.sleep(0.5)
            q = c.quote(chain, "WETH", chain, "USDC", taker=trader.address, sell_amount=60 * 10**18)
        assert q.get("rfq"), (q["route"], log.read_text()[-2000:])
        assert [leg["kind"] for leg in q["route"]] == ["rfq"]
        assert q["rfq"]["maker"] == maker.address
        receipt = c.swap(q, trader.private_key)
        assert receipt["buyAmount"] == q["buyAmount"]
        # The maker's quote is firm once: a second order on the same quote is refused.
        with pytest.raises(ApiCallError) as again:
            c.swap(q, trader.private_key, nonce=int(time.time() * 1000))
        assert again.value.code == "QUOTE_USED"
        deadline = time.monotonic() + 5
        while receipt["orderId"] not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "fill" in log.read_text() and receipt["orderId"] in log.read_text(), log.read_text()[-2000:]
        status = c.order(receipt["orderId"])
        assert status["state"] == "confirmed"
    finally:
        bot.terminate()
        bot.wait(15)

