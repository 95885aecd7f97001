"""The one Settings object, read from `W2E_*` environment variables and validated at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service. Values that affect rewards are published with each epoch."""

    model_config = SettingsConfigDict(env_prefix="W2E_", env_file=".env", extra="ignore")

    chain_id: int = Field(default=31337, ge=1, description="chain id of the receipts' EIP-712 domain")
    distributor: str = Field(
        default="0x" + "00" * 20,
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="RewardDistributor address (EIP-712 verifyingContract)",
    )
    genesis: int = Field(default=1_767_225_600, ge=0, description="unix time epoch 1 starts")
    epoch_seconds: int = Field(default=3600, ge=1)
    grace_seconds: int = Field(default=300, ge=0)
    clock_skew_seconds: int = Field(default=120, ge=0)
    max_age_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    max_session_age_seconds: int = Field(default=24 * 3600, ge=1)
    segment_seconds: int = Field(default=4, ge=1)
    max_bitrate_bps: int = Field(default=50_000_000, ge=1, description="bits per second")


def load_settings() -> Settings:
    return Settings()
