"""The benchmark's load generator against the real API (a smoke test: the numbers are
the benchmark's business, the tool must count what it sent and what came back)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.devnet.devnet import Devnet
from tests.conftest import ApiProcess, embedded_redis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def api(devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """An API on its own Redis: the load touches every trader, whose order lists other
    tests of the shared ledger count."""
    with embedded_redis(tmp_path_factory.mktemp("load-redis")) as server:
        proc = ApiProcess(devnet.manifest_path, server.url, tmp_path_factory.mktemp("load-api"))
        try:
            yield proc
        finally:
            proc.stop()


def _load(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "-m", "bench.http_load", *args, "--out", str(out)], cwd=ROOT, check=True, timeout=120)
    return dict(json.loads(out.read_text()))


def test_open_loop_quotes_are_all_counted(api: ApiProcess, devnet: Devnet, tmp_path: Path) -> None:
    doc = _load(
        tmp_path, "quote-rate", "--url", api.url, "--manifest", str(devnet.manifest_path),
        "--rate", "40", "--seconds", "1", "--warmup", "0.5", "--concurrency", "4",
    )
    assert doc["requests"] == 40 and doc["status"] == {"200": 40}
    assert doc["sent"] == 60  # with the warm-up's 20: the server's CPU pays for them too
    assert 0 < doc["p50Ms"] <= doc["p99Ms"] <= doc["maxMs"]


def test_swap_load_gets_receipts(api: ApiProcess, devnet: Devnet, tmp_path: Path) -> None:
    doc = _load(
        tmp_path, "swap", "--url", api.url, "--manifest", str(devnet.manifest_path),
        "--rate", "10", "--seconds", "1", "--concurrency", "4", "--warmup", "2",
    )
    # 10 measured swaps after 2 s of warm-up at a quarter of the rate (5 swaps, apart).
    assert doc["swaps"] == 10 and doc["warmup"]["swaps"] == 5 and doc["status"] == {"200": 15}
    assert 0 < doc["p50Ms"] <= doc["p99Ms"] and doc["warmup"]["p50Ms"] > 0
    assert len({r["orderId"] for r in doc["receipts"]}) == 15
    assert doc["sent"] == 30  # a quote and a swap for each of the 15
