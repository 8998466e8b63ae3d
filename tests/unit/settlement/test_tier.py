"""The fast settlement tier's decision: pure, integer, the same for quote and worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.manifest import Account, ChainInfo, Manifest, TokenInfo
from scripts.devnet.config import ConfigError, load_config
from settlement.lifecycle import IllegalTransition, transition
from settlement.tier import FastTierLimits, Tier, TierRules, order_eta, usd6

A, B = 31002, 31003
PRICES = {"USDC": usd6(1), "WETH": usd6(3000), "WBTC": usd6(60000)}
RULES = TierRules(PRICES, {A: FastTierLimits(usd6(100), usd6(250))})


def test_usd6_is_exact_for_config_values() -> None:
    assert usd6(100) == 100_000_000
    assert usd6(0.1) == 100_000  # Fraction of the decimal text, not of the binary float
    assert usd6("3000.5") == 3_000_500_000


def test_value_rounds_up_never_undervaluing_a_risk() -> None:
    assert RULES.value("USDC", 100_000_000, 6) == 100_000_000
    assert RULES.value("WETH", 10**18, 18) == 3_000_000_000
    # 1 wei of WETH is worth 3e-9 usd6: rounds up to 1.
    assert RULES.value("WETH", 1, 18) == 1
    assert RULES.value("WBTC", 1, 8) == 600  # 60000 USD / 1e8 = 0.0006 USD
    assert RULES.value("DAI", 10**18, 18) is None  # no reference price


def test_eligible_by_size_at_and_above_the_cap() -> None:
    at_cap = RULES.eligible(A, B, "USDC", 100_000_000, 6)
    assert at_cap.tier is Tier.FAST and at_cap.value == usd6(100)
    above = RULES.eligible(A, B, "USDC", 100_000_001, 6)
    assert above.tier is Tier.STANDARD and "above the fast-tier cap" in above.reason
    # The same value in another asset and decimals: 0.0333... WETH ≈ 100 USD.
    assert RULES.eligible(A, B, "WETH", 33_333_333_333_333_333, 18).tier is Tier.FAST
    assert RULES.eligible(A, B, "WETH", 33_333_333_333_333_334, 18).tier is Tier.STANDARD


def test_only_cross_chain_priced_orders_on_a_chain_with_limits_are_fast() -> None:
    assert RULES.eligible(A, A, "USDC", 1, 6).reason == "same-chain order"
    assert RULES.eligible(B, A, "USDC", 1, 6).tier is Tier.STANDARD  # B has no fast tier
    assert RULES.eligible(A, B, "DAI", 1, 18).tier is Tier.STANDARD  # no price
    assert RULES.eligible(A, B, "USDC", 1, 6, rfq=True).tier is Tier.STANDARD


def test_exposure_cap_is_respected_exactly() -> None:
    ninety = 90_000_000
    assert RULES.decide(A, B, "USDC", ninety, 6, exposure=0).tier is Tier.FAST
    assert RULES.decide(A, B, "USDC", ninety, 6, exposure=usd6(160)).tier is Tier.FAST  # 160 + 90 = 250
    full = RULES.decide(A, B, "USDC", ninety, 6, exposure=usd6(160) + 1)
    assert full.tier is Tier.STANDARD and "exceed" in full.reason and full.value == ninety


def test_decide_order_reads_the_ledger_document() -> None:
    rules = TierRules(PRICES, RULES.limits, {(B, "USDC"): 6, (A, "USDC"): 6})
    doc = {"order": {"sellChainId": A, "buyChainId": B}, "buySymbol": "USDC", "buyAmount": "99000000", "rfq": None}
    assert rules.decide_order(doc, 0).tier is Tier.FAST
    assert rules.decide_order({**doc, "rfq": {"maker": "0x"}}, 0).tier is Tier.STANDARD
    assert rules.decide_order({**doc, "buySymbol": "WETH"}, 0).reason.endswith("is not in the manifest")


def test_order_eta_per_tier() -> None:
    assert order_eta(Tier.STANDARD, 10.0, 20.0, cross_chain=True) == 30.0
    assert order_eta(Tier.FAST, 10.0, 20.0, cross_chain=True) == 20.5  # payout one tick later, in parallel
    assert order_eta(Tier.FAST, 30.0, 20.0, cross_chain=True) == 30.0
    assert order_eta(Tier.STANDARD, 10.0, 20.0, cross_chain=False) == 10.0


def test_payout_first_is_a_legal_transition_and_terminal_states_stay() -> None:
    assert transition("confirmed", "settled")
    assert transition("settled", "finalized")
    with pytest.raises(IllegalTransition):
        transition("finalized", "settled")


def _manifest(fast: int, exposure: int) -> Manifest:
    acct = Account("x", "0x" + "11" * 20, "0x" + "22" * 32)
    chains = tuple(
        ChainInfo(f"c{c}", c, "http://x", "ws://x", 1.0, 3, {"USDC": TokenInfo("USDC", "0x" + "33" * 20, 6)}, (), acct.address,
                  fast_tier_usd6=fast if c == A else 0, fast_exposure_usd6=exposure if c == A else 0)
        for c in (A, B)
    )
    return Manifest(chains, {"USDC": "USD Coin"}, acct, acct, (), (), prices={"USDC": usd6(1)})


def test_manifest_round_trip_and_rules_from_it() -> None:
    m = Manifest.from_json(json.loads(json.dumps(_manifest(usd6(100), usd6(2000)).to_json())))
    assert m.prices == {"USDC": 1_000_000}
    assert (m.chain(A).fast_tier_usd6, m.chain(A).fast_exposure_usd6) == (100_000_000, 2_000_000_000)
    rules = TierRules.from_manifest(m)
    assert rules.limits == {A: FastTierLimits(100_000_000, 2_000_000_000)}
    assert rules.decimals[(B, "USDC")] == 6
    assert TierRules.from_manifest(m, enabled=False).limits == {}
    # An older manifest without prices or fastTier: no fast tier anywhere.
    old = m.to_json()
    for c in old["chains"]:
        del c["fastTier"]
    for a in old["assets"]:
        del a["usd6"]
    assert TierRules.from_manifest(Manifest.from_json(old)).limits == {}


def test_devnet_config_defaults_overrides_and_validation(tmp_path: Path) -> None:
    cfg = load_config()
    assert all((c.fast_tier_usd, c.fast_exposure_usd) == (100.0, 2000.0) for c in cfg.chains)
    src = Path(cfg.source or "").read_text()
    custom = tmp_path / "devnet.toml"
    custom.write_text(src.replace("depth_scale = 0.6\n", "depth_scale = 0.6\nfast_tier_usd = 0\n", 1))
    by_id = {c.chain_id: c for c in load_config(custom).chains}
    assert by_id[31002].fast_tier_usd == 0.0 and by_id[31001].fast_tier_usd == 100.0
    custom.write_text(src.replace("fast_exposure_usd = 2000", "fast_exposure_usd = 50", 1))
    with pytest.raises(ConfigError, match="fast_tier_usd"):
        load_config(custom)
