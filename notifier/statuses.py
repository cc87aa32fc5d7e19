"""A delivery's statuses: the one definition the engine, the API, the CLI and the
operators' tools share (the table's CHECK constraint says the same; a test holds them
together)."""

from __future__ import annotations

from typing import Literal, get_args

DeliveryStatus = Literal["pending", "in_flight", "succeeded", "dead"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)

# What an attempt's outcome makes of its delivery (in_flight is the claim's doing).
SettledStatus = Literal["pending", "succeeded", "dead"]

# Statuses with an attempt still to come.
UNFINISHED: frozenset[DeliveryStatus] = frozenset({"pending", "in_flight"})
