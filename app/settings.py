"""The one settings object: environment variables (prefix CROSSBOOK_, plus REDIS_URL)
over defaults. The devnet's own settings live in its TOML file (scripts/devnet/devnet.toml).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BATCH_CAPACITIES", "ROOT", "Settings", "get_settings"]

ROOT = Path(__file__).resolve().parent.parent
# The batch circuits' sizes (settlement.zk.batch.CAPACITIES, kept equal by a test; not
# imported, so reading settings loads no circuit code).
BATCH_CAPACITIES = (4, 8, 16, 32, 64)


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
    # Most legs one batch (one proof) holds; a larger backlog is cut as a group settled in
    # one transaction. Smaller: each proof is quicker, more proofs per backlog. One of the
    # circuit capacities.
    settlement_max_batch: int = max(BATCH_CAPACITIES)
    # Proofs give way to a busy API (settlement/prover_gate.py): a proof pauses while the
    # API serves at least this many quote and swap requests/s (0: never), until it has
    # been below for a second; each proof is held at most prover_max_hold_seconds in all.
    prover_yield_requests_per_second: float = 50.0
    prover_max_hold_seconds: float = 120.0
    fast_tier_enabled: bool = True  # off: every payout waits for its pull (limits: the manifest's fastTier)
    gas_price_gwei: float = 1.0
    # Market makers (WebSocket /v1/ws/mm; docs/market-makers.md)
    maker_allowlist: str | None = None  # comma-separated addresses; default: the manifest's makers
    mm_login_domain: str = "crossbook"  # signed into every login message
    mm_challenge_ttl_seconds: float = 30.0
    mm_heartbeat_seconds: float = 5.0  # server ping period; silence for 2 periods closes
    mm_levels_per_second: float = 10.0  # per connection (levels and cancel)
    mm_messages_per_second: float = 100.0  # per connection, every message type
    mm_cooldown_seconds: float = 1.0  # after going over a limit
    mm_max_levels: int = 20  # per side of one ladder
    mm_max_expiry_seconds: int = 60  # how far ahead levels and RFQ quotes may expire
    rfq_deadline_ms: int = 250
    rfq_min_validity_seconds: int = 5  # an RFQ quote must stay firm at least this long
    rfq_min_usd: float = 250_000.0  # orders from this value up are worth an RFQ

    @field_validator("settlement_max_batch")
    @classmethod
    def _a_capacity(cls, v: int) -> int:
        if v not in BATCH_CAPACITIES:
            raise ValueError(f"settlement_max_batch must be a batch circuit capacity, one of {BATCH_CAPACITIES}")
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
