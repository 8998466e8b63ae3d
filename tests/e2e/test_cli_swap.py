"""`crossbook quote|swap|order` against the running API, as a trader would use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.devnet.devnet import Devnet

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _cli(devnet: Devnet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CROSSBOOK_MANIFEST": str(devnet.manifest_path)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_swap_prints_a_receipt_and_order_shows_it(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    assert m is not None
    common = ["--sell-chain", str(m.chains[0].chain_id), "--sell", "WETH", "--buy-chain", str(m.chains[1].chain_id), "--buy", "USDC", "--amount", str(10**16), "--trader", "trader8", "--api", api.url]
    q = _cli(devnet, "quote", *common)
    assert q.returncode == 0, q.stderr
    assert int(json.loads(q.stdout)["buyAmount"]) > 0
    s = _cli(devnet, "swap", *common)
    assert s.returncode == 0, s.stderr
    receipt = json.loads(s.stdout)
    assert receipt["state"] == "confirmed" and receipt["signer"] == m.operator.address
    o = _cli(devnet, "order", receipt["orderId"], "--api", api.url)
    assert o.returncode == 0, o.stderr
    assert json.loads(o.stdout)["id"] == receipt["orderId"]


def test_bad_amount_and_unknown_trader_are_named(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    assert m is not None
    base = ["--sell-chain", str(m.chains[0].chain_id), "--sell", "WETH", "--buy-chain", str(m.chains[1].chain_id), "--buy", "USDC", "--api", api.url]
    r = _cli(devnet, "swap", *base, "--amount", "1.5")
    assert r.returncode == 2 and "base units" in r.stderr
    r = _cli(devnet, "swap", *base, "--amount", "10", "--trader", "nobody")
    assert r.returncode == 2 and "no devnet account" in r.stderr
    r = _cli(devnet, "swap", *base, "--amount", str(10**40))
    assert r.returncode == 2 and "AMOUNT_TOO_LARGE" in r.stderr
