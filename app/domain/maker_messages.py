"""The market-maker WebSocket protocol as pure values: envelopes, login, ladders, RFQ quotes.

Every message, both ways, is `{"type", "id", "ts", "payload"}` (ts in unix milliseconds).
This module parses and validates what a maker sends and builds what the server sends; it
does no I/O, so the hub (`app.services.makers`) only moves bytes and keeps state.

Units on the wire (docs/market-makers.md has examples):

- prices are decimal strings, quote per base in whole units ("3012.25"), at most 18
  fractional digits; inside they become `Level.price` (× `PRICE_SCALE`, exact);
- sizes and amounts are base-unit decimal strings of the token they count;
- times are unix seconds (`expiresAt`), except the envelope's `ts` (milliseconds).

Login signs a text (EIP-191 `personal_sign`) or the typed struct `MakerLogin` (EIP-712);
both bind the server's domain, the connection's nonce and the challenge's expiry.
RFQ answers are EIP-712 `MakerQuote`s under the quote chain's Crossbook domain.

Errors are `ProtocolError(code, message, details)`; the hub turns each into an `error`
message with that code.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from eth_hash.auto import keccak

from app.domain.eip712 import Domain, StructType, typed_digest
from app.domain.sources import PRICE_SCALE, Level

__all__ = [
    "LOGIN_HEADER",
    "MAKER_LOGIN",
    "MAKER_QUOTE",
    "MAX_AMOUNT",
    "Envelope",
    "LadderUpdate",
    "MakerQuote",
    "MmError",
    "ProtocolError",
    "RfqSide",
    "ask_cost",
    "bid_cost",
    "format_price",
    "login_digest",
    "login_text",
    "message",
    "parse_amount",
    "parse_envelope",
    "parse_ladder",
    "parse_price",
    "parse_quote",
    "personal_digest",
    "trim_asks",
    "trim_bids",
]

MAX_AMOUNT = 2**128
LOGIN_HEADER = "Crossbook market-maker login"
_PRICE_RE = re.compile(r"^(\d{1,30})(?:\.(\d{1,18}))?$")
_INT_RE = re.compile(r"^-?\d{1,40}$")
_HEX32_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BRACKETS = re.compile(rb"[\[\]{}]")


class MmError(StrEnum):
    """Codes of `error` messages; docs/market-makers.md says which ones close the socket."""

    BAD_MESSAGE = "BAD_MESSAGE"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    AUTH_REQUIRED = "AUTH_REQUIRED"
    ALREADY_LOGGED_IN = "ALREADY_LOGGED_IN"
    CHALLENGE_MISMATCH = "CHALLENGE_MISMATCH"
    CHALLENGE_EXPIRED = "CHALLENGE_EXPIRED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNKNOWN_MAKER = "UNKNOWN_MAKER"
    UNKNOWN_CHAIN = "UNKNOWN_CHAIN"
    UNKNOWN_TOKEN = "UNKNOWN_TOKEN"
    BAD_PRICE = "BAD_PRICE"
    INVALID_SIZE = "INVALID_SIZE"
    NEGATIVE_SIZE = "NEGATIVE_SIZE"
    CROSSED_LADDER = "CROSSED_LADDER"
    LADDER_TOO_LONG = "LADDER_TOO_LONG"
    EXPIRY_TOO_FAR = "EXPIRY_TOO_FAR"
    EXPIRED = "EXPIRED"
    INSUFFICIENT_MAKER_BALANCE = "INSUFFICIENT_MAKER_BALANCE"
    RATE_LIMITED = "RATE_LIMITED"
    UNKNOWN_RFQ = "UNKNOWN_RFQ"
    RFQ_CLOSED = "RFQ_CLOSED"
    INVALID_QUOTE = "INVALID_QUOTE"
    HEARTBEAT_TIMEOUT = "HEARTBEAT_TIMEOUT"
    SUPERSEDED = "SUPERSEDED"
    INTERNAL = "INTERNAL"


class ProtocolError(ValueError):
    def __init__(self, code: MmError, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


# -- envelopes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    id: str
    ts: int
    payload: Mapping[str, Any]


def _too_deep(text: str | bytes, limit: int = 16) -> bool:
    """Nesting beyond anything the protocol uses. Checked before `json.loads`, whose C
    scanner recurses per level: deep enough input exhausts the stack, not just the
    recursion limit. Brackets inside strings count too, which only errs towards refusing."""
    depth = 0
    for m in _BRACKETS.finditer(text if isinstance(text, bytes) else text.encode()):
        depth += 1 if m.group() in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


def parse_envelope(text: str | bytes) -> Envelope:
    if _too_deep(text):
        raise ProtocolError(MmError.BAD_MESSAGE, "nested too deeply")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(MmError.BAD_MESSAGE, "not JSON") from None
    if not isinstance(doc, dict):
        raise ProtocolError(MmError.BAD_MESSAGE, "a message is a JSON object")
    typ, mid, ts, payload = doc.get("type"), doc.get("id"), doc.get("ts", 0), doc.get("payload", {})
    if not isinstance(typ, str) or not 0 < len(typ) <= 32:
        raise ProtocolError(MmError.BAD_MESSAGE, "type must be a short string")
    if not isinstance(mid, str) or not 0 < len(mid) <= 64:
        raise ProtocolError(MmError.BAD_MESSAGE, "id must be a string of 1..64 characters")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise ProtocolError(MmError.BAD_MESSAGE, "ts must be unix milliseconds")
    if not isinstance(payload, dict):
        raise ProtocolError(MmError.BAD_MESSAGE, "payload must be an object")
    return Envelope(typ, mid, int(ts), payload)


def message(typ: str, payload: Mapping[str, Any], *, id: str, ts_ms: int) -> dict[str, Any]:
    return {"type": typ, "id": id, "ts": ts_ms, "payload": dict(payload)}


# -- login -----------------------------------------------------------------------------------

MAKER_LOGIN = StructType(
    "MakerLogin", (("string", "domain"), ("bytes32", "nonce"), ("uint256", "expiresAt"))
)


def login_text(domain: str, nonce: str, expires_at: int) -> str:
    """The EIP-191 text a maker signs: readable in a wallet, unambiguous for us."""
    return f"{LOGIN_HEADER}\ndomain: {domain}\nnonce: {nonce}\nexpires: {expires_at}"


def personal_digest(text: str) -> bytes:
    raw = text.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(raw)).encode() + raw)


def login_digest(scheme: str, domain: str, nonce: str, expires_at: int, eip712: Domain) -> bytes:
    if scheme == "eip191":
        return personal_digest(login_text(domain, nonce, expires_at))
    if scheme == "eip712":
        values = {"domain": domain, "nonce": nonce, "expiresAt": expires_at}
        return typed_digest(eip712, MAKER_LOGIN, values)
    raise ProtocolError(MmError.BAD_MESSAGE, "scheme must be eip191 or eip712")


# -- numbers ---------------------------------------------------------------------------------


def parse_price(value: object, where: str) -> int:
    """A decimal string (quote per base, whole units) → the exact `Level.price` integer."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ProtocolError(MmError.BAD_PRICE, f"{where}: price must be a decimal string", at=where)
    m = _PRICE_RE.match(str(value))
    if m is None:
        raise ProtocolError(
            MmError.BAD_PRICE, f"{where}: price must be like 3012.25 (≤18 decimals)", at=where
        )
    whole, frac = m.group(1), m.group(2) or ""
    price = int(whole) * PRICE_SCALE + int(frac.ljust(18, "0"))
    if price == 0:
        raise ProtocolError(MmError.BAD_PRICE, f"{where}: price must be positive", at=where)
    return price


def format_price(price: int) -> str:
    whole, frac = divmod(price, PRICE_SCALE)
    return f"{whole}.{frac:018d}".rstrip("0").rstrip(".")


def parse_amount(value: object, where: str, *, negative: MmError = MmError.NEGATIVE_SIZE) -> int:
    """A positive base-unit integer below 2^128 (decimal string; a JSON integer is accepted)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or not _INT_RE.match(str(value)):
        raise ProtocolError(
            MmError.INVALID_SIZE, f"{where}: must be a base-unit integer string", at=where
        )
    n = int(value)
    if n < 0:
        raise ProtocolError(negative, f"{where}: must not be negative", at=where)
    if n == 0 or n >= MAX_AMOUNT:
        raise ProtocolError(MmError.INVALID_SIZE, f"{where}: must be within 1..2^128-1", at=where)
    return n


def _int_field(payload: Mapping[str, Any], name: str) -> int:
    v = payload.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(MmError.BAD_MESSAGE, f"{name} must be an integer", at=name)
    return v


def _str_field(payload: Mapping[str, Any], name: str, limit: int = 66) -> str:
    v = payload.get(name)
    if not isinstance(v, str) or not 0 < len(v) <= limit:
        raise ProtocolError(MmError.BAD_MESSAGE, f"{name} must be a string", at=name)
    return v


# -- ladders ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LadderUpdate:
    """A validated `levels` payload for one chain and pair (sizes in base-token units)."""

    chain_id: int
    base: str
    quote: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    expires_at: int


def _levels(raw: object, side: str, expires_at: int, max_levels: int) -> tuple[Level, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProtocolError(MmError.BAD_MESSAGE, f"{side} must be a list of [price, size]")
    if len(raw) > max_levels:
        raise ProtocolError(
            MmError.LADDER_TOO_LONG,
            f"{side}: {len(raw)} levels, at most {max_levels}",
            side=side,
            max=max_levels,
        )
    out = []
    for i, item in enumerate(raw):
        where = f"{side}[{i}]"
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ProtocolError(MmError.BAD_MESSAGE, f"{where} must be [price, size]", at=where)
        out.append(Level(parse_price(item[0], where), parse_amount(item[1], where), expires_at))
    return tuple(out)


def parse_ladder(
    payload: Mapping[str, Any],
    *,
    tokens: Mapping[int, frozenset[str]],
    now: int,
    max_levels: int,
    max_expiry_seconds: int,
) -> LadderUpdate:
    """Validate a `levels` payload against the known chains' token symbols and the clock."""
    chain_id = _int_field(payload, "chainId")
    if chain_id not in tokens:
        raise ProtocolError(
            MmError.UNKNOWN_CHAIN, f"unknown chain {chain_id}", known=sorted(tokens)
        )
    base, quote = _str_field(payload, "base", 16).upper(), _str_field(payload, "quote", 16).upper()
    for sym in (base, quote):
        if sym not in tokens[chain_id]:
            raise ProtocolError(
                MmError.UNKNOWN_TOKEN,
                f"{sym} is not listed on chain {chain_id}",
                token=sym,
                known=sorted(tokens[chain_id]),
            )
    if base == quote:
        raise ProtocolError(MmError.UNKNOWN_TOKEN, "base and quote must differ", token=base)
    expires_at = _int_field(payload, "expiresAt")
    if expires_at <= now:
        raise ProtocolError(MmError.EXPIRED, "expiresAt is not in the future", now=now)
    if expires_at > now + max_expiry_seconds:
        raise ProtocolError(
            MmError.EXPIRY_TOO_FAR,
            f"expiresAt is more than {max_expiry_seconds}s ahead",
            max=now + max_expiry_seconds,
        )
    bids = _levels(payload.get("bids"), "bids", expires_at, max_levels)
    asks = _levels(payload.get("asks"), "asks", expires_at, max_levels)
    if bids and asks and max(b.price for b in bids) >= min(a.price for a in asks):
        raise ProtocolError(
            MmError.CROSSED_LADDER,
            "best bid must be below best ask",
            bestBid=format_price(max(b.price for b in bids)),
            bestAsk=format_price(min(a.price for a in asks)),
        )
    # Best first, so trimming to a balance keeps the levels a trader would hit first.
    bids = tuple(sorted(bids, key=lambda lv: -lv.price))
    asks = tuple(sorted(asks, key=lambda lv: lv.price))
    return LadderUpdate(chain_id, base, quote, bids, asks, expires_at)


# What a fully filled ladder takes from the maker, rounded against the maker (up) so the
# book never offers more than the balance behind it.


def bid_cost(level: Level, base_decimals: int, quote_decimals: int) -> int:
    """Quote-token base units the maker pays if `level` (a bid) fills in full."""
    num = level.size * level.price * 10**quote_decimals
    return -(-num // (PRICE_SCALE * 10**base_decimals))


def ask_cost(level: Level) -> int:
    """Base-token base units the maker pays if `level` (an ask) fills in full."""
    return level.size


def trim_bids(
    bids: Sequence[Level], capacity: int, base_decimals: int, quote_decimals: int
) -> tuple[Level, ...]:
    """The best bids the maker's `capacity` (quote units) pays for; the last one partial."""
    out: list[Level] = []
    rest = capacity
    for lv in sorted(bids, key=lambda lv: -lv.price):
        cost = bid_cost(lv, base_decimals, quote_decimals)
        if cost <= rest:
            out.append(lv)
            rest -= cost
            continue
        # Largest size whose (rounded-up) cost still fits.
        size = rest * PRICE_SCALE * 10**base_decimals // (lv.price * 10**quote_decimals)
        if size > 0:
            out.append(Level(lv.price, size, lv.expires_at))
        break
    return tuple(out)


def trim_asks(asks: Sequence[Level], capacity: int) -> tuple[Level, ...]:
    """The best asks the maker's `capacity` (base units) covers; the last one partial."""
    out: list[Level] = []
    rest = capacity
    for lv in sorted(asks, key=lambda lv: lv.price):
        if rest <= 0:
            break
        size = min(lv.size, rest)
        out.append(Level(lv.price, size, lv.expires_at))
        rest -= size
    return tuple(out)


# -- RFQ -------------------------------------------------------------------------------------


class RfqSide(StrEnum):
    EXACT_IN = "exactIn"  # the taker's sell amount is fixed; makers compete on makerAmount
    EXACT_OUT = "exactOut"  # the taker's buy amount is fixed; makers compete on takerAmount


MAKER_QUOTE = StructType(
    "MakerQuote",
    (
        ("bytes32", "rfqId"),
        ("address", "maker"),
        ("address", "makerToken"),
        ("uint256", "makerAmount"),
        ("address", "takerToken"),
        ("uint256", "takerAmount"),
        ("uint256", "expiresAt"),
    ),
)


@dataclass(frozen=True, slots=True)
class MakerQuote:
    """A maker's firm, signed answer to an RFQ on one chain: it pays `maker_amount` of
    `maker_token` for `taker_amount` of `taker_token`, until `expires_at` (unix s)."""

    rfq_id: str
    chain_id: int
    maker: str
    maker_token: str
    maker_amount: int
    taker_token: str
    taker_amount: int
    expires_at: int
    signature: str = field(default="", compare=False)

    def values(self) -> dict[str, Any]:
        return {
            "rfqId": self.rfq_id,
            "maker": self.maker,
            "makerToken": self.maker_token,
            "makerAmount": self.maker_amount,
            "takerToken": self.taker_token,
            "takerAmount": self.taker_amount,
            "expiresAt": self.expires_at,
        }

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain, MAKER_QUOTE, self.values())

    def to_json(self) -> dict[str, Any]:
        return {
            **self.values(),
            "chainId": self.chain_id,
            "makerAmount": str(self.maker_amount),
            "takerAmount": str(self.taker_amount),
            "signature": self.signature,
        }


def parse_quote(payload: Mapping[str, Any]) -> MakerQuote:
    """The shape of a `quote` payload; whether it answers its RFQ is the hub's check."""
    rfq_id = _str_field(payload, "rfqId")
    if not _HEX32_RE.match(rfq_id):
        raise ProtocolError(MmError.BAD_MESSAGE, "rfqId must be 32 bytes hex", at="rfqId")
    addrs = {}
    for name in ("maker", "makerToken", "takerToken"):
        v = _str_field(payload, name, 42)
        if not _ADDR_RE.match(v):
            raise ProtocolError(MmError.INVALID_QUOTE, f"{name} must be an address", at=name)
        addrs[name] = v
    sig = _str_field(payload, "signature", 140)
    return MakerQuote(
        rfq_id=rfq_id.lower(),
        chain_id=_int_field(payload, "chainId"),
        maker=addrs["maker"],
        maker_token=addrs["makerToken"],
        maker_amount=parse_amount(
            payload.get("makerAmount"), "makerAmount", negative=MmError.INVALID_QUOTE
        ),
        taker_token=addrs["takerToken"],
        taker_amount=parse_amount(
            payload.get("takerAmount"), "takerAmount", negative=MmError.INVALID_QUOTE
        ),
        expires_at=_int_field(payload, "expiresAt"),
        signature=sig,
    )
