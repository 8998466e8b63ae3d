"""MakerHub: the market makers' side of the service — sessions, login, ladders, RFQ, notices.

One `MakerSession` per WebSocket. The hub sends a `challenge`, accepts one signed `login`
from an allowlisted maker (anything else first: `error`, then close), and from then on:

- `levels` become `LadderSource`s in the book through `BookService`; each is checked
  against what the maker can actually pay on that chain — min(balance, allowance to the
  vault) minus fills not yet settled, as the chain adapters report them — and trimmed
  whenever that drops, so the book never offers more than the maker holds;
- `request_quotes()` broadcasts an `rfq` and collects signed `MakerQuote`s or `decline`s
  until a short deadline; `notify_fill()` / `notify_settlement()` send the notices;
- the hub pings every `heartbeat` seconds; a socket silent for two intervals is closed.
  Closing (or a newer login of the same maker) pulls all of that maker's levels at once.

Rate limits are per connection: a token bucket for `levels`/`cancel` and one for all
messages; going over either starts a cool-down during which messages get RATE_LIMITED.
Message parsing and validation live in `app.domain.maker_messages` (pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from app.domain.eip712 import Domain, SignatureError, recover
from app.domain.maker_messages import (
    MAKER_LOGIN,
    Envelope,
    LadderUpdate,
    MakerQuote,
    MmError,
    ProtocolError,
    RfqSide,
    ask_cost,
    bid_cost,
    login_digest,
    login_text,
    message,
    parse_envelope,
    parse_ladder,
    parse_quote,
    trim_asks,
    trim_bids,
)
from app.domain.sources import LadderSource
from app.domain.types import Asset, AssetPair, AssetSymbol, ChainId
from app.manifest import Manifest
from app.services.book_service import BookService
from app.settings import Settings

__all__ = [
    "CLOSE_AUTH",
    "CLOSE_HEARTBEAT",
    "CLOSE_SUPERSEDED",
    "NOTICE_CHANNEL",
    "MakerFill",
    "MakerHub",
    "MakerHubConfig",
    "MakerQuote",
    "MakerSession",
    "fill_notice",
    "settlement_notice",
]

log = logging.getLogger("crossbook.makers")

CLOSE_AUTH = 4401  # login failed, timed out, or a message came before it
CLOSE_HEARTBEAT = 4408  # two heartbeat intervals without a message
CLOSE_SUPERSEDED = 4409  # the same maker logged in on another connection
STABLES = frozenset({"USDC", "USDT", "DAI"})
NOTICE_CHANNEL = "crossbook:mm:notices"  # Redis pub/sub: notices from other processes
PENDING_FILL_TTL = 3600.0  # seconds an unsettled fill may hold a maker's funds

Sender = Callable[[str], Awaitable[None]]
Closer = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MakerHubConfig:
    allowlist: frozenset[str]  # lower-case addresses
    login_domain: str = "crossbook"
    challenge_ttl: float = 30.0
    heartbeat: float = 5.0
    levels_per_second: float = 10.0
    messages_per_second: float = 100.0
    cooldown: float = 1.0
    max_levels: int = 20
    max_expiry: int = 60
    max_message_bytes: int = 64 * 1024
    rfq_deadline_ms: int = 250
    rfq_min_validity: int = 5
    rfq_min_usd: float = 250_000.0

    @classmethod
    def from_settings(cls, settings: Settings, manifest: Manifest) -> MakerHubConfig:
        raw = settings.maker_allowlist
        allow = [a.strip() for a in raw.split(",")] if raw else [m.address for m in manifest.makers]
        return cls(
            allowlist=frozenset(a.lower() for a in allow if a),
            login_domain=settings.mm_login_domain,
            challenge_ttl=settings.mm_challenge_ttl_seconds,
            heartbeat=settings.mm_heartbeat_seconds,
            levels_per_second=settings.mm_levels_per_second,
            messages_per_second=settings.mm_messages_per_second,
            cooldown=settings.mm_cooldown_seconds,
            max_levels=settings.mm_max_levels,
            max_expiry=settings.mm_max_expiry_seconds,
            rfq_deadline_ms=settings.rfq_deadline_ms,
            rfq_min_validity=settings.rfq_min_validity_seconds,
            rfq_min_usd=settings.rfq_min_usd,
        )


@dataclass(frozen=True, slots=True)
class MakerFill:
    """A confirmed trade against a maker: it pays `maker_amount` of `maker_token` and
    receives `taker_amount` of `taker_token` on `chain_id` once the order settles."""

    order_id: str
    chain_id: int
    maker_token: str
    maker_amount: int
    taker_token: str
    taker_amount: int
    source_id: str = ""  # the ladder's source id, or "" for an RFQ fill
    rfq_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "chainId": self.chain_id,
            "makerToken": self.maker_token,
            "makerAmount": str(self.maker_amount),
            "takerToken": self.taker_token,
            "takerAmount": str(self.taker_amount),
            "sourceId": self.source_id,
            "rfqId": self.rfq_id,
        }


class _Bucket:
    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self.tokens = self.burst
        self.last = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class MakerSession:
    """One connection; `maker` is set once its login verified."""

    def __init__(
        self, sid: str, send: Sender, close: Closer, config: MakerHubConfig, now: float, wall: float
    ) -> None:
        self.id = sid
        self._send = send
        self._close = close
        self.nonce = "0x" + secrets.token_bytes(32).hex()
        self.challenge_expires = int(wall + config.challenge_ttl)
        self.maker: str | None = None  # checksummed
        self.last_seen = now
        self.next_ping = now + config.heartbeat
        self.levels_bucket = _Bucket(config.levels_per_second, now)
        self.messages_bucket = _Bucket(config.messages_per_second, now)
        self.cooldown_until = 0.0
        self.closed = False
        self._lock = asyncio.Lock()

    @property
    def key(self) -> str:
        return (self.maker or "").lower()

    async def send(self, doc: dict[str, Any]) -> bool:
        if self.closed:
            return False
        try:
            async with self._lock:  # one writer at a time: pings, notices and replies interleave
                await self._send(json.dumps(doc, separators=(",", ":")))
            return True
        except Exception:  # the socket went away under us; the route's finally cleans up
            return False

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self._close(code, reason)


@dataclass(frozen=True, slots=True)
class _Leg:
    chain_id: int
    taker_asset: Asset  # what the taker sells (the maker receives)
    maker_asset: Asset  # what the taker buys (the maker pays)
    amount: int  # of taker_asset (exact in) or maker_asset (exact out)


@dataclass(slots=True)
class _OpenRfq:
    id: str
    side: RfqSide
    legs: dict[int, _Leg]
    deadline: float  # monotonic
    asked: set[str]
    min_expiry: int
    max_expiry: int
    answered: set[str] = field(default_factory=set)
    quotes: list[MakerQuote] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class MakerHub:
    def __init__(
        self,
        manifest: Manifest,
        books: BookService,
        config: MakerHubConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifest = manifest
        self.books = books
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.sessions: dict[str, MakerSession] = {}  # logged-in, by lower-case maker
        self._open: set[MakerSession] = set()
        self._ladders: dict[str, dict[str, LadderSource]] = {}  # maker -> source id -> as posted
        # What makers owe for fills not yet settled: (chain, token, maker) -> order -> amount.
        self._pending: dict[tuple[int, str, str], dict[str, int]] = {}
        self._pending_since: dict[str, float] = {}  # order -> monotonic time of its fill
        self._rfqs: dict[str, _OpenRfq] = {}
        self._closed_rfqs: OrderedDict[str, None] = OrderedDict()
        self._usd_prices: dict[tuple[int, str], float] = {}  # (book version, symbol) -> USDC
        self._symbols = {c.chain_id: frozenset(c.tokens) for c in manifest.chains}
        first = manifest.chains[0]
        self.login_domain = Domain(
            first.chain_id, first.contracts.get("settlement", first.inventory)
        )
        self._tasks: list[asyncio.Task[None]] = []
        books.balance_listeners.append(self._on_balances)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, redis: Any = None) -> None:
        """Start the heartbeat/expiry ticker and, given a Redis client, relay the notices
        other processes publish on `NOTICE_CHANNEL` (settlement runs in the workers)."""
        self._tasks = [asyncio.create_task(self._run(), name="maker-hub")]
        if redis is not None:
            self._tasks.append(asyncio.create_task(self._relay(redis), name="maker-notices"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for s in list(self._open):
            await self._drop(s, 1001, "server shutting down")

    @property
    def makers(self) -> tuple[str, ...]:
        """Logged-in makers (checksummed)."""
        return tuple(s.maker for s in self.sessions.values() if s.maker)

    async def connect(self, send: Sender, close: Closer) -> MakerSession:
        s = MakerSession(
            secrets.token_hex(8), send, close, self.config, self.monotonic(), self.clock()
        )
        self._open.add(s)
        await self._emit(
            s,
            "challenge",
            {
                "nonce": s.nonce,
                "expiresAt": s.challenge_expires,
                "domain": self.config.login_domain,
                "message": login_text(self.config.login_domain, s.nonce, s.challenge_expires),
                "eip712": {
                    "domain": self.login_domain.to_json(),
                    "primaryType": MAKER_LOGIN.name,
                    "types": {MAKER_LOGIN.name: MAKER_LOGIN.to_eip712_types()},
                    "message": {
                        "domain": self.config.login_domain,
                        "nonce": s.nonce,
                        "expiresAt": s.challenge_expires,
                    },
                },
            },
        )
        return s

    async def disconnect(self, s: MakerSession) -> None:
        """The socket closed (or the route ended): forget the session and its levels."""
        await self._drop(s, 1000, "")

    async def receive(self, s: MakerSession, text: str | bytes) -> None:
        now = self.monotonic()
        s.last_seen = now
        if len(text) > self.config.max_message_bytes:
            await self._fail(
                s,
                None,
                ProtocolError(
                    MmError.MESSAGE_TOO_LARGE, f"over {self.config.max_message_bytes} bytes"
                ),
            )
            return
        try:
            env = parse_envelope(text)
        except ProtocolError as e:
            await self._fail(s, None, e)
            return
        if s.maker is None:
            await self._login(s, env)
            return
        if env.type in ("ping", "pong"):
            # Heartbeats pass the cool-down (a throttled maker stays connected), but a
            # flood of pings is not answered beyond the message rate.
            if env.type == "ping" and s.messages_bucket.take(now):
                await self._emit(s, "pong", {"ref": env.id})
            return
        if now < s.cooldown_until:
            await self._limited(s, env, now)
            return
        if not s.messages_bucket.take(now) or (
            env.type in ("levels", "cancel") and not s.levels_bucket.take(now)
        ):
            s.cooldown_until = now + self.config.cooldown
            await self._limited(s, env, now)
            return
        handler = {
            "levels": self._levels,
            "cancel": self._cancel,
            "quote": self._quote,
            "decline": self._decline,
            "login": self._relogin,
        }.get(env.type)
        try:
            if handler is None:
                raise ProtocolError(MmError.UNKNOWN_TYPE, f"unknown message type {env.type!r}")
            await handler(s, env)
        except ProtocolError as e:
            await self._fail(s, env, e)
        except Exception:
            # A bug must not take the maker's other ladders down with the socket.
            log.exception("maker message failed", extra={"maker": s.maker, "type": env.type})
            await self._fail(s, env, ProtocolError(MmError.INTERNAL, "internal error"))

    # -- login -----------------------------------------------------------------------------

    async def _login(self, s: MakerSession, env: Envelope) -> None:
        try:
            maker = self._verify_login(s, env)
        except ProtocolError as e:
            await self._fail(s, env, e)
            return
        s.nonce = ""  # single use
        s.maker = maker
        old = self.sessions.get(s.key)
        if old is not None and old is not s:
            await self._drop(old, CLOSE_SUPERSEDED, MmError.SUPERSEDED.value)
        self.sessions[s.key] = s
        funds = await self._track(maker)
        log.info("maker logged in", extra={"maker": maker, "session": s.id})
        await self._emit(
            s,
            "welcome",
            {
                "ref": env.id,
                "maker": maker,
                "heartbeatSeconds": self.config.heartbeat,
                "limits": {
                    "levelsPerSecond": self.config.levels_per_second,
                    "messagesPerSecond": self.config.messages_per_second,
                    "cooldownSeconds": self.config.cooldown,
                    "maxLevels": self.config.max_levels,
                    "maxExpirySeconds": self.config.max_expiry,
                },
                "chains": [
                    {
                        "chainId": c.chain_id,
                        "vault": c.inventory,
                        "domain": self._domain(c.chain_id).to_json(),
                        "tokens": {
                            t.symbol: {"address": t.address, "decimals": t.decimals}
                            for t in c.tokens.values()
                        },
                        "funds": funds.get(c.chain_id, {}),
                    }
                    for c in self.manifest.chains
                ],
            },
        )

    def _verify_login(self, s: MakerSession, env: Envelope) -> str:
        if env.type != "login":
            raise ProtocolError(MmError.AUTH_REQUIRED, "log in first")
        p = env.payload
        address, sig, scheme = p.get("address"), p.get("signature"), p.get("scheme", "eip191")
        if not isinstance(address, str) or not isinstance(sig, str) or not isinstance(scheme, str):
            raise ProtocolError(MmError.BAD_MESSAGE, "login needs address, signature and scheme")
        if not s.nonce or p.get("nonce") != s.nonce:
            raise ProtocolError(
                MmError.CHALLENGE_MISMATCH, "nonce is not this connection's challenge"
            )
        if self.clock() >= s.challenge_expires:
            raise ProtocolError(MmError.CHALLENGE_EXPIRED, "the challenge expired; reconnect")
        digest = login_digest(
            scheme, self.config.login_domain, s.nonce, s.challenge_expires, self.login_domain
        )
        try:
            signer = recover(digest, sig)
        except SignatureError as e:
            raise ProtocolError(MmError.BAD_SIGNATURE, str(e)) from None
        if signer.lower() != address.lower():
            raise ProtocolError(MmError.BAD_SIGNATURE, "signature is not the address's")
        if signer.lower() not in self.config.allowlist:
            raise ProtocolError(MmError.UNKNOWN_MAKER, f"{signer} is not an allowed market maker")
        return signer

    async def _relogin(self, s: MakerSession, env: Envelope) -> None:
        raise ProtocolError(MmError.ALREADY_LOGGED_IN, "this connection is logged in")

    async def _track(self, maker: str) -> dict[int, dict[str, dict[str, str]]]:
        """Have every chain's adapter follow the maker; its funds as they stand now."""

        async def one(chain_id: int) -> None:
            token = next(iter(self.manifest.chain(chain_id).tokens.values())).address
            await asyncio.wait_for(self.books.funds(chain_id, token, maker), 5.0)

        results = await asyncio.gather(
            *(one(c) for c in self.manifest.chain_ids), return_exceptions=True
        )
        out: dict[int, dict[str, dict[str, str]]] = {}
        for cid, r in zip(self.manifest.chain_ids, results, strict=True):
            if isinstance(r, BaseException):
                log.warning(
                    "could not read maker funds",
                    extra={"chainId": cid, "maker": maker, "error": repr(r)},
                )
                continue
            out[cid] = {
                t.symbol: {
                    "balance": str(
                        self.books.balances.get((cid, t.address.lower(), maker.lower()), 0)
                    ),
                    "allowance": str(
                        self.books.allowances.get((cid, t.address.lower(), maker.lower()), 0)
                    ),
                }
                for t in self.manifest.chain(cid).tokens.values()
            }
        return out

    # -- levels ----------------------------------------------------------------------------

    def capacity(self, maker: str, chain_id: int, token: str) -> int:
        """What the maker can still pay in `token` on `chain_id` (0 when unknown)."""
        key = (chain_id, token.lower(), maker.lower())
        held = min(self.books.balances.get(key, 0), self.books.allowances.get(key, 0))
        return max(held - sum(self._pending.get(key, {}).values()), 0)

    @staticmethod
    def source_id(maker: str, chain_id: int, base: str, quote: str) -> str:
        pair = AssetPair.of(base, quote)
        return f"{chain_id}:mm:{maker.lower()}:{pair.base}-{pair.quote}"

    async def _levels(self, s: MakerSession, env: Envelope) -> None:
        now = int(self.clock())
        upd = parse_ladder(
            env.payload,
            tokens=self._symbols,
            now=now,
            max_levels=self.config.max_levels,
            max_expiry_seconds=self.config.max_expiry,
        )
        ladder = self._ladder(s.key, upd)
        posted = {
            k: v
            for k, v in self._ladders.get(s.key, {}).items()
            if k != ladder.id and v.chain == upd.chain_id
        }
        need: dict[str, int] = {}
        for lad in (*posted.values(), ladder):
            for token, amount in _commitments(lad.live(now)).items():
                need[token] = need.get(token, 0) + amount
        for token, amount in sorted(need.items()):
            have = self.capacity(s.key, upd.chain_id, token)
            if amount > have:
                sym = self.manifest.chain(upd.chain_id).token_by_address(token)
                raise ProtocolError(
                    MmError.INSUFFICIENT_MAKER_BALANCE,
                    f"levels on chain {upd.chain_id} need {amount} {sym.symbol if sym else token}, "
                    f"the maker can pay {have} (balance and allowance to the vault, less unsettled fills)",
                    token=token,
                    needed=str(amount),
                    available=str(have),
                )
        mine = self._ladders.setdefault(s.key, {})
        if ladder.bids or ladder.asks:
            mine[ladder.id] = ladder
            self.books.set_maker_levels(ladder)
        else:
            mine.pop(ladder.id, None)
            self.books.remove_maker_levels(ladder.id)
        await self._emit(
            s,
            "ack",
            {
                "ref": env.id,
                "sourceId": ladder.id,
                "bids": len(ladder.bids),
                "asks": len(ladder.asks),
                "expiresAt": upd.expires_at,
                "bookVersion": self.books.book.version,
            },
        )

    def _ladder(self, maker: str, upd: LadderUpdate) -> LadderSource:
        book, cid = self.books.book, ChainId(upd.chain_id)
        return LadderSource(
            id=self.source_id(maker, upd.chain_id, upd.base, upd.quote),
            chain=cid,
            base=book.asset(upd.base, cid),
            quote=book.asset(upd.quote, cid),
            bids=upd.bids,
            asks=upd.asks,
            maker=maker,
        )

    async def _cancel(self, s: MakerSession, env: Envelope) -> None:
        """Pull one pair on one chain (`chainId`, `base`, `quote`), or everything."""
        p = env.payload
        mine = self._ladders.get(s.key, {})
        if "chainId" in p:
            cid, base, quote = p.get("chainId"), p.get("base"), p.get("quote")
            if not isinstance(cid, int) or not isinstance(base, str) or not isinstance(quote, str):
                raise ProtocolError(
                    MmError.BAD_MESSAGE, "cancel takes chainId, base and quote, or nothing"
                )
            if base.upper() == quote.upper():
                raise ProtocolError(MmError.UNKNOWN_TOKEN, "base and quote must differ")
            ids = [self.source_id(s.key, cid, base.upper(), quote.upper())]
        else:
            ids = list(mine)
        for sid in ids:
            mine.pop(sid, None)
        self.books.remove_maker_levels(*ids)
        await self._emit(
            s, "ack", {"ref": env.id, "removed": ids, "bookVersion": self.books.book.version}
        )

    def _on_balances(self, chain_id: int) -> None:
        """An adapter published balances: trim every maker's ladders on that chain."""
        for maker in list(self._ladders):
            self._enforce(maker, chain_id)

    def _enforce(self, maker: str, chain_id: int) -> None:
        """Cut the maker's ladders on one chain (as the book holds them, fills applied) to
        what it can pay; best levels keep their size, ladders in id order share the rest."""
        caps: dict[str, int] = {}
        for sid in sorted(self._ladders.get(maker, {})):
            cur = self.books.book.sources.get(sid)
            if not isinstance(cur, LadderSource) or cur.chain != chain_id:
                continue
            base_t, quote_t = cur.base.address.lower(), cur.quote.address.lower()
            for t in (base_t, quote_t):
                caps.setdefault(t, self.capacity(maker, chain_id, t))
            bd, qd = cur.base.decimals, cur.quote.decimals
            bids = trim_bids(cur.bids, caps[quote_t], bd, qd)
            asks = trim_asks(cur.asks, caps[base_t])
            caps[quote_t] -= sum(bid_cost(lv, bd, qd) for lv in bids)
            caps[base_t] -= sum(ask_cost(lv) for lv in asks)
            if bids != cur.bids or asks != cur.asks:
                log.info("maker levels trimmed to funds", extra={"maker": maker, "sourceId": sid})
                self.books.set_maker_levels(replace(cur, bids=bids, asks=asks))

    def _remove_all(self, maker: str) -> None:
        self._ladders.pop(maker, None)
        self.books.remove_maker(maker)

    # -- RFQ -------------------------------------------------------------------------------

    async def request_quotes(
        self,
        *,
        sell: Asset,
        buy: Asset,
        side: RfqSide | str,
        amount: int,
        chain_ids: Sequence[int] | None = None,
        deadline_ms: int | None = None,
        limit: int | None = None,
    ) -> list[MakerQuote]:
        """Ask every logged-in maker for a firm quote; the valid ones, best first.

        The taker sells `sell` and buys `buy`; `amount` is in base units of `sell` (exact
        in) or `buy` (exact out). A maker may answer on any chain of `chain_ids` (default:
        the two assets' chains) where both assets are listed and the chain is available;
        the amount is rescaled to that chain's deployment. Returns when every maker has
        answered or at the deadline, whichever is first. Best: most `makerAmount` (exact
        in) or least `takerAmount` (exact out), compared in canonical units.
        """
        side = RfqSide(side)
        book = self.books.book
        legs: dict[int, _Leg] = {}
        for cid in sorted(set(chain_ids or (sell.chain, buy.chain))):
            c = ChainId(cid)
            if (
                not book.is_available(c)
                or (sell.symbol, c) not in book.assets
                or (buy.symbol, c) not in book.assets
            ):
                continue
            t_in, t_out = book.asset(sell.symbol, c), book.asset(buy.symbol, c)
            src, dst = (sell, t_in) if side is RfqSide.EXACT_IN else (buy, t_out)
            n = dst.from_canonical(src.to_canonical(amount))
            if n > 0:
                legs[cid] = _Leg(cid, t_in, t_out, n)
        targets = [s for s in self.sessions.values() if not s.closed]
        if not legs or not targets:
            return []
        deadline_ms = deadline_ms or self.config.rfq_deadline_ms
        now = int(self.clock())
        rfq = _OpenRfq(
            id="0x" + secrets.token_bytes(32).hex(),
            side=side,
            legs=legs,
            deadline=self.monotonic() + deadline_ms / 1000,
            asked={s.key for s in targets},
            min_expiry=now + self.config.rfq_min_validity,
            max_expiry=now + self.config.max_expiry,
        )
        self._rfqs[rfq.id] = rfq
        payload = {
            "rfqId": rfq.id,
            "side": side.value,
            "sellSymbol": sell.symbol,
            "buySymbol": buy.symbol,
            "deadlineMs": deadline_ms,
            "minExpiresAt": rfq.min_expiry,
            "maxExpiresAt": rfq.max_expiry,
            "legs": [
                {
                    "chainId": leg.chain_id,
                    "takerToken": leg.taker_asset.address,
                    "makerToken": leg.maker_asset.address,
                    "amount": str(leg.amount),
                    "domain": self._domain(leg.chain_id).to_json(),
                }
                for leg in legs.values()
            ],
        }
        try:
            await asyncio.gather(*(self._emit(s, "rfq", payload) for s in targets))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rfq.done.wait(), max(rfq.deadline - self.monotonic(), 0))
        finally:
            self._rfqs.pop(rfq.id, None)
            self._closed_rfqs[rfq.id] = None
            while len(self._closed_rfqs) > 1024:
                self._closed_rfqs.popitem(last=False)
        quotes = sorted(rfq.quotes, key=lambda q: _rank(rfq, q))
        return quotes[:limit] if limit is not None else quotes

    def _rfq_for(self, s: MakerSession, env: Envelope) -> _OpenRfq:
        rid = env.payload.get("rfqId")
        rid = rid.lower() if isinstance(rid, str) else ""
        rfq = self._rfqs.get(rid)
        if rfq is None or s.key not in rfq.asked:
            if rid in self._closed_rfqs:
                raise ProtocolError(MmError.RFQ_CLOSED, "the RFQ's deadline has passed", rfqId=rid)
            raise ProtocolError(
                MmError.UNKNOWN_RFQ, "no open RFQ with that id for this maker", rfqId=rid
            )
        if self.monotonic() > rfq.deadline:
            raise ProtocolError(MmError.RFQ_CLOSED, "the RFQ's deadline has passed", rfqId=rid)
        if s.key in rfq.answered:
            raise ProtocolError(MmError.INVALID_QUOTE, "this RFQ was already answered", rfqId=rid)
        return rfq

    async def _quote(self, s: MakerSession, env: Envelope) -> None:
        rfq = self._rfq_for(s, env)
        q = parse_quote(env.payload)
        leg = rfq.legs.get(q.chain_id)
        if q.maker.lower() != s.key:
            raise ProtocolError(MmError.INVALID_QUOTE, "maker is not this connection's maker")
        if leg is None:
            raise ProtocolError(
                MmError.INVALID_QUOTE, f"chain {q.chain_id} is not offered by this RFQ"
            )
        if (q.maker_token.lower(), q.taker_token.lower()) != (
            leg.maker_asset.address.lower(),
            leg.taker_asset.address.lower(),
        ):
            raise ProtocolError(MmError.INVALID_QUOTE, "tokens do not match the RFQ leg")
        fixed = q.taker_amount if rfq.side is RfqSide.EXACT_IN else q.maker_amount
        if fixed != leg.amount:
            raise ProtocolError(
                MmError.INVALID_QUOTE, f"the {rfq.side.value} amount must be {leg.amount}"
            )
        if not rfq.min_expiry <= q.expires_at <= rfq.max_expiry:
            raise ProtocolError(
                MmError.INVALID_QUOTE,
                f"expiresAt must be within {rfq.min_expiry}..{rfq.max_expiry}",
            )
        try:
            signer = recover(q.digest(self._domain(q.chain_id)), q.signature)
        except SignatureError as e:
            raise ProtocolError(MmError.BAD_SIGNATURE, str(e)) from None
        if signer.lower() != s.key:
            raise ProtocolError(MmError.BAD_SIGNATURE, "the quote is not signed by this maker")
        have = self.capacity(s.key, q.chain_id, q.maker_token)
        if q.maker_amount > have:
            raise ProtocolError(
                MmError.INSUFFICIENT_MAKER_BALANCE,
                f"makerAmount {q.maker_amount} exceeds what the maker can pay ({have})",
                available=str(have),
            )
        rfq.answered.add(s.key)
        rfq.quotes.append(replace(q, maker=signer))
        await self._emit(s, "ack", {"ref": env.id, "rfqId": rfq.id, "accepted": True})
        if rfq.answered >= rfq.asked:
            rfq.done.set()

    async def _decline(self, s: MakerSession, env: Envelope) -> None:
        rfq = self._rfq_for(s, env)
        rfq.answered.add(s.key)
        await self._emit(s, "ack", {"ref": env.id, "rfqId": rfq.id, "declined": True})
        if rfq.answered >= rfq.asked:
            rfq.done.set()

    def should_rfq(self, asset: Asset, amount: int) -> bool:
        """Whether an order of `amount` of `asset` is worth an RFQ (over `rfq_min_usd`,
        valued at the book's best USDC price; stables at 1) and anyone could answer."""
        if not self.sessions:
            return False
        units = asset.to_canonical(amount) / 10**18
        if asset.symbol in STABLES:
            return units >= self.config.rfq_min_usd
        best = self._usd_price(asset.symbol)
        return best > 0 and units * best >= self.config.rfq_min_usd

    def _usd_price(self, symbol: str) -> float:
        """The book's best USDC price of `symbol`, once per book version (every quote
        asks; marginal prices of StableSwap pools and ladders are not cheap)."""
        book = self.books.book
        key = (book.version, symbol)
        hit = self._usd_prices.get(key)
        if hit is not None:
            return hit
        best = 0.0
        for src in book.sources_for(symbol, "USDC"):
            usdc = next(t for t in src.tokens if t.symbol == "USDC")
            mine = next(t for t in src.tokens if t.symbol == symbol)
            px = float(src.marginal_price(AssetSymbol(symbol))) * 10 ** (mine.decimals - usdc.decimals)
            best = max(best, px)
        if len(self._usd_prices) > 64:
            self._usd_prices.clear()
        self._usd_prices[key] = best
        return best

    # -- notices ---------------------------------------------------------------------------

    async def notify_fill(self, maker: str, fill: MakerFill) -> bool:
        """Tell the maker about a confirmed fill, and count what it owes until the order
        settles (its levels and quotes shrink by that). False when it is not connected."""
        key = (fill.chain_id, fill.maker_token.lower(), maker.lower())
        owed = self._pending.setdefault(key, {})
        owed[fill.order_id] = owed.get(fill.order_id, 0) + fill.maker_amount
        self._pending_since.setdefault(fill.order_id, self.monotonic())
        self._enforce(maker.lower(), fill.chain_id)
        s = self.sessions.get(maker.lower())
        return s is not None and await self._emit(s, "fill", fill.to_json())

    def _release(
        self, order_id: str, chain_id: int | None = None, maker: str | None = None
    ) -> None:
        for key in list(self._pending):
            if (chain_id is None or key[0] == chain_id) and (maker is None or key[2] == maker):
                self._pending[key].pop(order_id, None)
                if not self._pending[key]:
                    del self._pending[key]
        if not any(order_id in owed for owed in self._pending.values()):
            self._pending_since.pop(order_id, None)

    async def notify_settlement(
        self,
        maker: str,
        *,
        order_id: str,
        chain_id: int,
        status: str,
        tx_hash: str | None = None,
        block_number: int | None = None,
        batch_id: str | None = None,
        leg: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """Tell the maker an order's leg on `chain_id` settled (or failed); what it owed for
        that order stops counting against its funds (the chain now shows the transfer).
        `leg` names the maker's leg ("maker_in": it delivered, "maker_out": it was paid);
        `reason` says why a leg failed."""
        self._release(order_id, chain_id, maker.lower())
        s = self.sessions.get(maker.lower())
        payload = _settlement_payload(order_id, chain_id, status, tx_hash, block_number, batch_id, leg, reason)
        return s is not None and await self._emit(s, "settlement", payload)

    # -- plumbing --------------------------------------------------------------------------

    def _domain(self, chain_id: int) -> Domain:
        c = self.manifest.chain(chain_id)
        return Domain(
            chain_id=chain_id, verifying_contract=c.contracts.get("settlement", c.inventory)
        )

    async def _emit(self, s: MakerSession, typ: str, payload: dict[str, Any]) -> bool:
        doc = message(typ, payload, id=secrets.token_hex(8), ts_ms=int(self.clock() * 1000))
        return await s.send(doc)

    async def _fail(self, s: MakerSession, env: Envelope | None, e: ProtocolError) -> None:
        """Send `error`; before login every error also closes the socket."""
        payload = {"code": e.code.value, "message": e.message, "details": e.details}
        if env is not None:
            payload["ref"] = env.id
        await self._emit(s, "error", payload)
        if s.maker is None:
            await self._drop(s, CLOSE_AUTH, e.code.value)

    async def _limited(self, s: MakerSession, env: Envelope, now: float) -> None:
        wait_ms = int((s.cooldown_until - now) * 1000) + 1
        err = ProtocolError(
            MmError.RATE_LIMITED, "rate limit exceeded; cooling down", retryAfterMs=wait_ms
        )
        await self._fail(s, env, err)

    async def _drop(self, s: MakerSession, code: int, reason: str) -> None:
        self._open.discard(s)
        if s.maker is not None and self.sessions.get(s.key) is s:
            del self.sessions[s.key]
            self._remove_all(s.key)
            for rfq in self._rfqs.values():  # no answer will come: do not wait for it
                rfq.asked.discard(s.key)
                if rfq.answered >= rfq.asked:
                    rfq.done.set()
            log.info("maker disconnected", extra={"maker": s.maker, "code": code, "reason": reason})
        await s.close(code, reason)

    async def _relay(self, redis: Any) -> None:
        """Deliver notices published by other processes; resubscribe after Redis restarts
        (pub/sub is at-most-once: a notice published while it is down is lost)."""
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(NOTICE_CHANNEL)
                    async for msg in pubsub.listen():
                        if msg.get("type") == "message":
                            await self._deliver(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("maker notice relay: %s; resubscribing", e)
                await asyncio.sleep(1.0)

    async def _deliver(self, raw: str | bytes) -> None:
        try:
            doc = json.loads(raw)
            maker, kind, p = doc["maker"], doc["type"], doc["payload"]
            if kind == "fill":
                fill = MakerFill(
                    order_id=p["orderId"],
                    chain_id=int(p["chainId"]),
                    maker_token=p["makerToken"],
                    maker_amount=int(p["makerAmount"]),
                    taker_token=p["takerToken"],
                    taker_amount=int(p["takerAmount"]),
                    source_id=p.get("sourceId", ""),
                    rfq_id=p.get("rfqId", ""),
                )
                await self.notify_fill(maker, fill)
            elif kind == "settlement":
                await self.notify_settlement(
                    maker,
                    order_id=p["orderId"],
                    chain_id=int(p["chainId"]),
                    status=p["status"],
                    tx_hash=p.get("txHash"),
                    block_number=p.get("blockNumber"),
                    batch_id=p.get("batchId"),
                    leg=p.get("leg"),
                    reason=p.get("reason"),
                )
            else:
                raise ValueError(f"unknown notice type {kind!r}")
        except (KeyError, TypeError, ValueError) as e:
            log.warning("dropped a malformed maker notice: %r", e)

    async def _run(self) -> None:
        tick = min(self.config.heartbeat / 4, 0.5)
        while True:
            await asyncio.sleep(tick)
            try:
                await self._tick()
            except Exception:
                log.exception("maker hub tick failed")

    async def _tick(self) -> None:
        now, wall = self.monotonic(), self.clock()
        hb = self.config.heartbeat
        for s in list(self._open):
            if s.maker is None:
                if wall >= s.challenge_expires:
                    await self._emit(
                        s,
                        "error",
                        {"code": MmError.CHALLENGE_EXPIRED.value, "message": "no login in time"},
                    )
                    await self._drop(s, CLOSE_AUTH, MmError.CHALLENGE_EXPIRED.value)
            elif now - s.last_seen > 2 * hb:
                await self._emit(
                    s,
                    "error",
                    {
                        "code": MmError.HEARTBEAT_TIMEOUT.value,
                        "message": "no message for two heartbeats",
                    },
                )
                await self._drop(s, CLOSE_HEARTBEAT, MmError.HEARTBEAT_TIMEOUT.value)
            elif now >= s.next_ping:
                s.next_ping = now + hb
                await self._emit(s, "ping", {})
        # A fill whose settlement notice never came (lost pub/sub message, crashed worker)
        # stops holding the maker's funds after an hour; by then the chain shows the truth.
        for order_id in [o for o, t in self._pending_since.items() if now - t > PENDING_FILL_TTL]:
            log.warning("unsettled maker fill expired", extra={"orderId": order_id})
            self._release(order_id)
        # Expired levels leave the book (and the commitments) even if the maker went quiet.
        self.books.expire_levels(int(wall))
        for mine in self._ladders.values():
            for sid in [k for k, v in mine.items() if (v.next_expiry() or 0) <= wall]:
                del mine[sid]


def fill_notice(maker: str, fill: MakerFill) -> str:
    """What a process without the hub publishes on `NOTICE_CHANNEL` for `notify_fill`."""
    return json.dumps({"maker": maker, "type": "fill", "payload": fill.to_json()})


def settlement_notice(
    maker: str,
    *,
    order_id: str,
    chain_id: int,
    status: str,
    tx_hash: str | None = None,
    block_number: int | None = None,
    batch_id: str | None = None,
    leg: str | None = None,
    reason: str | None = None,
) -> str:
    """What a settlement worker publishes on `NOTICE_CHANNEL` for `notify_settlement`."""
    payload = _settlement_payload(order_id, chain_id, status, tx_hash, block_number, batch_id, leg, reason)
    return json.dumps({"maker": maker, "type": "settlement", "payload": payload})


def _settlement_payload(
    order_id: str,
    chain_id: int,
    status: str,
    tx_hash: str | None,
    block_number: int | None,
    batch_id: str | None,
    leg: str | None,
    reason: str | None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "orderId": order_id,
        "chainId": chain_id,
        "status": status,
        "txHash": tx_hash,
        "blockNumber": block_number,
        "batchId": batch_id,
    }
    # Maker legs only (older notices carry neither): which leg, and why it failed.
    if leg is not None:
        payload["leg"] = leg
    if reason is not None:
        payload["reason"] = reason
    return payload


def _commitments(ladder: LadderSource) -> dict[str, int]:
    """Token (lower-case address) → what the ladder takes from the maker if all of it fills."""
    bd, qd = ladder.base.decimals, ladder.quote.decimals
    out = {
        ladder.quote.address.lower(): sum(bid_cost(lv, bd, qd) for lv in ladder.bids),
        ladder.base.address.lower(): sum(ask_cost(lv) for lv in ladder.asks),
    }
    return {k: v for k, v in out.items() if v > 0}


def _rank(rfq: _OpenRfq, q: MakerQuote) -> int:
    leg = rfq.legs[q.chain_id]
    if rfq.side is RfqSide.EXACT_IN:
        return -leg.maker_asset.to_canonical(q.maker_amount)
    return leg.taker_asset.to_canonical(q.taker_amount)
