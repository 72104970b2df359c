"""Errors the CLI turns into one clear line and an exit code (1 failed, 2 usage or config)."""

from __future__ import annotations


class BridgeError(Exception):
    """A failure the user can act on; its message is the whole story, with no personal data."""

    exit_code = 1


class ConfigError(BridgeError):
    """Bad usage or configuration: each problem names the key and the fix."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class SchemaError(BridgeError):
    """The database schema is not the one this version needs."""

    exit_code = 2
