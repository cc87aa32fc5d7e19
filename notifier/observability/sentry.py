"""Error reporting to Sentry, when ``NOTIFIER_SENTRY_DSN`` is set (``notifier[sentry]``).

What becomes an event: every log line at error level or above, of this code and of the
libraries, tagged with the ids it carries (``event_id``, ``delivery_id``,
``subscription_id``, ``attempt``, ``request_id``, ...), with its exception when it has one;
and an exception that ends the process. The same kind of line is reported at most once
a minute (with how many were held back), so an outage or a failure that repeats on
every attempt does not flood the project. The SDK's own integrations stay off: the API
turns every exception into a logged ``unhandled_error`` before aiohttp could see it, so
the log line is the one report of each failure, and nothing else (request headers, local
variables, breadcrumbs, the environment) is collected.

Every event is scrubbed last, whatever it holds: values under the keys the logs mask,
the credentials of any URL, the database URL's however they are quoted, the API token,
signing secrets and bearer tokens.

``sentry_sdk`` is imported only when the DSN is set, so everything else runs without it.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import traceback
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, cast

from structlog.typing import Processor

from notifier import __version__
from notifier.db.errors import is_retryable
from notifier.observability.logging import SECRET_KEYS, configure_logging
from notifier.observability.redaction import MASK, redact_text, redact_urls_in
from notifier.settings import Settings, SettingsError
from notifier.subscriptions.store import SECRET_PREFIX

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

Process = Literal["api", "daemon"]

# Sentry's levels for the log levels that are reported.
_REPORTED_LEVELS: dict[str, Literal["error", "fatal"]] = {"error": "error", "critical": "fatal"}
# Fields of every line that are not its data.
_LINE_FIELDS = frozenset({"event", "level", "logger", "timestamp", "exc_info", "stack_info"})
_TAG_MAX_CHARS = 200  # Sentry's limit on a tag's value
REPEAT_SECONDS = 60.0
_SIGNING_SECRET = re.compile(re.escape(SECRET_PREFIX) + r"\S+")
# RFC 6750's token68: a quoted header, or a placeholder in a message, is left whole.
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]+=*")


class MissingSentryExtra(SettingsError):
    """``NOTIFIER_SENTRY_DSN`` is set, but the ``sentry`` extra is not installed."""


class Scrubber:
    """Removes every secret the process knows of from an event, wherever it sits."""

    def __init__(self, settings: Settings) -> None:
        self._database_url = settings.database_url
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        self._known = [token] if token else []

    def text(self, text: str) -> str:
        text = redact_urls_in(redact_text(text, self._database_url))
        text = _BEARER.sub(rf"\g<1>{MASK}", _SIGNING_SECRET.sub(MASK, text))
        for secret in self._known:
            text = text.replace(secret, MASK)
        return text

    def value(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                key: MASK if _is_secret_key(key) else self.value(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def before_send(self, event: Event, _hint: Hint) -> Event:
        return cast("Event", self.value(event))


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS


def _is_id(key: str, value: object) -> bool:
    return (key.endswith("_id") or key == "attempt") and isinstance(value, str | int)


class Throttle:
    """The same kind of line (``_kind``) is reported at most once per ``seconds``: a
    database away for an hour, or a subscription whose every attempt crashes, is one
    event a minute, not one every few seconds per process."""

    def __init__(self, seconds: float = REPEAT_SECONDS) -> None:
        self._seconds = seconds
        self._last: dict[tuple[str, ...], float] = {}
        self._held: dict[tuple[str, ...], int] = {}

    def admit(self, key: tuple[str, ...]) -> int | None:
        """None: hold this one back; else how many were held back since the last."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._seconds:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


def line_reporter(throttle: Throttle) -> Processor:
    """A structlog processor: an error-level line becomes a Sentry event, its ids tags."""

    def report(
        _logger: object, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        level = _REPORTED_LEVELS.get(event_dict.get("level", ""))
        if level is not None:
            _report(event_dict, level, throttle)
        return event_dict

    return report


def _report(
    event_dict: MutableMapping[str, Any], level: Literal["error", "fatal"], throttle: Throttle
) -> None:
    import sentry_sdk
    from sentry_sdk.utils import capture_internal_exceptions, event_from_exception

    with capture_internal_exceptions():  # a failed report never fails the log line
        event: Event
        hint: Hint
        exc_info = _exc_info(event_dict.get("exc_info"))
        held = throttle.admit(_kind(event_dict, exc_info))
        if held is None:
            return
        if exc_info is None:
            event, hint = {}, {}
        else:
            event, hint = event_from_exception(
                exc_info,
                client_options=sentry_sdk.get_client().options,
                mechanism={"type": "logging", "handled": True},
            )
        fields = {k: v for k, v in event_dict.items() if not k.startswith("_")}
        event["level"] = level
        event["logger"] = str(fields.get("logger", "notifier"))
        event["logentry"] = {"message": str(fields.get("event", "")), "params": []}
        event["tags"] = {k: str(v)[:_TAG_MAX_CHARS] for k, v in fields.items() if _is_id(k, v)}
        event["extra"] = {
            k: v for k, v in fields.items() if k not in _LINE_FIELDS and not _is_id(k, v)
        }
        if held:
            event["extra"]["held_back_since_last_report"] = held
        sentry_sdk.capture_event(event, hint=hint)


def _kind(event_dict: MutableMapping[str, Any], exc: BaseException | None) -> tuple[str, ...]:
    """A line's name, and its exception's type and where it was raised: two bugs behind
    one name (``unhandled_error``) are two kinds."""
    name = str(event_dict.get("event", ""))
    if exc is None:
        return (name,)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return (name, type(exc).__name__, where)


def _exc_info(value: object) -> BaseException | None:
    """The exception a line's ``exc_info`` stands for: True means the one being handled."""
    if value is True:
        return sys.exc_info()[1]
    if isinstance(value, BaseException):
        return value
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value[1]
    return None


@contextlib.contextmanager
def error_reporting(settings: Settings, process: Process) -> Iterator[None]:
    """Report errors to Sentry while the body runs, if ``NOTIFIER_SENTRY_DSN`` is set.

    An exception that ends the body is reported too, unless it says the database or the
    network is away; what is queued is sent before this returns.
    """
    if settings.sentry_dsn is None:
        yield
        return
    try:
        import sentry_sdk
        from sentry_sdk.integrations.dedupe import DedupeIntegration
    except ImportError:
        raise MissingSentryExtra(
            "NOTIFIER_SENTRY_DSN is set, but Sentry's client is not installed: "
            "install notifier[sentry] (pip install 'notifier[sentry]'), or unset it"
        ) from None
    scrubber = Scrubber(settings)
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value().strip(),
        environment=settings.sentry_environment,
        release=settings.sentry_release or f"notifier@{__version__}",
        default_integrations=False,
        # An exception logged twice (by a task, then as it ends the process) is sent once.
        integrations=[DedupeIntegration()],
        send_default_pii=False,
        include_local_variables=False,
        max_breadcrumbs=0,
        auto_session_tracking=False,
        before_send=scrubber.before_send,
    )
    sentry_sdk.get_global_scope().set_tag("process", process)
    configure_logging(settings.log_format, settings.log_level, report=line_reporter(Throttle()))
    try:
        yield
    except Exception as exc:
        if not is_retryable(exc):
            sentry_sdk.capture_exception(exc)
        raise
    finally:
        configure_logging(settings.log_format, settings.log_level)
        sentry_sdk.get_client().close()
