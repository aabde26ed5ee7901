"""Errors that end a command with one line naming the bad input."""

from __future__ import annotations

import re

_REQUEST = re.compile(r"API request to (?P<url>\S+) failed with (?P<rest>.*)", re.S)
_ERRNO = re.compile(r"\[Errno -?\d+\] (?P<why>[^\"')\]]+)")


class ShipyardError(Exception):
    """A failure the user can act on; the CLI prints it as one line and exits non-zero."""


class ConfigError(ShipyardError):
    """A params or policy file that does not match its schema."""


class ValidationFailed(ShipyardError):
    """Input data broke a rule of the data contract."""

    def __init__(self, source: str, column: str | None, rule: str, detail: str) -> None:
        self.source = source
        self.column = column
        self.rule = rule
        self.detail = detail
        where = f"column '{column}': " if column else ""
        super().__init__(f"{source}: {where}rule '{rule}': {detail}")


class GateFailed(ShipyardError):
    """A quality gate said no."""


def tracking_message(message: str) -> str:
    """One line for an MLflow client error: the server and what went wrong, not the retry
    chain. A server that cannot be reached is named by its address alone."""
    found = _REQUEST.search(message)
    if found is None:
        first = message.strip().splitlines()[0] if message.strip() else "unknown error"
        return f"MLflow: {first[:300]}"
    url, rest = found["url"], found["rest"]
    base = url.split("/api/", 1)[0].split("/ajax-api/", 1)[0]
    cause = _ERRNO.search(rest)
    if "exception" in rest.split(" ", 1)[0] or cause is not None:
        why = cause["why"].strip() if cause else rest.strip().splitlines()[0][:200]
        return f"tracking server {base} unreachable ({why})"
    return f"tracking server {base}: {rest.strip().splitlines()[0][:300]}"
