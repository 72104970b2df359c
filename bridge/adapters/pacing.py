"""Pacing: one rate limiter per vendor quota per process, fed by the vendor's headers.

A vendor counts calls per account (for some, per app, that is per token), not per client
object. Sync, erasure, propagation and the demo each build their own adapter; were
each to keep its own window, two of them would each spend the whole quota and the second
would earn 429s. So adapters take their limiters from :func:`limiter`, keyed by
the quota they draw on, and every adapter in the process paces against the same window.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class RateLimiter:
    """A sliding-window limiter that starts from published limits and follows the vendor.

    ``acquire`` blocks until one more call fits in the window; ``answered`` then counts the
    call from its answer on, since the vendor counts it when it arrives, which a thread held
    up between the two may make later than it left: counted from the answer it is never
    early. ``observe`` takes what the vendor's headers say is left: when other clients share
    the quota and the server counts more calls than we made, the difference is booked into
    our window so we slow down too.
    """

    def __init__(
        self,
        max_calls: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_calls = max_calls
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[list[float]] = deque()  # when each call counts from, one cell each
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0][0] <= now - self.per_seconds:
            self._sent.popleft()

    def acquire(self) -> list[float]:
        """Wait for a place in the window; returns it, for :meth:`answered`."""
        while True:
            with self._lock:
                now = self._clock()
                self._expire(now)
                if len(self._sent) < self.max_calls:
                    place = [now]
                    self._sent.append(place)
                    return place
                delay = self._sent[0][0] + self.per_seconds - now
            self._sleep(max(delay, 0.001))

    def answered(self, place: list[float]) -> None:
        """The call given ``place`` has its answer (or failed): it counts from now."""
        with self._lock:
            place[0] = max(place[0], self._clock())

    def counted(self) -> int:
        """How many calls count against the window now: ours, and others' the vendor's
        headers reported (what is left of the budget is ``max_calls`` less this)."""
        with self._lock:
            self._expire(self._clock())
            return len(self._sent)

    def observe(
        self, remaining: int | None, limit: int | None = None, per_seconds: float | None = None
    ) -> None:
        with self._lock:
            if limit:
                self.max_calls = limit
            if per_seconds:
                self.per_seconds = per_seconds
            if remaining is None:
                return
            now = self._clock()
            self._expire(now)
            unseen = (self.max_calls - remaining) - len(self._sent)
            self._sent.extend([now] for _ in range(max(unseen, 0)))


@dataclass
class _Shared:
    limiter: RateLimiter
    configured: tuple[int, float]


_limiters: dict[str, _Shared] = {}
_lock = threading.Lock()


def limiter(key: str, max_calls: int, per_seconds: float) -> RateLimiter:
    """The process's limiter for the quota ``key`` names, made on first use from the
    configured limits (``max_calls`` per ``per_seconds``); the same object for every caller
    with that key, from any thread.

    A caller configured with other limits than the limiter was last configured with (new
    settings) sets them on the shared limiter: a window without headers (a search API that
    sends none) has nothing else to follow. The same limits again leave it as the vendor's
    headers have since set it.
    """
    wanted = (max_calls, per_seconds)
    with _lock:
        shared = _limiters.get(key)
        if shared is None:
            shared = _limiters[key] = _Shared(RateLimiter(max_calls, per_seconds), wanted)
        elif shared.configured != wanted:
            shared.limiter.observe(None, max_calls, per_seconds)
            shared.configured = wanted
        return shared.limiter


def fingerprint(secret: str) -> str:
    """A short name for a credential in a limiter's key: it tells accounts apart and cannot
    be turned back into the credential, so a key is safe in a log or a traceback."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]
