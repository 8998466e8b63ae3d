"""The fast settlement tier's decision: pure, integer, the same for quote and worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.manifest import Account, ChainInfo, Manifest, TokenInfo
from scripts.devnet.config import ConfigError, load_config
from settlement.lifecycle import IllegalTransition, transition
from settlement.tier import (
    FastTierLimits,
    Switch,
    Tier,
    TierRules,
    order_eta,
    usd6,
    usd_text,
    window_losses,
)

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


def test_trader_cap_is_respected_exactly_and_after_the_exposure_cap() -> None:
    rules = TierRules(PRICES, {A: FastTierLimits(usd6(100), usd6(250), trader_cap=usd6(120))})
    ninety = 90_000_000
    assert rules.decide(A, B, "USDC", ninety, 6, exposure=0, trader_exposure=usd6(30)).tier is Tier.FAST  # 30 + 90 = 120
    mine = rules.decide(A, B, "USDC", ninety, 6, exposure=0, trader_exposure=usd6(30) + 1)
    assert mine.tier is Tier.STANDARD and "the trader's fast-tier exposure" in mine.reason and mine.value == ninety
    # Another trader with nothing open still goes fast on the same chain exposure.
    assert rules.decide(A, B, "USDC", ninety, 6, exposure=usd6(120), trader_exposure=0).tier is Tier.FAST
    # Without a trader cap, only the exposure cap applies (the limits of older tests).
    assert RULES.decide(A, B, "USDC", ninety, 6, exposure=0, trader_exposure=usd6(10_000)).tier is Tier.FAST


def test_a_switched_off_chain_is_standard_for_quote_and_worker() -> None:
    off = TierRules(PRICES, RULES.limits, off={A: "loss budget exceeded"})
    q = off.eligible(A, B, "USDC", 1_000_000, 6)
    assert q.tier is Tier.STANDARD and q.reason == f"chain {A}'s fast tier is off: loss budget exceeded"
    assert RULES.decide(A, B, "USDC", 1_000_000, 6, exposure=0, off="by hand").reason == f"chain {A}'s fast tier is off: by hand"
    # Same-chain and maker orders keep their own reason; other chains are not affected.
    assert off.eligible(A, A, "USDC", 1, 6).reason == "same-chain order"
    rules = TierRules(PRICES, {A: RULES.limits[A], B: RULES.limits[A]}, off={A: "x"})
    assert rules.eligible(B, A, "USDC", 1_000_000, 6).tier is Tier.FAST


def test_loss_budget_counts_the_window_and_nothing_before_a_re_enable() -> None:
    lim = FastTierLimits(usd6(100), usd6(1000), loss_budget=usd6(50), loss_window=3600)
    now = 10_000_000_000
    assert lim.counted_since(Switch(), now) == now - 3_600_000
    assert lim.counted_since(Switch(True, "operator", "", now - 60_000, now - 60_000), now) == now - 60_000
    assert not lim.over_budget(usd6(50)) and lim.over_budget(usd6(50) + 1)
    assert not FastTierLimits(1, 1).over_budget(10**18)  # no budget: never
    assert window_losses(["0xab:30000000", b"0xcd:20000001"]) == 50_000_001


def test_switch_hash_round_trip_and_absent_is_on() -> None:
    assert Switch.from_hash({}) == Switch() and Switch().on
    sw = Switch(False, "loss budget", "losses of 1 usd6", 123, 45)
    assert Switch.from_hash(sw.to_hash()) == sw
    assert Switch.from_hash({k.encode(): v.encode() for k, v in sw.to_hash().items()}) == sw  # a bytes client


def test_usd_text() -> None:
    assert [usd_text(v) for v in (0, usd6(100), usd6("0.5"), usd6("2.000001"))] == ["0", "100", "0.5", "2.000001"]


def test_limits_defaults_for_fields_a_manifest_lacks() -> None:
    assert FastTierLimits.resolve(usd6(100), usd6(2000)) == FastTierLimits(usd6(100), usd6(2000), usd6(500), usd6(1000), 86_400)
    # A quarter below one payout would make every payout too large for one trader: one payout.
    assert FastTierLimits.resolve(usd6(100), usd6(200)).trader_cap == usd6(100)
    assert FastTierLimits.resolve(usd6(100), usd6(2000), usd6(300), usd6(70), 60) == FastTierLimits(
        usd6(100), usd6(2000), usd6(300), usd6(70), 60
    )


def _manifest(fast: int, exposure: int, trader: int = 0, budget: int = 0, window: int = 0) -> Manifest:
    acct = Account("x", "0x" + "11" * 20, "0x" + "22" * 32)
    chains = tuple(
        ChainInfo(f"c{c}", c, "http://x", "ws://x", 1.0, 3, {"USDC": TokenInfo("USDC", "0x" + "33" * 20, 6)}, (), acct.address,
                  fast_tier_usd6=fast if c == A else 0, fast_exposure_usd6=exposure if c == A else 0,
                  fast_trader_cap_usd6=trader if c == A else 0, fast_loss_budget_usd6=budget if c == A else 0,
                  fast_loss_window_seconds=window if c == A else 0)
        for c in (A, B)
    )
    return Manifest(chains, {"USDC": "USD Coin"}, acct, acct, (), (), prices={"USDC": usd6(1)})


def test_manifest_round_trip_and_rules_from_it() -> None:
    full = _manifest(usd6(100), usd6(2000), trader=usd6(400), budget=usd6(300), window=7200)
    m = Manifest.from_json(json.loads(json.dumps(full.to_json())))
    assert m.prices == {"USDC": 1_000_000}
    assert (m.chain(A).fast_tier_usd6, m.chain(A).fast_exposure_usd6) == (100_000_000, 2_000_000_000)
    rules = TierRules.from_manifest(m)
    assert rules.limits == {A: FastTierLimits(100_000_000, 2_000_000_000, 400_000_000, 300_000_000, 7200)}
    assert rules.decimals[(B, "USDC")] == 6 and rules.off == {}
    assert TierRules.from_manifest(m, enabled=False).limits == {}
    # A manifest written before the per-trader cap and the loss budget: their defaults.
    old = m.to_json()
    for k in ("traderCapUsd6", "lossBudgetUsd6", "lossWindowSeconds"):
        del old["chains"][0]["fastTier"][k]
    assert TierRules.from_manifest(Manifest.from_json(old)).limits == {A: FastTierLimits(usd6(100), usd6(2000), usd6(500), usd6(1000), 86_400)}
    # An older manifest without prices or fastTier: no fast tier anywhere.
    for c in old["chains"]:
        del c["fastTier"]
    for a in old["assets"]:
        del a["usd6"]
    assert TierRules.from_manifest(Manifest.from_json(old)).limits == {}


def test_devnet_config_defaults_overrides_and_validation(tmp_path: Path) -> None:
    cfg = load_config()
    assert all((c.fast_tier_usd, c.fast_exposure_usd) == (100.0, 2000.0) for c in cfg.chains)
    assert all((c.fast_trader_cap_usd, c.fast_loss_budget_usd, c.fast_loss_window_hours) == (500.0, 1000.0, 24.0) for c in cfg.chains)
    src = Path(cfg.source or "").read_text()
    custom = tmp_path / "devnet.toml"
    custom.write_text(src.replace("depth_scale = 0.6\n", "depth_scale = 0.6\nfast_tier_usd = 0\n", 1))
    by_id = {c.chain_id: c for c in load_config(custom).chains}
    assert by_id[31002].fast_tier_usd == 0.0 and by_id[31001].fast_tier_usd == 100.0
    custom.write_text(src.replace("fast_exposure_usd = 2000", "fast_exposure_usd = 50", 1))
    with pytest.raises(ConfigError, match="fast_tier_usd"):
        load_config(custom)
    custom.write_text(src.replace("fast_trader_cap_usd = 500", "fast_trader_cap_usd = 2500", 1))
    with pytest.raises(ConfigError, match="fast_trader_cap_usd"):
        load_config(custom)
    custom.write_text(src.replace("fast_loss_budget_usd = 1000", "fast_loss_budget_usd = -1", 1))
    with pytest.raises(ConfigError, match="fast_loss_budget_usd"):
        load_config(custom)
    # A config without the new keys: 0, the tier's defaults (resolved from the manifest).
    for k in ("fast_trader_cap_usd", "fast_loss_budget_usd", "fast_loss_window_hours"):
        src = "\n".join(line for line in src.splitlines() if not line.startswith(k))
    custom.write_text(src)
    assert {(c.fast_trader_cap_usd, c.fast_loss_budget_usd, c.fast_loss_window_hours) for c in load_config(custom).chains} == {(0.0, 0.0, 0.0)}
