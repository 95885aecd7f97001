"""The one Settings object, read from `W2E_*` environment variables and validated at start-up."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Shortest W2E_ADMIN_TOKEN taken outside dev mode: 32 characters of a random token (e.g.
# `openssl rand -hex 16`) carry 128 bits, beyond guessing through a rate-limited API.
ADMIN_TOKEN_MIN_CHARS = 32


class Settings(BaseSettings):
    """Every knob of the service. Values that affect rewards are published with each epoch."""

    model_config = SettingsConfigDict(env_prefix="W2E_", env_file=".env", extra="ignore")
    # Set by load_settings when neither W2E_GENESIS nor a deployment record gives the
    # genesis: the store pins it at its first start (`pin_genesis`), never the class default.
    _genesis_from_store: bool = PrivateAttr(default=False)

    chain_id: int = Field(
        default=31337, ge=1, description="chain id of the receipts' EIP-712 domain"
    )
    distributor: str = Field(
        default="0x" + "00" * 20,
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="RewardDistributor address (EIP-712 verifyingContract)",
    )
    genesis: int = Field(
        default=1_767_225_600,
        ge=0,
        description="unix time epoch 1 starts; without W2E_GENESIS and a deployment record, "
        "the store's first start rounded down to a whole epoch (pinned in the store)",
    )
    epoch_seconds: int = Field(default=3600, ge=1, description="epoch length, seconds")
    grace_seconds: int = Field(
        default=300, ge=0, description="seconds after an epoch's end its receipts may still arrive"
    )
    # Receipt parameters: names as in PROTOCOL section 3 (`skew` is `clock_skew`), all integers.
    clock_skew: int = Field(
        default=120, ge=0, description="seconds a receipt's issuedAt may run ahead of now"
    )
    max_age: int = Field(
        default=7 * 24 * 3600, ge=1, description="seconds after issuedAt a receipt is still taken"
    )
    max_session_age: int = Field(
        default=24 * 3600, ge=1, description="max issuedAt - startedAt, seconds"
    )
    segment_seconds: int = Field(default=4, ge=1, description="media seconds per segment")
    max_bitrate: int = Field(
        default=50_000_000,
        ge=1,
        description="bits per second a node may plausibly serve one viewer",
    )
    # 30 s is the forward buffer a typical HLS/DASH player keeps (hls.js maxBufferLength);
    # the simulator's honest players run at most 2 segments (8 s) ahead of elapsed time.
    max_lead_seconds: int = Field(
        default=30,
        ge=0,
        lt=2**64,
        description="media seconds a player may fetch ahead of elapsed time (segmentsServed check)",
    )
    # 8 KiB: a 4 s segment at 16 kbit/s, below any audio-only rung; the simulator's smallest
    # honest segment is 160,000 bytes (400 kbit/s for 4 s, minus its 20 % spread).
    min_segment_bytes: int = Field(
        default=8192,
        ge=0,
        lt=2**64,
        description="fewest bytes per segment served on average (bytesServed >= this * segmentsServed)",
    )
    # epochs and rewards (PROTOCOL 4-5; the reward values are published in each manifest)
    emission: int = Field(
        default=1000 * 10**18, ge=0, description="W2E base units emitted per epoch"
    )
    bps_node: int = Field(
        default=6000, ge=0, le=10_000, description="node pool share, basis points"
    )
    bps_viewer: int = Field(
        default=3000,
        ge=0,
        le=10_000,
        description="viewer pool share, basis points (creators get the rest)",
    )
    max_bytes_per_viewer: int = Field(
        default=2**64 - 1,
        ge=0,
        lt=2**64,
        description="bytes credited from one viewer per epoch; above: split over its nodes",
    )
    max_watch_seconds_per_epoch: int = Field(
        default=3600,
        ge=0,
        lt=2**64,
        description="watch seconds credited to one viewer per epoch; above: split over its sessions",
    )
    data_dir: str = Field(
        default="data/epochs",
        description="directory of the published epoch datasets (one sub-directory per epoch)",
    )
    scheduler_interval: float = Field(
        default=30.0, gt=0, description="seconds between the scheduler's checks for a due epoch"
    )
    # store and registries
    database_url: str = Field(
        default="sqlite:///./data/settlement.db",
        description="sqlite:///PATH (embedded, WAL) or postgresql://USER@HOST:PORT/DB (production)",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="FULL: a committed batch survives power loss, not only a crash"
    )
    db_pool_size: int = Field(default=4, ge=1, description="database connections per process")
    registry_mode: Literal["open", "approval"] = Field(
        default="approval",
        description="open: a valid signed node registration request is approved at once",
    )
    viewer_allowlist: bool = Field(
        default=False, description="only listed viewers may sign receipts"
    )
    registration_max_age: int = Field(
        default=24 * 3600,
        ge=1,
        description="seconds a signed node registration request stays valid",
    )
    rejection_sample_cap: int = Field(
        default=1000, ge=0, description="raw rejected receipts kept per reason (ring buffer)"
    )
    rejection_sample_per_batch: int = Field(
        default=8, ge=0, description="raw rejected receipts sampled per reason per batch"
    )
    rejection_sample_bytes: int = Field(
        default=2048, ge=64, description="a sampled raw receipt is cut to this many bytes"
    )
    test_database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/test",
        description="PostgreSQL of the integration tests (each run in a schema of its own)",
    )
    ci: bool = Field(
        default=False,
        validation_alias="CI",
        description="on CI (CI=true) PostgreSQL tests fail instead of skipping",
    )
    # http api
    host: str = Field(default="127.0.0.1", description="address `settlement serve` binds")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port of `settlement serve`")
    workers: int | None = Field(
        default=None, ge=1, description="uvicorn worker processes (default: one per core)"
    )
    max_batch: int = Field(
        default=10_000, ge=1, description="receipts per POST /v1/receipts; more is 413"
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="body limit of POST /v1/receipts; more is 413",
    )
    # Bodies are read whole, under these limits, before any route, authentication or JSON
    # parsing runs (api/body.py): what a client can make a worker hold stays small.
    max_admin_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="body limit of /v1/admin/* (a registries import of ~5,000 entries); more is 413",
    )
    max_public_body_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="body limit of every other route (a node registration is ~300 bytes); more is 413",
    )
    max_json_depth: int = Field(
        default=16,
        ge=2,
        le=256,
        description="nesting depth of a JSON body (a receipts batch has 3); deeper is 422",
    )
    max_json_elements: int = Field(
        default=300_000,
        ge=16,
        description="{ [ and , outside strings in a JSON body (10,000 receipts have ~100,000); more is 422",
    )
    body_timeout: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="seconds a client has to send a whole request body; slower is 408",
    )
    # uvicorn: per worker
    http_impl: Literal["h11", "httptools"] = Field(
        default="h11",
        description="HTTP parser of uvicorn: h11 bounds the request head in size "
        "(W2E_MAX_HEAD_BYTES) and time (W2E_HEAD_TIMEOUT); httptools does neither",
    )
    head_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="seconds a connection has to send a whole request head, from connecting or "
        "from its previous answer; slower is closed (h11 only)",
    )
    max_head_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="request line and headers, bytes (uvicorn h11_max_incomplete_event_size)",
    )
    limit_concurrency: int = Field(
        default=1000,
        ge=1,
        description="open connections per worker before uvicorn answers new requests 503",
    )
    timeout_keep_alive: int = Field(
        default=5, ge=1, description="seconds an idle keep-alive connection stays open"
    )
    timeout_graceful_shutdown: int = Field(
        default=30, ge=1, description="seconds requests in flight get to finish on shutdown"
    )
    backlog: int = Field(
        default=2048, ge=1, description="TCP accept backlog of the listening socket"
    )
    admin_token: SecretStr | None = Field(
        default=None, description="bearer token of the admin endpoints; unset: they answer 401"
    )
    admin_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='named admin tokens as JSON, {"alice": "<token>", ...}: the name goes into '
        "the admin log; W2E_ADMIN_TOKEN is the one named `admin`",
    )
    rate_limit: float = Field(
        default=200.0,
        ge=0,
        description="batches per second of a keyless client address, across all workers and "
        "instances (0: no limit for anyone); an API key has its own rate",
    )
    rate_burst: int = Field(
        default=400,
        ge=1,
        le=1_000_000,
        description="batches a keyless client address may send at once before rate_limit applies",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description='JSON list of proxy addresses or CIDRs, e.g. ["10.0.0.0/8"]: only from '
        "these is X-Forwarded-For read (empty: never, the socket peer is the client)",
    )
    max_inflight_batches: int = Field(
        default=8, ge=1, description="batches one worker ingests at once; more is 503"
    )
    metrics_dir: str | None = Field(
        default=None,
        validation_alias="PROMETHEUS_MULTIPROC_DIR",
        description="prometheus-client multi-process directory (serve sets one for several workers)",
    )
    # logs, metrics and the CLI (settlement serve and every long-running command)
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="log lines of serve and every long-running command: text or json, one "
        "line per event, the same fields (time, level, component, logger, message, exc)",
    )
    debug: bool = Field(
        default=False,
        description="the CLI prints the traceback of an error instead of one `error:` line "
        "(also `settlement --debug ...`)",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65533,
        description="settlement serve: metrics of the scheduler on this port, of the submitter "
        "on +1, of the watchtower on +2 (0: none; the API's are on its own /metrics)",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="address the serve children's metrics ports bind"
    )
    # chain
    rpc_url: str | None = Field(
        default=None,
        description="JSON-RPC URL, e.g. http://127.0.0.1:8545 for anvil; unset: the embedded in-process eth-tester chain",
    )
    chain_poll_interval: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="longest seconds between receipt/block polls; polling starts at 2 ms and backs off to this",
    )
    chain_head_ttl: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="seconds the account pages reuse the head block number (0: ask per request); "
        "their other chain reads are cached per head block",
    )
    chain_confirmations: int = Field(
        default=1,
        ge=1,
        description="blocks a transaction needs (1: its own) before it counts as mined",
    )
    chain_tx_timeout: int = Field(
        default=600,
        ge=1,
        description="seconds to wait for one transaction before giving up (it stays tracked by nonce)",
    )
    fee_bump_blocks: int = Field(
        default=3,
        ge=1,
        description="blocks a sent transaction may stay unmined before a same-nonce replacement with higher fees",
    )
    fee_bump_percent: int = Field(
        default=20,
        ge=10,
        le=1000,
        description="fee increase of each replacement, percent (nodes refuse less than 10)",
    )
    max_fee_per_gas: int | None = Field(
        default=None, ge=1, description="wei cap on maxFeePerGas; bumps stop there"
    )
    challenge_period: int = Field(
        default=3600,
        ge=0,
        lt=2**64,
        description="seconds a proposed root waits before acceptRoot; 0 only in dev mode",
    )
    dev_mode: bool = Field(
        default=False,
        description="allow challenge period 0 and one key for admin, poster and guardian; "
        "refused in production",
    )
    env: Literal["dev", "production"] = Field(
        default="dev",
        description="production: serve, submit and the scheduler refuse to start on unsafe "
        "settings (`settlement config check` lists them)",
    )
    deployment_file: str = Field(
        default="data/deployment.json",
        description="where `settlement deploy` records chain id, block, addresses, roles and "
        "the epoch clock; every command reads chain id, distributor, genesis and epoch length "
        "from it",
    )
    claim_batch_size: int = Field(
        default=100, ge=1, description="accounts per claimMany of `settlement claim --relay`"
    )
    log_chunk_blocks: int = Field(
        default=5000, ge=1, description="blocks per eth_getLogs request when reading events"
    )
    # Keys: each *_key_env names the variable holding a hex private key; a *_keystore file
    # (encrypted eth-account JSON) wins over it, its password from *_password_env or a prompt.
    admin_key_env: str = Field(
        default="W2E_ADMIN_KEY",
        description="name of the variable holding the admin's (deploys, mints, funds) hex private key",
    )
    poster_key_env: str = Field(
        default="W2E_POSTER_KEY",
        description="name of the variable holding the poster's (proposes roots) hex private key",
    )
    guardian_key_env: str = Field(
        default="W2E_GUARDIAN_KEY",
        description="name of the variable holding the guardian's (revokes, pauses) hex private key",
    )
    claimer_key_env: str = Field(
        default="W2E_CLAIMER_KEY",
        description="name of the variable holding the claimer's (pays the gas of claims) hex private key",
    )
    admin_keystore: str | None = Field(
        default=None,
        description="encrypted keystore file of the admin key (wins over the variable)",
    )
    poster_keystore: str | None = Field(
        default=None,
        description="encrypted keystore file of the poster key (wins over the variable)",
    )
    guardian_keystore: str | None = Field(
        default=None,
        description="encrypted keystore file of the guardian key (wins over the variable)",
    )
    claimer_keystore: str | None = Field(
        default=None,
        description="encrypted keystore file of the claimer key (wins over the variable)",
    )
    admin_password_env: str = Field(
        default="W2E_ADMIN_KEYSTORE_PASSWORD",
        description="name of the variable holding the admin keystore's password (else a prompt)",
    )
    poster_password_env: str = Field(
        default="W2E_POSTER_KEYSTORE_PASSWORD",
        description="name of the variable holding the poster keystore's password (else a prompt)",
    )
    guardian_password_env: str = Field(
        default="W2E_GUARDIAN_KEYSTORE_PASSWORD",
        description="name of the variable holding the guardian keystore's password (else a prompt)",
    )
    claimer_password_env: str = Field(
        default="W2E_CLAIMER_KEYSTORE_PASSWORD",
        description="name of the variable holding the claimer keystore's password (else a prompt)",
    )
    # submitter
    submitter_interval: float = Field(
        default=15.0,
        gt=0,
        description="seconds between the submitter's ticks (propose, accept, index Claimed events)",
    )
    data_base_uri: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="public HTTP(S) base URI of W2E_DATA_DIR; `settlement serve` answers it at "
        "http://HOST:PORT/v1/data. A proposal's dataURI is BASE/epoch-NNNNNNNN/manifest.json "
        "(a correction's BASE/corrections/.../manifest.json); unset: the local path",
    )
    submitter_accept: bool = Field(
        default=True,
        description="call acceptRoot once a proposed root's validAt has passed (anyone may)",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        from settlement.domain.access import parse_networks

        parse_networks(value)  # ValueError names the entry
        return value

    @field_validator("admin_tokens")
    @classmethod
    def _admin_tokens(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        from settlement.domain.access import check_name

        for name, token in value.items():
            check_name(name, "admin token name")
            if not token.get_secret_value():
                raise ValueError(f"admin token {name!r} is empty")
        if "admin" in value:
            raise ValueError("the name `admin` is W2E_ADMIN_TOKEN's: choose another")
        return value

    def named_admin_tokens(self) -> dict[str, SecretStr]:
        """Every admin token by name: W2E_ADMIN_TOKENS plus W2E_ADMIN_TOKEN as `admin`."""
        tokens = dict(self.admin_tokens)
        if self.admin_token is not None:
            tokens["admin"] = self.admin_token
        return tokens

    def secret_from_env(self, name: str) -> SecretStr | None:
        """The value of the environment variable a *_key_env or *_password_env setting names
        (or of that name in the .env file, as for the W2E_* settings themselves)."""
        value = os.environ.get(name)
        env_file = self.model_config.get("env_file")
        if value is None and isinstance(env_file, str) and os.path.isfile(env_file):
            from dotenv import dotenv_values

            value = dotenv_values(env_file).get(name)
        return SecretStr(value) if value else None

    # --- public address (issue 16 item 1, helper sdk): dataURI defaults to the service ---
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="public base URL of this service (what players and auditors reach); "
        "W2E_DATA_BASE_URI defaults to it + /v1/data, so each proposal's dataURI is served "
        "by `settlement serve` instead of naming a local path",
    )

    @model_validator(mode="after")
    def _data_base_from_public_url(self) -> Settings:
        if self.data_base_uri is None and self.public_url is not None:
            self.data_base_uri = self.public_url.rstrip("/") + "/v1/data"
        return self


# What a deployment record fixes for every command (PROTOCOL 2-4): JSON name -> setting.
DEPLOYMENT_FIELDS: dict[str, str] = {
    "chainId": "chain_id",
    "distributor": "distributor",
    "genesis": "genesis",
    "epochSeconds": "epoch_seconds",
}


def load_settings(*, deployment: bool = True) -> Settings:
    """The settings from the environment, completed by the deployment record.

    W2E_DEPLOYMENT_FILE (written by `settlement deploy`) gives chain id, distributor, genesis
    and epoch length to every command; a W2E_* variable set to another value than the record's
    is a ConfigError naming both. Without a record and without W2E_GENESIS the genesis is
    pinned by the store at its first start (`pin_genesis`). `deployment=False` (for
    `settlement deploy`, which writes the record) reads the environment alone. An invalid
    value is a ConfigError naming it.
    """
    from pydantic import ValidationError

    from settlement.errors import ConfigError

    try:
        settings = Settings()
        record = read_deployment_fields(settings.deployment_file) if deployment else {}
        fill: dict[str, object] = {}
        for name, value in record.items():
            mine = getattr(settings, name)
            if name not in settings.model_fields_set:
                fill[name] = value
            elif _differs(mine, value):
                raise ConfigError(
                    f"W2E_{name.upper()}={mine} but the deployment record "
                    f"{settings.deployment_file} says {value}: unset W2E_{name.upper()}, or "
                    "point W2E_DEPLOYMENT_FILE at the record of the deployment you mean"
                )
        if fill:
            settings = Settings(**fill)  # type: ignore[arg-type]
    except ValidationError as error:
        # One line per the CLI's error convention, and without the values: a bad
        # W2E_ADMIN_TOKENS or key variable must not be echoed back.
        problems = "; ".join(
            f"{_variable(e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise ConfigError(f"invalid W2E_* settings: {problems}") from None
    settings._genesis_from_store = "genesis" not in settings.model_fields_set
    return settings


def _differs(mine: object, recorded: object) -> bool:
    if isinstance(mine, str) and isinstance(recorded, str):
        return mine.lower() != recorded.lower()
    return str(mine) != str(recorded)


def read_deployment_fields(path: str) -> dict[str, object]:
    """The settings a deployment record fixes, by setting name ({} when there is no file;
    records older than the genesis field give only chain id and distributor)."""
    import json

    from settlement.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as stream:
            doc = json.load(stream)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read the deployment record {path} (W2E_DEPLOYMENT_FILE): {error}"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"the deployment record {path} is not a JSON object")
    return {name: doc[key] for key, name in DEPLOYMENT_FIELDS.items() if doc.get(key) is not None}


def genesis_from_store(settings: Settings) -> bool:
    """True when no W2E_GENESIS and no deployment record gave the genesis (see pin_genesis)."""
    return settings._genesis_from_store


def with_genesis(settings: Settings, genesis: int) -> Settings:
    """The same settings with the genesis the store pinned."""
    pinned = settings.model_copy(update={"genesis": genesis})
    pinned._genesis_from_store = False
    return pinned


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable a validation error's location names (W2E_PORT, CI)."""
    name = str(loc[0]) if loc else "settings"
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field is not None else None
    return alias if isinstance(alias, str) else f"W2E_{name.upper()}"


def export_for_workers(metrics_dir: str) -> None:
    """Hand the metrics directory to uvicorn's worker processes, which inherit the environment.

    prometheus-client picks its multi-process mode from this variable at import time.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir


def child_environment(overrides: dict[str, str | None]) -> dict[str, str]:
    """The environment of a child process `settlement serve` starts: this process's, with
    each of `overrides` set (None: removed)."""
    env = dict(os.environ)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


FAULTS_SPEC = os.environ.get(
    "W2E_FAULTS", ""
)  # chaos and outage fault points: settlement/faults.py
