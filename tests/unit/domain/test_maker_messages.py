"""The market-maker protocol's pure parts: numbers, envelopes, signatures, ladders, trims."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.eip712 import Domain, address_of_key, recover, sign_digest
from app.domain.maker_messages import (
    MAKER_LOGIN,
    MAKER_QUOTE,
    MakerQuote,
    MmError,
    ProtocolError,
    ask_cost,
    bid_cost,
    format_price,
    login_digest,
    login_text,
    parse_amount,
    parse_envelope,
    parse_ladder,
    parse_price,
    parse_quote,
    trim_asks,
    trim_bids,
)
from app.domain.sources import PRICE_SCALE, LadderSource, Level
from app.domain.types import Address, Asset, AssetSymbol, ChainId

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
DOMAIN = Domain(31001, "0x" + "ab" * 20)
TOKENS = {31001: frozenset({"WETH", "USDC", "WBTC"})}
NOW = 1_800_000_000


def _code(exc: pytest.ExceptionInfo[ProtocolError]) -> str:
    return exc.value.code.value


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scaled"),
    [
        ("3012.25", 3012 * PRICE_SCALE + PRICE_SCALE // 4),
        ("1", PRICE_SCALE),
        ("0.000000000000000001", 1),
        (7, 7 * PRICE_SCALE),
    ],
)
def test_price_is_exact(text: str | int, scaled: int) -> None:
    assert parse_price(text, "p") == scaled


@pytest.mark.parametrize(
    "bad",
    [
        "1e3",
        "-1",
        "1.",
        ".5",
        "0.0000000000000000001",
        "0",
        "0.0",
        1.5,
        True,
        None,
        "",
        "1,5",
        " 1",
    ],
)
def test_bad_prices(bad: Any) -> None:
    with pytest.raises(ProtocolError) as e:
        parse_price(bad, "p")
    assert _code(e) == "BAD_PRICE"


@given(st.integers(1, 10**40))
def test_price_round_trips(price: int) -> None:
    assert parse_price(format_price(price), "p") == price


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("-1", "NEGATIVE_SIZE"),
        (-1, "NEGATIVE_SIZE"),
        ("0", "INVALID_SIZE"),
        ("1.5", "INVALID_SIZE"),
        (str(2**128), "INVALID_SIZE"),
        (None, "INVALID_SIZE"),
        (True, "INVALID_SIZE"),
    ],
)
def test_bad_amounts(value: Any, code: str) -> None:
    with pytest.raises(ProtocolError) as e:
        parse_amount(value, "size")
    assert _code(e) == code


def test_amounts() -> None:
    assert parse_amount("1000000", "s") == 10**6
    assert parse_amount(5, "s") == 5
    assert parse_amount(str(2**128 - 1), "s") == 2**128 - 1


# -- envelopes -------------------------------------------------------------------------------


def test_envelope() -> None:
    env = parse_envelope(json.dumps({"type": "levels", "id": "a1", "ts": 1, "payload": {"x": 1}}))
    assert (env.type, env.id, env.ts, dict(env.payload)) == ("levels", "a1", 1, {"x": 1})
    assert parse_envelope(b'{"type": "ping", "id": "1"}').payload == {}


@pytest.mark.parametrize(
    "raw",
    [
        "nope",
        "[]",
        '{"id": "1"}',
        '{"type": "", "id": "1"}',
        '{"type": "x"}',
        '{"type": "x", "id": 5}',
        '{"type": "x", "id": "1", "payload": []}',
        '{"type": "x", "id": "1", "ts": "now"}',
        '{"type": "x", "id": "1", "ts": 1e999}',
        '{"type": "x", "id": "1", "ts": NaN}',
        "[" * 100_000 + "]" * 100_000,
        b"\xff",
    ],
)
def test_bad_envelopes(raw: str | bytes) -> None:
    with pytest.raises(ProtocolError) as e:
        parse_envelope(raw)
    assert _code(e) == "BAD_MESSAGE"


# -- login and quote signatures match eth-account ----------------------------------------------


def test_personal_sign_login_matches_eth_account() -> None:
    nonce = "0x" + "11" * 32
    text = login_text("crossbook", nonce, NOW)
    assert nonce in text and "crossbook" in text and str(NOW) in text
    digest = login_digest("eip191", "crossbook", nonce, NOW, DOMAIN)
    theirs = Account.sign_message(encode_defunct(text=text), KEY)
    assert recover(digest, theirs.signature.hex()) == address_of_key(KEY)


def _typed(struct: Any, primary: str, message: dict[str, Any]) -> Any:
    return encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                primary: struct.to_eip712_types(),
            },
            "primaryType": primary,
            "domain": DOMAIN.to_json(),
            "message": message,
        }
    )


def test_eip712_login_matches_eth_account() -> None:
    nonce = "0x" + "22" * 32
    digest = login_digest("eip712", "crossbook", nonce, NOW, DOMAIN)
    signed = Account.sign_message(
        _typed(
            MAKER_LOGIN,
            "MakerLogin",
            {"domain": "crossbook", "nonce": bytes.fromhex(nonce[2:]), "expiresAt": NOW},
        ),
        KEY,
    )
    assert recover(digest, signed.signature.hex()) == address_of_key(KEY)
    with pytest.raises(ProtocolError):
        login_digest("eip4361", "crossbook", nonce, NOW, DOMAIN)


def test_maker_quote_digest_matches_eth_account_and_parses_back() -> None:
    maker = address_of_key(KEY)
    q = MakerQuote(
        "0x" + "33" * 32,
        31001,
        maker,
        "0x" + "01" * 20,
        3_000 * 10**6,
        "0x" + "02" * 20,
        10**18,
        NOW + 30,
    )
    msg = {**q.values(), "rfqId": bytes.fromhex("33" * 32)}
    signed = Account.sign_message(_typed(MAKER_QUOTE, "MakerQuote", msg), KEY)
    assert recover(q.digest(DOMAIN), signed.signature.hex()) == maker
    ours = MakerQuote(
        **{
            **{
                f: getattr(q, f)
                for f in (
                    "rfq_id",
                    "chain_id",
                    "maker",
                    "maker_token",
                    "maker_amount",
                    "taker_token",
                    "taker_amount",
                    "expires_at",
                )
            },
            "signature": sign_digest(KEY, q.digest(DOMAIN)),
        }
    )
    back = parse_quote(ours.to_json())
    assert back == ours and back.signature == ours.signature


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"rfqId": "0x12"}, "BAD_MESSAGE"),
        ({"maker": "0x123"}, "INVALID_QUOTE"),
        ({"makerAmount": "-5"}, "INVALID_QUOTE"),
        ({"takerAmount": "0"}, "INVALID_SIZE"),
        ({"expiresAt": "soon"}, "BAD_MESSAGE"),
    ],
)
def test_bad_quotes(change: dict[str, Any], code: str) -> None:
    q = MakerQuote(
        "0x" + "33" * 32, 1, "0x" + "03" * 20, "0x" + "01" * 20, 5, "0x" + "02" * 20, 7, NOW, "0x00"
    )
    with pytest.raises(ProtocolError) as e:
        parse_quote({**q.to_json(), **change})
    assert _code(e) == code


# -- ladders ---------------------------------------------------------------------------------


def _ladder(**kw: Any) -> dict[str, Any]:
    return {
        "chainId": 31001,
        "base": "weth",
        "quote": "USDC",
        "bids": [["2990", "5"], ["2999", "1"]],
        "asks": [["3010", "2"], ["3001", "3"]],
        "expiresAt": NOW + 10,
        **kw,
    }


def _parse(payload: dict[str, Any]) -> Any:
    return parse_ladder(payload, tokens=TOKENS, now=NOW, max_levels=3, max_expiry_seconds=60)


def test_ladder_parses_best_first() -> None:
    upd = _parse(_ladder())
    assert (upd.chain_id, upd.base, upd.quote, upd.expires_at) == (31001, "WETH", "USDC", NOW + 10)
    assert [lv.price // PRICE_SCALE for lv in upd.bids] == [2999, 2990]
    assert [lv.price // PRICE_SCALE for lv in upd.asks] == [3001, 3010]
    assert all(lv.expires_at == NOW + 10 for lv in (*upd.bids, *upd.asks))
    assert _parse(_ladder(bids=[], asks=None)).bids == ()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"asks": [["2999", "1"]]}, "CROSSED_LADDER"),
        ({"bids": [["3001", "1"]]}, "CROSSED_LADDER"),
        ({"bids": [["2990", "-5"]]}, "NEGATIVE_SIZE"),
        ({"bids": [["2990", "0"]]}, "INVALID_SIZE"),
        ({"bids": [["2990"]]}, "BAD_MESSAGE"),
        ({"bids": [["1", "1"]] * 4}, "LADDER_TOO_LONG"),
        ({"base": "DOGE"}, "UNKNOWN_TOKEN"),
        ({"base": "USDC"}, "UNKNOWN_TOKEN"),
        ({"chainId": 5}, "UNKNOWN_CHAIN"),
        ({"chainId": "31001"}, "BAD_MESSAGE"),
        ({"expiresAt": NOW}, "EXPIRED"),
        ({"expiresAt": NOW + 61}, "EXPIRY_TOO_FAR"),
        ({"expiresAt": None}, "BAD_MESSAGE"),
    ],
)
def test_ladder_errors(change: dict[str, Any], code: str) -> None:
    with pytest.raises(ProtocolError) as e:
        _parse(_ladder(**change))
    assert e.value.code is MmError(code)


# -- what a ladder can cost the maker, and trimming it to the maker's funds ---------------------

WETH = Asset(AssetSymbol("WETH"), ChainId(1), 18, Address("0x" + "01" * 20))
USDC = Asset(AssetSymbol("USDC"), ChainId(1), 6, Address("0x" + "02" * 20))
level = st.builds(Level, st.integers(10**15, 10**23), st.integers(1, 10**22), st.just(NOW + 10))


@settings(max_examples=200, deadline=None)
@given(lv=level)
def test_bid_cost_covers_what_the_ladder_pays_out(lv: Level) -> None:
    src = LadderSource("x", ChainId(1), WETH, USDC, bids=(lv,))
    # A trader selling the whole level gets at most what we charged the maker's funds.
    assert sum(f.cap_out for f in src.fills(WETH.symbol)) <= bid_cost(lv, 18, 6)
    src = LadderSource("x", ChainId(1), WETH, USDC, asks=(lv,))
    assert sum(f.cap_out for f in src.fills(USDC.symbol)) <= ask_cost(lv)


@settings(max_examples=200, deadline=None)
@given(levels=st.lists(level, max_size=6), capacity=st.integers(0, 10**12))
def test_trim_bids_fits_capacity_and_keeps_the_best(levels: list[Level], capacity: int) -> None:
    out = trim_bids(levels, capacity, 18, 6)
    assert sum(bid_cost(lv, 18, 6) for lv in out) <= capacity
    best_first = sorted(levels, key=lambda lv: -lv.price)
    # A prefix of the best levels, all whole except perhaps the last.
    for i, lv in enumerate(out):
        assert lv.price == best_first[i].price and lv.size <= best_first[i].size
        if i < len(out) - 1:
            assert lv.size == best_first[i].size
    if sum(bid_cost(lv, 18, 6) for lv in levels) <= capacity:
        assert out == tuple(best_first)
    elif out and len(out) <= len(best_first):
        # Maximal: one more base unit on the partial level would not fit.
        last = out[-1]
        spent = sum(bid_cost(lv, 18, 6) for lv in out[:-1])
        bigger = Level(last.price, last.size + 1, last.expires_at)
        assert (
            last.size == best_first[len(out) - 1].size or spent + bid_cost(bigger, 18, 6) > capacity
        )


@settings(max_examples=200, deadline=None)
@given(levels=st.lists(level, max_size=6), capacity=st.integers(0, 10**23))
def test_trim_asks_fits_capacity(levels: list[Level], capacity: int) -> None:
    out = trim_asks(levels, capacity)
    total = sum(lv.size for lv in levels)
    assert sum(lv.size for lv in out) == min(total, capacity)
    assert [lv.price for lv in out] == sorted(lv.price for lv in levels)[: len(out)]
