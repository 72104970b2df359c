"""Dataverse's service protection limits, per application user, over a sliding window.

Three limits apply per user in a 5-minute sliding window: the number of requests, their
combined execution time and the requests in flight at once; each refusal is a 429 with its
own code and a ``Retry-After`` in seconds (docs/vendors/dynamics.md,
"Service protection limits").
Execution time is modelled as a fixed cost per request (a batch part costs as much as the
same request alone), which tests and benches can raise or lower.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import BaseModel, Field

from bridge_sandbox.emulators.dynamics_http import (
    CONCURRENCY_LIMIT,
    EXECUTION_TIME_LIMIT,
    REQUESTS_LIMIT,
    DataverseError,
)


class ServiceLimits(BaseModel):
    """Defaults are Dataverse's published limits."""

    enabled: bool = True
    window_s: float = Field(300.0, gt=0)
    max_requests: int = Field(6000, ge=1)
    max_execution_ms: int = Field(1_200_000, ge=1)
    max_concurrent: int = Field(52, ge=1)
    cost_ms: int = Field(20, ge=0, description="execution time one request is charged")


class ServiceProtection:
    """Admits or refuses each user's requests; refused requests consume nothing."""

    def __init__(self, limits: ServiceLimits, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.limits = limits
        self.reset()

    def configure(self, limits: ServiceLimits) -> None:
        with self._lock:
            self.limits = limits

    def reset(self) -> None:
        with self._lock:
            self._hits: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
            self._running: dict[str, int] = defaultdict(int)

    def _retry_after(self, hits: deque[tuple[float, int]], moment: float) -> str:
        """Seconds until the oldest counted request leaves the window (at least one)."""
        oldest = hits[0][0] if hits else moment
        return str(max(1, math.ceil(oldest + self.limits.window_s - moment)))

    def admit(self, user: str, requests: int = 1) -> None:
        """Count ``requests`` for ``user`` or raise the 429 of the limit they would break."""
        with self._lock:
            limits = self.limits
            if not limits.enabled:
                return
            moment = self._clock()
            hits = self._hits[user]
            while hits and moment - hits[0][0] >= limits.window_s:
                hits.popleft()
            retry = {"Retry-After": self._retry_after(hits, moment)}
            if len(hits) + requests > limits.max_requests:
                message = (
                    f"Number of requests exceeded the limit of {limits.max_requests} over time "
                    f"window of {limits.window_s:g} seconds."
                )
                raise DataverseError(429, REQUESTS_LIMIT, message, retry)
            spent = sum(cost for _, cost in hits)
            if spent + requests * limits.cost_ms > limits.max_execution_ms:
                message = (
                    "Combined execution time of incoming requests exceeded limit of "
                    f"{limits.max_execution_ms:,} milliseconds over time window of "
                    f"{limits.window_s:g} seconds. Decrease number of concurrent requests or "
                    "reduce the duration of requests and try again later."
                )
                raise DataverseError(429, EXECUTION_TIME_LIMIT, message, retry)
            hits.extend((moment, limits.cost_ms) for _ in range(requests))

    @contextmanager
    def running(self, user: str) -> Iterator[None]:
        """Hold one of the user's concurrent slots for the duration of a request."""
        with self._lock:
            limits = self.limits
            if limits.enabled and self._running[user] >= limits.max_concurrent:
                message = (
                    f"Number of concurrent requests exceeded the limit of {limits.max_concurrent}."
                )
                raise DataverseError(429, CONCURRENCY_LIMIT, message, {"Retry-After": "1"})
            self._running[user] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[user] -= 1

    def remaining(self, user: str) -> dict[str, str]:
        """The debugging headers Dataverse sends: what is left of the window's budgets."""
        used = self.usage().get(user, {"requests": 0, "execution_ms": 0})
        return {
            "x-ms-ratelimit-burst-remaining-xrm-requests": str(
                max(0, self.limits.max_requests - used["requests"])
            ),
            "x-ms-ratelimit-time-remaining-xrm-requests": str(
                max(0, self.limits.max_execution_ms - used["execution_ms"])
            ),
        }

    def usage(self) -> dict[str, dict[str, int]]:
        """Per user: requests and execution milliseconds in the window, requests in flight."""
        with self._lock:
            moment = self._clock()
            return {
                user: {
                    "requests": sum(1 for t, _ in hits if moment - t < self.limits.window_s),
                    "execution_ms": sum(c for t, c in hits if moment - t < self.limits.window_s),
                    "running": self._running[user],
                }
                for user, hits in self._hits.items()
            }
