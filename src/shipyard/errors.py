"""Errors that end a command with one line naming the bad input."""

from __future__ import annotations


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
