"""Errors that end a command with one line naming the bad input."""

from __future__ import annotations

import re

_REQUEST = re.compile(r"API request to (?P<url>\S+) failed with (?P<rest>.*)", re.S)
_ERRNO = re.compile(r"\[Errno -?\d+\] (?P<why>[^\"')\]]+)")
_STATUS = re.compile(
    r"API request to endpoint (?P<path>\S+) failed with error code (?P<code>\d+)", re.S
)
_SERVER_ERRORS = re.compile(r"too many (?P<code>5\d\d) error responses")


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


def tracking_message(message: str, server: str | None = None, client: str = "") -> str:
    """One line for an MLflow client error: the server and what went wrong, not the retry
    chain. A server that cannot be reached is named by its address alone.

    `server` is the tracking URI in use (MLflow names only the path when a request is
    answered with an error), `client` this MLflow's version.
    """
    status = _STATUS.search(message)
    if status is not None:
        path, code = status["path"], status["code"]
        at = f"tracking server {server}" if server else "tracking server"
        if code == "404" and "<html" in message.lower():
            # MLflow answers unknown routes with Flask's HTML page, its own 404s with JSON.
            return (
                f"{at} has no endpoint {path}: a server older than this client "
                f"(MLflow {client or '?'}); upgrade the server"
            )
        return f"{at}: {path} answered HTTP {code}"
    found = _REQUEST.search(message)
    if found is None:
        first = message.strip().splitlines()[0] if message.strip() else "unknown error"
        return f"MLflow: {first[:300]}"
    url, rest = found["url"], found["rest"]
    base = url.split("/api/", 1)[0].split("/ajax-api/", 1)[0]
    failing = _SERVER_ERRORS.search(rest)
    cut = "Connection aborted" in rest or "reset by peer" in rest
    if "/mlflow-artifacts/" in url and (failing is not None or cut):
        # The server answered, then failed on its store: it drops an upload it cannot keep.
        what = f"HTTP {failing['code']}" if failing else "the server cut the transfer off"
        return (
            f"tracking server {base}: its artifact store failed ({what}); check the "
            "server's bucket and S3 credentials with `shipyard stack check` where it runs"
        )
    if failing is not None:
        return f"tracking server {base}: server error (HTTP {failing['code']}); see its log"
    cause = _ERRNO.search(rest)
    if "exception" in rest.split(" ", 1)[0] or cause is not None:
        why = cause["why"].strip() if cause else rest.strip().splitlines()[0][:200]
        return f"tracking server {base} unreachable ({why})"
    return f"tracking server {base}: {rest.strip().splitlines()[0][:300]}"
