from __future__ import annotations

from pathlib import Path

import pytest

from scripts.devnet.config import DEFAULT_CONFIG, ConfigError, load_config


def test_default_has_three_distinct_chains_five_assets_and_both_pool_kinds() -> None:
    cfg = load_config()
    assert len(cfg.chains) == 3
    assert len({c.chain_id for c in cfg.chains}) == 3
    assert len({c.block_time for c in cfg.chains}) == 3
    assert len({c.finality_depth for c in cfg.chains}) == 3
    assert {a.symbol: a.decimals for a in cfg.assets} == {"USDC": 6, "USDT": 6, "DAI": 18, "WETH": 18, "WBTC": 8}
    assert len(cfg.pools) >= 4
    assert {p.kind for p in cfg.pools} == {"constant_product", "stableswap"}
    assert len({p.fee_bps for p in cfg.pools}) >= 3


def test_chains_option_scales_beyond_the_templates_with_unique_ids_and_ports() -> None:
    cfg = load_config(chains=12, base_port=9000)
    assert len(cfg.chains) == 12
    assert len({c.chain_id for c in cfg.chains}) == 12
    assert [c.port for c in cfg.chains] == list(range(9000, 9012))
    assert len({c.name for c in cfg.chains}) == 12


def test_base_port_zero_means_free_ports() -> None:
    assert all(c.port == 0 for c in load_config(base_port=0).chains)


@pytest.mark.parametrize("n", [0, -1, 65])
def test_chain_count_out_of_range(n: int) -> None:
    with pytest.raises(ConfigError, match="--chains"):
        load_config(chains=n)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "devnet.toml"
    p.write_text(text)
    return p


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[[chains]\n"))


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (("block_time = 2.0", "block_time = 0"), "block_time"),
        (("chain_id = 31002", "chain_id = 31001"), "duplicate chain_id"),
        (("finality_depth = 12", 'finality_depth = "x"'), "finality_depth"),
        (('kind = "stableswap"\npair = ["USDC", "USDT"]', 'kind = "weird"\npair = ["USDC", "USDT"]'), "kind"),
        (('pair = ["WETH", "DAI"]', 'pair = ["WETH", "NOPE"]'), "pair"),
        (("amp = 200", "amp = 0"), "amp"),
        (("fee_bps = 100", "fee_bps = 5000"), "fee_bps"),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, mutation: tuple[str, str], message: str) -> None:
    text = DEFAULT_CONFIG.read_text()
    old, new = mutation
    assert old in text
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text.replace(old, new, 1)))
