"""The one settings object: environment variables (prefix CROSSBOOK_, plus REDIS_URL)
over defaults. The devnet's own settings live in its TOML file (scripts/devnet/devnet.toml).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ROOT", "Settings", "get_settings"]

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROSSBOOK_", extra="ignore")

    state_dir: Path = ROOT / "var"
    devnet_config: Path = ROOT / "scripts" / "devnet" / "devnet.toml"
    manifest: Path = ROOT / "var" / "devnet" / "manifest.json"
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "CROSSBOOK_REDIS_URL"))
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    operator_key: str | None = None  # default: the devnet manifest's operator account
    quote_ttl_seconds: int = 30
    protocol_fee_bps: int = 0
    rate_limit_per_second: float = 5000.0  # per client address
    rate_limit_burst: float = 10000.0
    max_body_bytes: int = 64 * 1024
    settlement_batch_size: int = 32
    gas_price_gwei: float = 1.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
