"""`bridge serve` as a process, for the tests that post webhooks to it over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import BridgeCli, free_port, wait_until_healthy


@contextmanager
def receiving(bridge: BridgeCli, **env: str) -> Iterator[str]:
    """A migrated database and `bridge serve` on a free port with these settings, healthy;
    its URL. The process must stop cleanly when asked."""
    assert bridge("db", "upgrade").returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = bridge.start("serve", "--port", str(port), **env)
    wait_until_healthy(url, process)
    yield url
    process.terminate()
    assert process.wait(timeout=30) == 0
