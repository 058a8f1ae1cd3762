"""Process-wide settings, read once from the environment.

Every entrypoint (web, account worker, simulator, runner) builds one `Settings` and
passes it down explicitly; nothing else in the project reads the environment.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_ACCOUNTS_FILE = PROJECT_ROOT / "config" / "accounts.example.yaml"


Port = Annotated[int, Field(ge=1, le=65535)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def is_loopback_host(host: str) -> bool:
    """Whether a server bound to `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


class Settings(BaseSettings):
    """Addresses, names and tunables shared by every process of the service."""

    model_config = SettingsConfigDict(
        env_prefix="TICKER_", frozen=True, extra="ignore", populate_by_name=True
    )

    # Services. The three URLs keep their conventional, unprefixed names.
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL")
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/ticker",
        validation_alias=AliasChoices("DATABASE_URL"),
    )
    broker_url: str | None = Field(
        None, validation_alias=AliasChoices("CELERY_BROKER_URL")
    )

    accounts_file: Path = EXAMPLE_ACCOUNTS_FILE

    # Kite endpoints. The defaults point at the bundled simulator; for the real
    # service use wss://ws.kite.trade and https://api.kite.trade.
    kite_ws_root: str = "ws://127.0.0.1:8765"
    kite_rest_root: str = "http://127.0.0.1:8766"

    # Redis names. Channels are global to a Redis server (not per db), so tests
    # give each run its own.
    events_channel: str = "ticker:nifty:events"
    ticks_channel: str = "ticker:nifty:ticks"
    key_prefix: str = "ticker:"
    # Every event is also appended to this capped Redis Stream, for replay.
    events_stream: str = "ticker:nifty:events:stream"
    events_stream_maxlen: PositiveInt = 100_000

    # Celery queue of one account is `<account_queue_prefix><account id>`.
    account_queue_prefix: str = "ticker.account."

    # Mutating API calls must carry this in X-API-Key when it is set; the API
    # refuses to listen beyond loopback without it.
    api_key: SecretStr | None = None
    # "user:password" for Flower's dashboard and API; required beyond loopback.
    flower_basic_auth: SecretStr | None = None

    # Containers bind 0.0.0.0; on a laptop everything stays on loopback.
    web_host: str = "127.0.0.1"
    web_port: Port = 8080
    flower_host: str = "127.0.0.1"
    flower_port: Port = 5555
    sim_host: str = "127.0.0.1"
    # 0 lets the system pick free ports (tests and benchmarks run simulators so).
    sim_ws_port: int = Field(8765, ge=0, le=65535)
    sim_rest_port: int = Field(8766, ge=0, le=65535)
    # Seconds between two tick frames the simulator sends on each connection.
    sim_tick_interval_s: PositiveFloat = 1.0
    # Historical requests the simulator accepts per api_key per second (Kite's 3).
    sim_historical_per_s: PositiveFloat = 3.0
    # A Kite instruments CSV to serve instead of the generated NIFTY option chain.
    sim_instruments_file: Path | None = None

    # An account worker refreshes its liveness lease this often; the lease
    # lapses after `worker_lease_s`, so a dead worker stops receiving placements.
    worker_heartbeat_s: PositiveFloat = 2.0
    # A task the broker handed out and that is still unacknowledged after this long
    # is handed out again (Redis broker, late acks). It must outlast any countdown a
    # task waits for; a delivery of a task that already ran is skipped (tasks/once).
    broker_visibility_timeout_s: PositiveFloat = 3600.0
    # More of kombu's Redis transport options, as JSON (say, how often it sweeps
    # for messages past the visibility timeout); its defaults otherwise.
    broker_transport_options: dict[str, Any] = {}
    worker_lease_s: PositiveFloat = 10.0
    # How often a worker converges its sockets to the database on its own.
    worker_reconcile_s: PositiveFloat = 30.0
    # How long the instrument universe is trusted before it is fetched again.
    instruments_ttl_s: PositiveFloat = 6 * 3600
    # Frames waiting between the socket thread and the Redis publisher.
    tick_backlog_frames: PositiveInt = 10_000

    # Backfill: candles of this interval for this many trading days, on their own
    # queue and worker; beat fills gaps of every active subscription this often.
    backfill_queue: str = "ticker.backfill"
    backfill_interval: str = "minute"
    backfill_trading_days: PositiveInt = 5
    backfill_gap_fill_every_s: PositiveFloat = 900.0
    # Kite allows 3 historical requests a second per api_key; pacing to 3 per 1.1 s
    # absorbs the jitter between our clock and Kite's arrival times.
    historical_requests_per_window: PositiveInt = 3
    historical_window_s: PositiveFloat = 1.1
    # Where beat keeps its last run times, so a restart does not fire every job.
    beat_schedule_file: Path = Path("var") / "celerybeat-schedule"

    log_level: LogLevel = "INFO"
    # "text" (one plain line a record, for a terminal) or "json" (one JSON object
    # a line, for a log shipper); every process of the service follows it.
    log_format: Literal["text", "json"] = "text"

    # Each Celery worker serves its own Prometheus series on this port plus an
    # offset (backfill worker +0, the n-th account of the accounts file +1+n), so
    # one host can run them all; 0 turns the workers' metrics off.
    worker_metrics_port: int = Field(9200, ge=0, le=65535)
    # Loopback by default like every other listener; a Prometheus on another host
    # needs the worker's own address (or 0.0.0.0).
    worker_metrics_host: str = "127.0.0.1"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        return _with_scheme(value, ("redis", "rediss", "unix"), "redis://127.0.0.1:6379/0")

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: str) -> str:
        return _with_scheme(value, ("postgresql", "postgres"),
                            "postgresql://postgres@127.0.0.1:5432/ticker")

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        from kombu.transport import TRANSPORT_ALIASES

        if value is None:
            return None
        # kombu picks the transport by what comes before a "+" (`sqla+postgresql://`).
        transport = urlsplit(value).scheme.split("+", 1)[0]
        _with_scheme(f"{transport}://", tuple(TRANSPORT_ALIASES), "amqp://guest@127.0.0.1//")
        return value

    @field_validator("backfill_interval")
    @classmethod
    def _known_interval(cls, value: str) -> str:
        from ticker.backfill import INTERVALS

        if value not in INTERVALS:
            raise ValueError(f"must be one of {', '.join(INTERVALS)}")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_and_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            user, colon, password = value.get_secret_value().partition(":")
            if not (user and colon and password):
                raise ValueError("must be user:password")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_heartbeat(self) -> Settings:
        # A lease shorter than the beat that renews it lapses while the worker lives.
        if self.worker_lease_s <= self.worker_heartbeat_s:
            raise ValueError(
                f"TICKER_WORKER_LEASE_S ({self.worker_lease_s}) must be longer than "
                f"TICKER_WORKER_HEARTBEAT_S ({self.worker_heartbeat_s})")
        return self

    @classmethod
    def variable_for(cls, name: str) -> str:
        """The environment variable a field is read from."""
        choices = getattr(cls.model_fields[name].validation_alias, "choices", None)
        if choices:
            return str(choices[0])
        return f"{cls.model_config.get('env_prefix', '')}{name}".upper()

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    def account_queue(self, account_id: str) -> str:
        return f"{self.account_queue_prefix}{account_id}"


def _with_scheme(url: str, schemes: tuple[str, ...], example: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        # The URL itself is not repeated: it may carry a password.
        raise ValueError(f"the scheme {scheme!r} is not one this takes; give a URL "
                         f"like {example}")
    return url
