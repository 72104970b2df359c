"""HubSpot's published API limits: a rolling burst window, a daily quota and search's own limit.

Clients are meant to pace themselves from the ``X-HubSpot-RateLimit-*`` headers rather than
from 429s (docs/vendors/hubspot.md, "Rate limits"), so the headers report exactly the
counters that are enforced.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime

from pydantic import BaseModel, Field


class RateLimits(BaseModel):
    """Defaults are a Free/Starter private app: 100 per 10 s, 250,000 a day, search 5/s."""

    enabled: bool = True
    burst_max: int = Field(100, ge=1)
    burst_interval_ms: int = Field(10_000, ge=1)
    daily_max: int = Field(250_000, ge=1)
    search_max: int = Field(5, ge=1)
    search_interval_ms: int = Field(1_000, ge=1)


class _RollingWindow:
    """Counts calls admitted in the last ``interval`` seconds."""

    def __init__(self, limit: int, interval: float) -> None:
        self.limit = limit
        self.interval = interval
        self._hits: deque[float] = deque()

    def _expire(self, moment: float) -> None:
        while self._hits and moment - self._hits[0] >= self.interval:
            self._hits.popleft()

    def full(self, moment: float) -> bool:
        self._expire(moment)
        return len(self._hits) >= self.limit

    def hit(self, moment: float) -> None:
        self._hits.append(moment)

    def remaining(self, moment: float) -> int:
        self._expire(moment)
        return max(0, self.limit - len(self._hits))


class RateLimiter:
    """Admits or refuses calls and reports the counters for the response headers.

    Search has its own per-second window (policy ``SECONDLY``) and does not use the burst
    window; every admitted call, search included, counts against the daily quota, which
    resets at midnight UTC. Refused calls consume nothing.
    """

    def __init__(
        self,
        limits: RateLimits,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self._clock = clock
        self._today = today
        self._lock = threading.Lock()
        self.limits = limits
        self.reset()

    def configure(self, limits: RateLimits) -> None:
        """New limits apply at once to the calls already counted."""
        with self._lock:
            self.limits = limits
            self._burst.limit = limits.burst_max
            self._burst.interval = limits.burst_interval_ms / 1000
            self._secondly.limit = math.ceil(limits.burst_max * 1000 / limits.burst_interval_ms)
            self._search.limit = limits.search_max
            self._search.interval = limits.search_interval_ms / 1000

    def reset(self) -> None:
        """Forget every call counted so far (``configure`` then sizes the fresh windows)."""
        with self._lock:
            self._burst = _RollingWindow(1, 1.0)
            self._secondly = _RollingWindow(1, 1.0)
            self._search = _RollingWindow(1, 1.0)
            self._day = self._today()
            self._daily_used = 0
        self.configure(self.limits)

    def admit(self, search: bool) -> str | None:
        """Count one call; return the policy it breaks (and do not count it), or None."""
        with self._lock:
            moment = self._clock()
            if self._today() != self._day:
                self._day, self._daily_used = self._today(), 0
            window = self._search if search else self._burst
            if self.limits.enabled:
                if self._daily_used >= self.limits.daily_max:
                    return "DAILY"
                if window.full(moment):
                    return "SECONDLY" if search else "TEN_SECONDLY_ROLLING"
            window.hit(moment)
            if not search:
                self._secondly.hit(moment)
            self._daily_used += 1
            return None

    def headers(self) -> dict[str, str]:
        """The headers HubSpot sends on every non-search response."""
        with self._lock:
            moment = self._clock()
            return {
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.limits.burst_interval_ms),
                "X-HubSpot-RateLimit-Max": str(self.limits.burst_max),
                "X-HubSpot-RateLimit-Remaining": str(self._burst.remaining(moment)),
                "X-HubSpot-RateLimit-Daily": str(self.limits.daily_max),
                "X-HubSpot-RateLimit-Daily-Remaining": str(
                    max(0, self.limits.daily_max - self._daily_used)
                ),
                "X-HubSpot-RateLimit-Secondly": str(self._secondly.limit),
                "X-HubSpot-RateLimit-Secondly-Remaining": str(self._secondly.remaining(moment)),
            }
