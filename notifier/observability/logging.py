"""structlog set-up: JSON lines in production, readable console output in development."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

from notifier.observability.redaction import redact_urls_in

# Keys whose values are never written, whoever logs them (nor sent to Sentry).
SECRET_KEYS = frozenset(
    {"secret", "secrets", "token", "api_token", "password", "authorization", "signature"}
)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _redact(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event_dict.keys() & SECRET_KEYS:
        event_dict[key] = "***"
    return event_dict


def _redact_urls(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Runs after tracebacks are rendered, so a URL quoted in one is masked as well.
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact_urls_in(value)
    return event_dict


def configure_logging(
    log_format: str = "json", level: str = "info", report: Processor | None = None
) -> None:
    """Configure structlog for the whole process; logs go to standard error.

    ``report`` sees every line, ours and the libraries', before its traceback is
    rendered (``exc_info`` is still the exception): the Sentry bridge.
    """
    reporting = [report] if report is not None else []
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _name_logger,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            *reporting,
            structlog.processors.format_exc_info,
            _redact_urls,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(renderer, reporting)


def _route_standard_logging(renderer: Processor, reporting: list[Processor]) -> None:
    """Libraries log through the standard ``logging`` module (the broker clients, while a
    broker is away): their warnings become lines like ours, in the same format, with
    credentials masked, instead of bare text among the JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                *reporting,
                structlog.processors.format_exc_info,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redact,
                _redact_urls,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def _name_logger(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if "logger_name" in event_dict:
        event_dict["logger"] = event_dict.pop("logger_name")
    return event_dict


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose lines carry ``logger=<name>``.

    It stays lazy: a module-level logger created before ``configure_logging`` still
    follows the configuration made later (``bind`` would freeze the one in force).
    """
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(logger_name=name)
    return logger
