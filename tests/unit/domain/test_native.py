"""The router compiled with mypyc: used by the suite, current, and equal to its sources."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from app.domain import native
from scripts.build_native import compiler
from tests.python_json import python_json

ROOT = Path(__file__).resolve().parents[3]

# Routes generated books (direct splits over every source kind and two-hop paths through
# WETH, exact in and out) and prints every amount, or the error a request raised.
ROUTE_SCRIPT = """
import json, sys
import pytest

from app.domain import native
from scripts.build_native import compiler
from app.domain.router import Router
from tests.unit.domain.test_router import CHAINS, DAI, USDC, random_book
out = {"active": native.ACTIVE, "routes": []}
for seed in range(6):
    book = random_book(seed, 24 if seed % 2 else 2, with_weth=True)  # few direct pools: two hops
    sell, buy = book.asset(USDC, CHAINS[seed % 3]), book.asset(DAI, CHAINS[(seed + 1) % 3])
    router = Router()
    for k in range(12):
        amount = 10 ** (sell.decimals - 2 + k // 2) * (3 + 7 * (k % 2))
        for side in ("in", "out"):
            try:
                r = (router.route_exact_in if side == "in" else router.route_exact_out)(book, sell, buy, amount)
                legs = [[l.source_id, l.hop, str(l.amount_in), str(l.amount_out)] for l in r.legs]
                out["routes"].append([side, str(r.amount_in), str(r.amount_out), r.price_impact_bps, legs])
            except Exception as exc:
                out["routes"].append([side, str(amount), type(exc).__name__])
print(json.dumps(out))
"""


def _run(script: str, **env: str) -> dict[str, Any]:
    doc: dict[str, Any] = python_json(script, ROOT, **env)
    return doc


# Which modules run: compiled (`.so`) or sources (`.py`), and why.
WHICH_SCRIPT = (
    "import json, importlib, sys; from app.domain import native; "
    "print(json.dumps({'active': native.ACTIVE, 'reason': native.REASON, 'path': sys.path, "
    "'files': [importlib.import_module(m).__file__ for m in native.MODULES]}))"
)


needs_compiler = pytest.mark.skipif(
    compiler() is None, reason="no C compiler here: the router runs from its sources (make install says so)"
)


@needs_compiler
def test_the_suite_runs_the_compiled_router() -> None:
    # `make test` compiles first (make install); a stale or missing build fails here
    # rather than silently testing the sources only.
    assert native.ACTIVE, native.REASON
    for m in native.MODULES:
        assert importlib.import_module(m).__file__.endswith(".so"), m  # type: ignore[union-attr]


def test_a_stale_build_is_not_used() -> None:
    digest = native.sources_digest()
    stamp = {
        "digest": digest,
        "python": sys.implementation.cache_tag,
        "modules": list(native.MODULES),
        "sharedLib": native.SHARED_LIB,
    }
    assert native.fresh(stamp, digest)
    # A build from before the shared library moved into the package.
    assert not native.fresh({k: v for k, v in stamp.items() if k != "sharedLib"}, digest)
    assert not native.fresh(None, digest)
    assert not native.fresh({**stamp, "digest": "0" * 64}, digest)
    assert not native.fresh({**stamp, "python": "cpython-310"}, digest)
    assert not native.fresh({**stamp, "modules": list(native.MODULES[:-1])}, digest)
    # An edited source changes the digest the stamp is compared with.
    assert len({digest, native.sources_digest()}) == 1


@needs_compiler
def test_compiled_modules_import_where_the_repo_root_is_not_on_the_path(tmp_path: Path) -> None:
    # As under the `crossbook` script (`make up`, `crossbook settlement status`): the
    # editable install maps the packages, not the repo root. mypyc's default top-level
    # shared library was not found there (`No module named '…__mypyc'`).
    doc = python_json(WHICH_SCRIPT, tmp_path, unset=("PYTHONPATH",), timeout=120)
    assert str(ROOT) not in doc["path"]
    assert doc["active"], doc["reason"]
    assert all(f.endswith(".so") for f in doc["files"]), doc["files"]


def test_sources_run_when_asked() -> None:
    doc = _run(WHICH_SCRIPT, CROSSBOOK_NATIVE="0")
    assert doc["active"] is False and doc["reason"] == "CROSSBOOK_NATIVE=0"
    assert all(f.endswith(".py") for f in doc["files"])


@needs_compiler
def test_compiled_and_source_routers_agree_to_the_unit() -> None:
    compiled = _run(ROUTE_SCRIPT)
    sources = _run(ROUTE_SCRIPT, CROSSBOOK_NATIVE="0")
    assert compiled["active"] is True and sources["active"] is False
    routes: list[list[Any]] = compiled["routes"]
    assert len(routes) == 6 * 12 * 2
    assert sum(len(r) == 5 for r in routes) > 100  # most requests route
    assert any(leg[1] == 1 for r in routes if len(r) == 5 for leg in r[4])  # two-hop legs too
    assert routes == sources["routes"]
