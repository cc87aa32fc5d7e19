"""When to try a failed delivery again: the schedule and its jitter. A destination's own
request to wait (HTTP's Retry-After) reaches here as seconds, parsed by its sink."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

Jitter = Callable[[float], float]

# Spread retries by up to 10% either way so that deliveries that failed together (an
# endpoint outage) do not all come back in the same instant.
JITTER_FRACTION = 0.1


def proportional_jitter(delay: float) -> float:
    """``delay`` moved randomly by up to 10% either way."""
    return delay * random.uniform(1 - JITTER_FRACTION, 1 + JITTER_FRACTION)


@dataclass(frozen=True)
class RetryPolicy:
    """``schedule[n]`` is the wait after attempt n+1 fails; then the delivery is dead."""

    schedule: tuple[float, ...]
    retry_after_max: float
    jitter: Jitter = field(default=proportional_jitter)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def next_delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds until the next attempt after failed attempt ``attempt`` (1-based).

        None means no attempt is left. A Retry-After the receiver sent is honoured,
        capped at ``retry_after_max``, instead of the schedule.
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        return max(0.0, self.jitter(self.schedule[attempt - 1]))
