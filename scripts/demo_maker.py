"""Demo market maker: logs in over `/v1/ws/mm`, streams ladders, answers RFQs.

    python -m scripts.demo_maker --api http://127.0.0.1:8000 [--key 0x…] [--duration 30]

It reads each chain's mid price from the manifest's constant-product pools over JSON-RPC
(`getReserves`, the deepest pool per pair), quotes `--levels` levels a side around it with
`--spread-bps` between best bid and best ask and `--step-bps` between levels, each worth
`--level-notional` of the quote token, and refreshes before the levels expire. It keeps
what it offers within half of the funds the server reports at login. RFQs get a firm
EIP-712 `MakerQuote` at the same prices; fills and settlements are logged.

`MakerClient` is the reusable part: connect, sign the challenge, send and receive
envelopes, answer the server's pings. The tests drive the protocol through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.pools import GET_RESERVES, decode_reserves
from app.domain.eip712 import Domain, address_of_key, sign_digest
from app.domain.maker_messages import MakerQuote, login_digest
from app.manifest import ChainInfo, Manifest
from app.settings import get_settings

__all__ = ["DemoMaker", "MakerClient", "MakerClosed", "main"]

log = logging.getLogger("crossbook.demo_maker")

# Every network step is bounded, so a stalled server or RPC node never keeps the bot (or
# Ctrl-C) waiting: seconds for the WebSocket handshake, one send, the close handshake (a
# stopping bot waits no longer for the server), and one JSON-RPC connect/read/write.
OPEN_SECONDS = 10.0
SEND_SECONDS = 10.0
CLOSE_SECONDS = 3.0
RPC_SECONDS = 5.0


class MakerClosed(ConnectionError):
    """The server closed the socket (its close code is on the client)."""


class MakerClient:
    """One market-maker connection: envelopes in and out, pings answered in the background."""

    def __init__(self, ws: ClientConnection, key: str, *, auto_pong: bool = True) -> None:
        self.ws = ws
        self.key = key
        self.address = address_of_key(key)
        self.auto_pong = auto_pong
        self.challenge: dict[str, Any] = {}
        self.welcome: dict[str, Any] = {}
        self.received: list[dict[str, Any]] = []  # everything, in order (pings included)
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, key: str, *, login: bool = True, auto_pong: bool = True
    ) -> MakerClient:
        ws = await connect(
            url, max_size=2**20, open_timeout=OPEN_SECONDS, close_timeout=CLOSE_SECONDS
        )
        client = cls(ws, key, auto_pong=auto_pong)
        client.challenge = (await client.recv("challenge"))["payload"]
        if login:
            await client.login()
        return client

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                self.received.append(msg)
                if msg.get("type") == "ping" and self.auto_pong:
                    with contextlib.suppress(ConnectionClosed, TimeoutError):
                        await self.send("pong", {})
                    continue
                await self._queue.put(msg)
        except ConnectionClosed:
            pass
        finally:
            await self._queue.put(None)

    async def send(self, typ: str, payload: dict[str, Any], *, id: str | None = None) -> str:
        mid = id or secrets.token_hex(6)
        doc = {"type": typ, "id": mid, "ts": int(time.time() * 1000), "payload": payload}
        async with asyncio.timeout(SEND_SECONDS):  # a server that stopped reading
            await self.ws.send(json.dumps(doc))
        return mid

    async def recv(self, *types: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of one of `types` (any type when none); others are skipped.

        A cancelled `recv` always ends cancelled. (Not `asyncio.wait_for`: on Python 3.11 it
        returns a message that arrives as the caller is cancelled and drops the
        cancellation, CPython gh-86296; a stopping bot's handler then waited on.)"""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await self._queue.get()
                    if msg is None:
                        self._queue.put_nowait(None)  # stay closed for later calls
                        raise MakerClosed(f"closed with {self.close_code}")
                    if not types or msg["type"] in types:
                        return msg
        except TimeoutError:
            raise TimeoutError(f"no {types or 'message'} within {timeout}s") from None

    def login_payload(self, scheme: str = "eip191", key: str | None = None) -> dict[str, Any]:
        c = self.challenge
        d = c["eip712"]["domain"]
        domain = Domain(d["chainId"], d["verifyingContract"], d["name"], d["version"])
        digest = login_digest(scheme, c["domain"], c["nonce"], c["expiresAt"], domain)
        signer = key or self.key
        return {
            "address": address_of_key(signer),
            "scheme": scheme,
            "nonce": c["nonce"],
            "signature": sign_digest(signer, digest),
        }

    async def login(self, scheme: str = "eip191") -> dict[str, Any]:
        ref = await self.send("login", self.login_payload(scheme))
        msg = await self.recv("welcome", "error")
        if msg["type"] == "error":
            raise PermissionError(f"login refused: {msg['payload']}")
        assert msg["payload"]["ref"] == ref
        self.welcome = msg["payload"]
        return self.welcome

    def sign_quote(self, quote: MakerQuote, domain: dict[str, Any]) -> MakerQuote:
        d = Domain(
            domain["chainId"], domain["verifyingContract"], domain["name"], domain["version"]
        )
        return replace(quote, signature=sign_digest(self.key, quote.digest(d)))

    async def close(self) -> None:
        """The close handshake (at most `CLOSE_SECONDS`, then the connection is dropped)."""
        await self.ws.close()
        # The reader ends with the connection. `wait`, not `await`: cancelling the caller
        # must cancel the caller (suppressing CancelledError here swallowed it).
        await asyncio.wait({self._reader})


# -- pricing ---------------------------------------------------------------------------------


def price_str(p: Fraction, digits: int = 12) -> str:
    """A positive fraction as a decimal string with `digits` decimals (rounded down)."""
    n = p.numerator * 10**digits // p.denominator
    whole, frac = divmod(n, 10**digits)
    return f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".")


async def pool_mids(
    http: httpx.AsyncClient, chain: ChainInfo, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Fraction]:
    """Quote per base (whole units) from the deepest constant-product pool of each pair."""
    pools = [p for p in chain.pools if p.kind == "constant_product"]
    batch = [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_call",
            "params": [{"to": p.address, "data": GET_RESERVES}, "latest"],
        }
        for i, p in enumerate(pools)
    ]
    if not batch:
        return {}
    replies = (await http.post(chain.rpc_url, json=batch)).json()
    reserves = {r["id"]: decode_reserves(r["result"]) for r in replies if "result" in r}
    out: dict[tuple[str, str], Fraction] = {}
    for base, quote in pairs:
        best: tuple[int, Fraction] | None = None
        for i, p in enumerate(pools):
            if {p.symbol0, p.symbol1} != {base, quote} or i not in reserves:
                continue
            r = dict(zip((p.symbol0, p.symbol1), reserves[i], strict=True))
            if r[base] == 0:
                continue
            bd, qd = chain.tokens[base].decimals, chain.tokens[quote].decimals
            mid = Fraction(r[quote] * 10**bd, r[base] * 10**qd)
            if best is None or r[quote] > best[0]:
                best = (r[quote], mid)
        if best is not None:
            out[(base, quote)] = best[1]
    return out


@dataclass(frozen=True, slots=True)
class Quoting:
    spread_bps: int = 20
    step_bps: int = 10
    levels: int = 5
    level_notional: int = 20_000  # quote-token whole units per level
    ttl: int = 20  # seconds a ladder stays firm
    refresh: float = 5.0  # seconds between ladder refreshes (< ttl)
    funds_fraction: Fraction = Fraction(1, 2)  # of balance/allowance the bot commits


def ladder(
    mid: Fraction, q: Quoting, base_decimals: int
) -> tuple[list[list[str]], list[list[str]]]:
    half = Fraction(q.spread_bps, 20_000)
    bids: list[list[str]] = []
    asks: list[list[str]] = []
    for k in range(q.levels):
        off = half + Fraction(k * q.step_bps, 10_000)
        bid, ask = mid * (1 - off), mid * (1 + off)
        for px, side in ((bid, bids), (ask, asks)):
            size = int(q.level_notional * 10**base_decimals / px)
            if size > 0:
                side.append([price_str(px), str(size)])
    return bids, asks


def scale_to_funds(
    bids: list[list[str]],
    asks: list[list[str]],
    base_funds: int,
    quote_funds: int,
    bd: int,
    qd: int,
) -> tuple[list[list[str]], list[list[str]]]:
    """Shrink sizes proportionally so the whole ladder fits the given funds (base units)."""
    ask_need = sum(int(s) for _, s in asks)
    bid_need = sum(int(Fraction(p) * int(s) * 10**qd / 10**bd) + 1 for p, s in bids)
    fa = min(Fraction(1), Fraction(base_funds, ask_need)) if ask_need else Fraction(1)
    fb = min(Fraction(1), Fraction(quote_funds, bid_need)) if bid_need else Fraction(1)
    return (
        [[p, str(int(int(s) * fb))] for p, s in bids if int(int(s) * fb) > 0],
        [[p, str(int(int(s) * fa))] for p, s in asks if int(int(s) * fa) > 0],
    )


class DemoMaker:
    def __init__(
        self,
        api: str,
        key: str,
        manifest: Manifest,
        pairs: Sequence[tuple[str, str]],
        quoting: Quoting,
    ) -> None:
        self.url = (
            api.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/v1/ws/mm"
        )
        self.key = key
        self.manifest = manifest
        self.pairs = list(pairs)
        self.q = quoting
        self.mids: dict[int, dict[tuple[str, str], Fraction]] = {}
        self.posted = 0
        self._next_send = 0.0
        self.quoted = 0
        self.stopping = False  # set on Ctrl-C or SIGTERM: no new refresh starts
        self.closing = False  # in the bounded close: not to be cancelled again

    async def run(self, duration: float = 0.0) -> None:
        client = await MakerClient.open(self.url, self.key)
        log.info("logged in as %s", client.address)
        stop_at = time.monotonic() + duration if duration > 0 else float("inf")
        handler = asyncio.create_task(self._handle(client))
        try:
            async with httpx.AsyncClient(timeout=RPC_SECONDS) as http:
                while time.monotonic() < stop_at and not self.stopping:
                    await self._refresh(client, http)
                    await asyncio.sleep(min(self.q.refresh, max(stop_at - time.monotonic(), 0)))
        finally:
            self.closing = True
            # Bounded, whatever the handler or the server is doing: Ctrl-C ends the bot.
            handler.cancel()
            await asyncio.wait({handler}, timeout=CLOSE_SECONDS)
            if handler.done() and not handler.cancelled():
                err = handler.exception()
                if err is not None and not isinstance(err, MakerClosed):
                    log.error("message handler failed: %r", err)
            with contextlib.suppress(TimeoutError, MakerClosed, OSError):
                async with asyncio.timeout(CLOSE_SECONDS):
                    await client.close()

    def _funds(self, client: MakerClient, chain_id: int, symbol: str) -> int:
        for c in client.welcome.get("chains", []):
            if c["chainId"] == chain_id:
                f = c["funds"].get(symbol, {"balance": "0", "allowance": "0"})
                return int(min(int(f["balance"]), int(f["allowance"])) * self.q.funds_fraction)
        return 0

    async def _refresh(self, client: MakerClient, http: httpx.AsyncClient) -> None:
        for chain in self.manifest.chains:
            try:
                self.mids[chain.chain_id] = await pool_mids(http, chain, self.pairs)
            except (httpx.HTTPError, ValueError, KeyError) as e:
                log.warning("chain %s: no mid prices (%s)", chain.chain_id, e)
                continue
            # Pairs sharing a token share its funds: split them evenly.
            shares: dict[str, int] = {}
            for pair in self.mids[chain.chain_id]:
                for s in pair:
                    shares[s] = shares.get(s, 0) + 1
            for (base, quote), mid in self.mids[chain.chain_id].items():
                bd, qd = chain.tokens[base].decimals, chain.tokens[quote].decimals
                bids, asks = ladder(mid, self.q, bd)
                bids, asks = scale_to_funds(
                    bids,
                    asks,
                    self._funds(client, chain.chain_id, base) // shares[base],
                    self._funds(client, chain.chain_id, quote) // shares[quote],
                    bd,
                    qd,
                )
                payload = {
                    "chainId": chain.chain_id,
                    "base": base,
                    "quote": quote,
                    "bids": bids,
                    "asks": asks,
                    "expiresAt": int(time.time()) + self.q.ttl,
                }
                await self._pace(client)
                await client.send("levels", payload)
                self.posted += 1

    async def _pace(self, client: MakerClient) -> None:
        """Stay under the server's `levels` rate (with a margin), so no update is refused."""
        rate = float(client.welcome.get("limits", {}).get("levelsPerSecond", 10)) * 0.8
        now = time.monotonic()
        if self._next_send > now:
            await asyncio.sleep(self._next_send - now)
        self._next_send = max(now, self._next_send) + 1 / rate

    async def _handle(self, client: MakerClient) -> None:
        while True:
            try:
                msg = await client.recv(timeout=3600)
            except TimeoutError:  # a quiet hour (pings are answered by the reader)
                continue
            typ, p = msg["type"], msg["payload"]
            if typ == "rfq":
                await self._answer(client, p)
            elif typ in ("fill", "settlement"):
                log.info("%s: %s", typ, json.dumps(p))
            elif typ == "error":
                log.warning("server error: %s %s", p.get("code"), p.get("message"))

    async def _answer(self, client: MakerClient, rfq: dict[str, Any]) -> None:
        sell, buy, exact_in = rfq["sellSymbol"], rfq["buySymbol"], rfq["side"] == "exactIn"
        for leg in rfq["legs"]:
            cid = leg["chainId"]
            chain = self.manifest.chain(cid)
            mids = self.mids.get(cid, {})
            half = Fraction(self.q.spread_bps, 20_000)
            if (sell, buy) in mids:  # the taker sells base: the maker buys at its bid
                px = mids[(sell, buy)] * (1 - half)
                rate = px * Fraction(
                    10 ** chain.tokens[buy].decimals, 10 ** chain.tokens[sell].decimals
                )
            elif (buy, sell) in mids:  # the taker buys base: the maker sells at its ask
                px = mids[(buy, sell)] * (1 + half)
                rate = (
                    1
                    / px
                    * Fraction(10 ** chain.tokens[buy].decimals, 10 ** chain.tokens[sell].decimals)
                )
            else:
                continue
            amount = int(leg["amount"])
            # rate: maker-token base units per taker-token base unit; round for the maker.
            if exact_in:
                taker_amount, maker_amount = amount, int(amount * rate)
            else:
                maker_amount = amount
                taker_amount = -(-maker_amount * rate.denominator // rate.numerator)
            if maker_amount <= 0 or maker_amount > self._funds(client, cid, buy):
                continue
            quote = MakerQuote(
                rfq_id=rfq["rfqId"],
                chain_id=cid,
                maker=client.address,
                maker_token=leg["makerToken"],
                maker_amount=maker_amount,
                taker_token=leg["takerToken"],
                taker_amount=taker_amount,
                expires_at=min(
                    max(rfq["minExpiresAt"], int(time.time()) + 10), rfq["maxExpiresAt"]
                ),
            )
            signed = client.sign_quote(quote, leg["domain"])
            await client.send("quote", signed.to_json())
            self.quoted += 1
            return
        await client.send("decline", {"rfqId": rfq["rfqId"], "reason": "no price"})


async def _until_stopped(bot: DemoMaker, duration: float) -> None:
    """Run the bot until its duration ends or Ctrl-C / SIGTERM. A stop cancels the run and
    cancels it again every half second until it reaches its (bounded) close: a library
    that swallows one cancellation (a read finishing as it is cancelled) must not keep the
    bot running. A second Ctrl-C exits at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        if not task.done() and not bot.closing:
            task.cancel()
            loop.call_later(0.5, cancel)

    def stop() -> None:
        if bot.stopping:
            os._exit(130)
        bot.stopping = True
        cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await bot.run(duration)
    except asyncio.CancelledError:
        if not bot.stopping:
            raise


def _own_signals() -> None:
    """Ctrl-C and SIGTERM reach the bot whatever its parent left behind: an ignored
    SIGINT is inherited across exec (and Python then installs no KeyboardInterrupt, nor
    asyncio its Ctrl-C handler), and so is a blocked signal mask. Either would leave a
    bot that Ctrl-C cannot stop (seen under the test suite's workers)."""
    wanted = {signal.SIGINT, signal.SIGTERM}
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted) & wanted
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if blocked or ignored:
        log.warning("signals from the parent restored (blocked: %s, SIGINT ignored: %s)", sorted(blocked), ignored)


def _pairs(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        base, _, quote = item.strip().upper().partition("/")
        if not base or not quote:
            raise argparse.ArgumentTypeError(f"pair {item!r} is not BASE/QUOTE")
        out.append((base, quote))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m scripts.demo_maker", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--api", default="http://127.0.0.1:8000", help="the API's base URL")
    ap.add_argument("--key", help="maker private key (default: the manifest's first maker)")
    ap.add_argument(
        "--manifest", type=Path, default=None, help="devnet manifest (default: settings)"
    )
    ap.add_argument(
        "--pairs", type=_pairs, default=_pairs("WETH/USDC,WBTC/USDC"), help="BASE/QUOTE,…"
    )
    ap.add_argument("--spread-bps", type=int, default=20)
    ap.add_argument("--step-bps", type=int, default=10)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument(
        "--level-notional", type=int, default=20_000, help="quote-token units per level"
    )
    ap.add_argument("--ttl", type=int, default=20, help="seconds each ladder stays firm")
    ap.add_argument("--refresh", type=float, default=5.0, help="seconds between refreshes")
    ap.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: run)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per RPC call otherwise
    manifest = Manifest.load(args.manifest or get_settings().manifest)
    key = args.key or manifest.makers[0].private_key
    quoting = Quoting(
        args.spread_bps,
        args.step_bps,
        args.levels,
        args.level_notional,
        args.ttl,
        min(args.refresh, args.ttl / 2),
    )
    bot = DemoMaker(args.api, key, manifest, args.pairs, quoting)
    _own_signals()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_until_stopped(bot, args.duration))
    log.info("done: %d ladders posted, %d RFQ quotes", bot.posted, bot.quoted)


if __name__ == "__main__":
    main()
