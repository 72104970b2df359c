"""Per-client rate limits, for what anyone may call without authenticating.

A client is its address as the socket sees it. ``X-Forwarded-For`` is not trusted (any client
can write it), so behind a proxy every client has the proxy's address and they share one
budget. Hits are counted in this process's memory with the ``limits`` library (a moving
window): each instance has budgets of its own, and a restart forgets them.

The receiver limits ``/healthz``, ``/readyz`` and ``/metrics`` (:class:`LimitedPaths`), never
a webhook path: a vendor delivers every customer's events from the same addresses, so a
budget per address that forged deliveries could spend (another customer's app pointed at this
URL, say) would throttle the signed ones too. A forged delivery costs an HMAC
and is bounded by the listener's limits (bridge/runtime/listener.py). The console's and
portal's sign-in are meant to use :class:`ClientLimiter` too: :meth:`ClientLimiter.hit`
before each attempt (or after each failed one), refusing while it says no.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge import metrics

REFUSAL_DELAY_SECONDS = 1.0
TOO_MANY = b'{"error":"rate_limited"}'
TOO_MANY_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(TOO_MANY)).encode()),
]


class ClientLimiter:
    """At most ``rate`` (``N/second``, ``N/minute``, ``N/hour``) hits per client and scope."""

    def __init__(self, rate: str) -> None:
        self.rate = parse(rate)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, scope: str, client: str) -> bool:
        """Count one hit of ``client`` on ``scope``; False, counting nothing, once over."""
        return self._limiter.hit(self.rate, scope, client)

    def retry_after(self, scope: str, client: str) -> int:
        """Whole seconds until ``client`` may hit ``scope`` again."""
        reset = self._limiter.get_window_stats(self.rate, scope, client).reset_time
        return max(1, math.ceil(reset - time.time()))


class LimitedPaths:
    """ASGI middleware: each request to one of ``paths`` counts against its client's budget
    for that path; a client over it is answered 429 with ``Retry-After``, before routing.

    Pure ASGI, ahead of the framework, and the 429 held back a second
    (:data:`REFUSAL_DELAY_SECONDS`): a client that asks again at once on each connection then
    gets one answer a second per connection, and its flood costs sleeping tasks, not the event
    loop that the webhooks share (bench/slow_clients.py: answered at once, 200 callers made
    some 4,600 429s a second and pushed webhooks' p99 to 0.7 s; held back, 200 a second and
    0.09 s).
    """

    def __init__(self, app: ASGIApp, limiter: ClientLimiter, paths: Iterable[str]) -> None:
        self.app, self.limiter, self.paths = app, limiter, frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path in self.paths:
            client = scope["client"][0] if scope.get("client") else ""
            if not self.limiter.hit(path, client):
                metrics.HTTP_REFUSED.labels("rate_limited").inc()
                after = str(self.limiter.retry_after(path, client)).encode()
                await asyncio.sleep(REFUSAL_DELAY_SECONDS)
                headers = [*TOO_MANY_HEADERS, (b"retry-after", after)]
                await send({"type": "http.response.start", "status": 429, "headers": headers})
                await send({"type": "http.response.body", "body": TOO_MANY})
                return
        await self.app(scope, receive, send)
