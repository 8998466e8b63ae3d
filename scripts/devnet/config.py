"""Devnet configuration: one TOML file describes chains, assets, pools and funding.

`load_config(path, chains=N)` validates the file and returns frozen records; with N
larger than the templates in the file, templates are reused with fresh chain ids and
ports, so `--chains 5` or `--chains 8` always works.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CONFIG",
    "AssetSpec",
    "ChainSpec",
    "ConfigError",
    "DevnetConfig",
    "PoolSpec",
    "load_config",
]

DEFAULT_CONFIG = Path(__file__).with_name("devnet.toml")
POOL_KINDS = ("constant_product", "stableswap")


class ConfigError(ValueError):
    """The devnet config file is missing or invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class ChainSpec:
    name: str
    chain_id: int
    block_time: float
    finality_depth: int
    price_skew_bps: int = 0
    depth_scale: float = 1.0
    port: int = 0  # 0: choose a free port at start
    # Fast settlement tier for pulls on this chain (settlement/tier.py), in USD: the
    # largest payout fronted before its pull settles (0: none), the most outstanding, the
    # most outstanding per trader, and the failed-pull losses within the window (hours)
    # that turn the tier off. 0: the tier's default (a quarter of the exposure cap per
    # trader, half of it as the budget, 24 h).
    fast_tier_usd: float = 0.0
    fast_exposure_usd: float = 0.0
    fast_trader_cap_usd: float = 0.0
    fast_loss_budget_usd: float = 0.0
    fast_loss_window_hours: float = 0.0


@dataclass(frozen=True, slots=True)
class AssetSpec:
    symbol: str
    name: str
    decimals: int
    usd: float  # reference price: sizes devnet liquidity and funding, values fast-tier payouts

    def units(self, usd_value: float) -> int:
        """Base units worth `usd_value` dollars."""
        # Fractions, not floats: seeded balances are exact, round numbers of base units.
        return round(Fraction(str(usd_value)) / Fraction(str(self.usd)) * 10**self.decimals)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    kind: str
    pair: tuple[str, str]
    fee_bps: int
    depth_usd: float
    amp: int = 0
    skew_extra_bps: int = 0


@dataclass(frozen=True, slots=True)
class DevnetConfig:
    chains: tuple[ChainSpec, ...]
    assets: tuple[AssetSpec, ...]
    pools: tuple[PoolSpec, ...]
    state_dir: Path
    accounts: int = 20
    traders: int = 8
    makers: int = 3
    trader_usd: float = 250_000
    maker_usd: float = 2_000_000
    inventory_usd: float = 5_000_000
    source: Path | None = None

    def asset(self, symbol: str) -> AssetSpec:
        for a in self.assets:
            if a.symbol == symbol:
                return a
        raise KeyError(symbol)

    def with_ports(self, ports: list[int]) -> DevnetConfig:
        return replace(self, chains=tuple(replace(c, port=p) for c, p in zip(self.chains, ports, strict=True)))


def _require(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing `{key}`")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: `{key}` has the wrong type ({type(value).__name__})")
    return value


def load_config(path: Path | str | None = None, chains: int | None = None, base_port: int | None = None) -> DevnetConfig:
    src = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(src.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {src}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{src}: not valid TOML: {e}") from None

    dev = raw.get("devnet", {})
    templates = raw.get("chains") or []
    if not templates:
        raise ConfigError(f"{src}: no [[chains]] defined")
    n = chains if chains is not None else len(templates[:3])
    if n < 1 or n > 64:
        raise ConfigError(f"--chains must be between 1 and 64, got {n}")
    port0 = base_port if base_port is not None else int(dev.get("base_port", 8545))

    specs: list[ChainSpec] = []
    seen: set[int] = set()
    for k in range(n):
        t = templates[k % len(templates)]
        where = f"{src}: chains[{k % len(templates)}]"
        cid = int(_require(t, "chain_id", int, where)) + 100 * (k // len(templates))
        if cid in seen:
            raise ConfigError(f"{where}: duplicate chain_id {cid}")
        seen.add(cid)
        bt = float(_require(t, "block_time", (int, float), where))
        depth = int(_require(t, "finality_depth", int, where))
        if bt <= 0 or depth < 1:
            raise ConfigError(f"{where}: block_time must be > 0 and finality_depth ≥ 1")
        fast_usd = float(t.get("fast_tier_usd", dev.get("fast_tier_usd", 0.0)))
        fast_exposure = float(t.get("fast_exposure_usd", dev.get("fast_exposure_usd", 0.0)))
        if fast_usd < 0 or fast_exposure < fast_usd:
            raise ConfigError(f"{where}: need 0 ≤ fast_tier_usd ≤ fast_exposure_usd")
        fast_trader = float(t.get("fast_trader_cap_usd", dev.get("fast_trader_cap_usd", 0.0)))
        if fast_trader and not fast_usd <= fast_trader <= fast_exposure:
            raise ConfigError(f"{where}: need fast_tier_usd ≤ fast_trader_cap_usd ≤ fast_exposure_usd (or 0: the default)")
        fast_budget = float(t.get("fast_loss_budget_usd", dev.get("fast_loss_budget_usd", 0.0)))
        fast_window = float(t.get("fast_loss_window_hours", dev.get("fast_loss_window_hours", 0.0)))
        if fast_budget < 0 or fast_window < 0:
            raise ConfigError(f"{where}: fast_loss_budget_usd and fast_loss_window_hours must be ≥ 0 (0: the default)")
        name = str(t.get("name", f"chain-{cid}"))
        if k >= len(templates):
            name = f"{name}-{k // len(templates)}"
        specs.append(
            ChainSpec(
                name=name,
                chain_id=cid,
                block_time=bt,
                finality_depth=depth,
                price_skew_bps=int(t.get("price_skew_bps", 0)),
                depth_scale=float(t.get("depth_scale", 1.0)),
                port=(port0 + k) if port0 else 0,
                fast_tier_usd=fast_usd,
                fast_exposure_usd=fast_exposure,
                fast_trader_cap_usd=fast_trader,
                fast_loss_budget_usd=fast_budget,
                fast_loss_window_hours=fast_window,
            )
        )

    assets: list[AssetSpec] = []
    for i, a in enumerate(raw.get("assets") or []):
        where = f"{src}: assets[{i}]"
        dec = int(_require(a, "decimals", int, where))
        if not 0 <= dec <= 36:
            raise ConfigError(f"{where}: decimals out of range")
        assets.append(
            AssetSpec(
                symbol=str(_require(a, "symbol", str, where)),
                name=str(a.get("name", a["symbol"])),
                decimals=dec,
                usd=float(_require(a, "usd", (int, float), where)),
            )
        )
    if len({a.symbol for a in assets}) != len(assets) or not assets:
        raise ConfigError(f"{src}: assets must be non-empty with unique symbols")
    symbols = {a.symbol for a in assets}

    pools: list[PoolSpec] = []
    for i, p in enumerate(raw.get("pools") or []):
        where = f"{src}: pools[{i}]"
        kind = _require(p, "kind", str, where)
        if kind not in POOL_KINDS:
            raise ConfigError(f"{where}: kind must be one of {POOL_KINDS}, got {kind!r}")
        pair = p.get("pair")
        if not (isinstance(pair, list) and len(pair) == 2 and set(pair) <= symbols and pair[0] != pair[1]):
            raise ConfigError(f"{where}: pair must name two different configured assets")
        fee = int(_require(p, "fee_bps", int, where))
        if not 0 <= fee <= 1000:
            raise ConfigError(f"{where}: fee_bps must be within 0..1000")
        amp = int(p.get("amp", 0))
        if kind == "stableswap" and amp <= 0:
            raise ConfigError(f"{where}: a stableswap pool needs amp > 0")
        pools.append(
            PoolSpec(
                kind=kind,
                pair=(pair[0], pair[1]),
                fee_bps=fee,
                depth_usd=float(_require(p, "depth_usd", (int, float), where)),
                amp=amp,
                skew_extra_bps=int(p.get("skew_extra_bps", 0)),
            )
        )

    accounts = int(dev.get("accounts", 20))
    traders = int(dev.get("traders", 8))
    makers = int(dev.get("makers", 3))
    if 2 + traders + makers > accounts:
        raise ConfigError(f"{src}: accounts ({accounts}) < 2 + traders + makers")
    return DevnetConfig(
        chains=tuple(specs),
        assets=tuple(assets),
        pools=tuple(pools),
        state_dir=Path(str(dev.get("state_dir", "var/devnet"))),
        accounts=accounts,
        traders=traders,
        makers=makers,
        trader_usd=float(dev.get("trader_usd", 250_000)),
        maker_usd=float(dev.get("maker_usd", 2_000_000)),
        inventory_usd=float(dev.get("inventory_usd", 5_000_000)),
        source=src,
    )
