"""Every setting, read from the environment (prefix ``NOTIFIER_``) in one place."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from notifier.observability.redaction import redact_url

DEFAULT_DATABASE_URL = "postgresql://postgres@localhost:5432/postgres"

# Seconds to wait before each retry, after the first attempt. Close to the Standard
# Webhooks recommendation (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) and stretched with
# three 14 h waits so that a receiver has about three days to come back: 11 attempts.
DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000, 50400, 50400, 50400)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """Seconds in a duration such as ``7d``, ``12h``, ``30m``, ``90s`` or ``90``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: a number and a unit s, m, h or d (7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _check_duration(text: str) -> str:
    duration_seconds(text)
    return text.strip()


Duration = Annotated[str, AfterValidator(_check_duration)]


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it and says why."""


class Settings(BaseSettings):
    """Configuration of every ``notifier`` process. Each field is ``NOTIFIER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # The HTTP API.
    api_host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces by default
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_token: SecretStr | None = None
    api_max_body_bytes: int = Field(default=65536, gt=0)
    idempotency_ttl_seconds: int = Field(default=86400, ge=86400)
    secret_rotation_overlap_seconds: int = Field(default=86400, ge=0)

    # The delivery daemon.
    daemon_host: str = "0.0.0.0"  # noqa: S104
    daemon_port: int = Field(default=8081, ge=0, le=65535)
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    retry_after_max_seconds: float = Field(default=3600.0, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    max_in_flight: int = Field(default=64, gt=0)
    max_in_flight_per_subscription: int = Field(default=8, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    batch_size: int = Field(default=200, gt=0, le=10000)
    poll_interval_seconds: float = Field(default=2.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    allow_private_targets: bool = False
    # The CloudEvents ``source`` of every event (``ce_source`` on brokers, ``source`` in
    # the cloudevents format): a URI-reference naming this ledger.
    event_source: str = Field(default="notifier", min_length=1, pattern=r"^\S+$")
    # The daemon's event loop: uvloop (libuv) where it is installed, as it is by default
    # on Linux and macOS; its HTTP requests then cost less CPU. "asyncio": the standard one.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    # Operations: endpoint health, stall detection, retention.
    disable_after_failing: Duration = "5d"
    health_check_interval_seconds: float = Field(default=60.0, gt=0)
    stall_threshold_seconds: float = Field(default=300.0, gt=0)
    retention: Duration = "7d"
    dead_letter_retention: Duration = "30d"
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    retention_batch_size: int = Field(default=1000, gt=0, le=100000)
    retention_batch_budget_ms: int = Field(default=500, ge=10)

    # Error reporting (the ``notifier[sentry]`` extra): nothing is sent without a DSN.
    sentry_dsn: SecretStr | None = None
    sentry_environment: str = Field(default="production", min_length=1)
    sentry_release: str | None = None  # None: notifier@<this package's version>

    @property
    def retention_seconds(self) -> float:
        return duration_seconds(self.retention)

    @property
    def dead_letter_retention_seconds(self) -> float:
        return duration_seconds(self.dead_letter_retention)

    @property
    def disable_after_failing_seconds(self) -> float:
        return duration_seconds(self.disable_after_failing)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a non-numeric port
        except ValueError:
            # The parser's own message would quote the bad "port", which is often the
            # start of a password holding an unencoded / ? or #.
            raise ValueError(
                f"not a valid URL ({redact_url(value)}): a port must be a number, an IPv6 "
                "host goes in [brackets], and / ? # @ in a password must be percent-encoded"
            ) from None
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError(
                "must start with postgresql:// (for example postgresql://user@host:5432/db)"
            )
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("names no host (for example postgresql://user@localhost:5432/db)")
        try:
            # As strict as asyncpg, which would otherwise fail later, quoting the bad
            # field: often the rest of a password holding an unencoded &.
            parse_qs(parts.query, strict_parsing=True)
        except ValueError:
            raise ValueError(
                f"not a valid URL ({redact_url(value)}): its query must be name=value "
                "parameters joined by &, and & # in a value must be percent-encoded"
            ) from None
        return value

    @field_validator("sentry_dsn", mode="before")
    @classmethod
    def _blank_dsn_is_unset(cls, value: object) -> object:
        # A compose file's ``NOTIFIER_SENTRY_DSN=${SENTRY_DSN:-}`` means "no Sentry".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("sentry_dsn")
    @classmethod
    def _check_sentry_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # The message never quotes the DSN: its key is what lets anyone send events.
        problem = "must be a Sentry DSN, https://KEY@HOST/PROJECT_ID"
        try:
            parts = urlsplit(value.get_secret_value().strip())
            _ = parts.port
        except ValueError:
            raise ValueError(problem) from None
        project = parts.path.rsplit("/", 1)[-1]
        if parts.scheme not in ("http", "https") or not parts.username or not parts.hostname:
            raise ValueError(problem)
        if not re.fullmatch(r"[0-9]+", project):
            raise ValueError(f"{problem}: its path must end with the project's number")
        return value

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_retry_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return tuple(float(part) for part in value.split(",") if part.strip())
            except ValueError:
                raise ValueError("must be comma-separated seconds, like 5,300,1800") from None
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _check_retry_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("delays must be zero or more seconds")
        return value


def load_settings() -> Settings:
    """Read the settings from the environment, or raise SettingsError naming the bad one."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"NOTIFIER_{'_'.join(str(p) for p in err['loc']).upper()}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
