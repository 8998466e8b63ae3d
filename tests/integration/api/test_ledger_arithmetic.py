"""The confirm script's decimal-string arithmetic (`big_add`, `big_le`), run by a real Redis,
equals Python's integers: every amount a confirmation holds goes through it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.services.ledger import _BIG

pytestmark = pytest.mark.integration

MAX = 2**256  # wider than any amount the API accepts (2^128) or a token can hold


@pytest.fixture
def arith(redis_url: str) -> Iterator[Any]:
    r = redis.Redis.from_url(redis_url)
    script = r.register_script(_BIG + "\nreturn {big_add(ARGV[1], ARGV[2]), tostring(big_le(ARGV[1], ARGV[2]))}")

    def run(a: str, b: str) -> tuple[int, bool]:
        total, le = script(args=[a, b])
        assert total == total.lstrip(b"0") or total == b"0", total  # canonical: no leading zeros
        return int(total), le == b"true"

    yield run
    r.close()


def _check(arith: Any, a: int, b: int, pad_a: int = 0, pad_b: int = 0) -> None:
    sa, sb = "0" * pad_a + str(a), "0" * pad_b + str(b)
    assert arith(sa, sb) == (a + b, a <= b), (sa, sb)


@pytest.mark.parametrize(
    "a,b",
    [
        (0, 0),
        (1, 0),
        (10**14 - 1, 1),  # the carry out of one 14-digit chunk
        (10**28 - 1, 1),  # through two chunks
        (10**28 - 1, 10**28 - 1),
        (10**14, 10**14 - 1),
        (5 * 10**13, 5 * 10**13),  # exactly one chunk's base
        (MAX - 1, MAX - 1),
        (123, 10**40),
    ],
)
def test_edges(arith: Any, a: int, b: int) -> None:
    _check(arith, a, b)
    _check(arith, b, a)


def test_leading_zeros_are_the_same_number(arith: Any) -> None:
    _check(arith, 0, 0, pad_a=3, pad_b=1)
    _check(arith, 10**14 - 1, 7, pad_a=2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, MAX), st.integers(0, MAX), st.integers(0, 3))
def test_random_amounts(arith: Any, a: int, b: int, pad: int) -> None:
    _check(arith, a, b, pad_a=pad)


def test_amounts_of_every_length(arith: Any) -> None:
    rnd = random.Random(11)
    for da in range(1, 80):
        for db in (1, 13, 14, 15, 27, 28, 29, da):
            a = rnd.randrange(10 ** (da - 1), 10**da)
            b = rnd.randrange(10 ** (db - 1), 10**db)
            _check(arith, a, b)
            _check(arith, 10**da - 1, 10**db - 1)  # all nines: a carry through every chunk
