"""Typed application state: the keys under which the app keeps what it was built with."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from notifier.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict[str, Any])
