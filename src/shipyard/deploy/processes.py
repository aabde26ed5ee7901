"""Local service processes: start, wait until ready, stop with every descendant.

BentoML workers run in sessions of their own, so stopping a server means finding all of its
descendants (psutil) rather than signalling one process group.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from shipyard.errors import ShipyardError

_ISSUED: set[int] = set()


@functools.cache
def client_tls() -> ssl.SSLContext:
    """httpx's default TLS settings, built once per process for every client we make.

    httpx builds a new context, CA bundle and all, for each client: about 20 ms of CPU, though
    most of our calls are plain HTTP on loopback. The canary controller scrapes and polls
    several times a second, the webhook receiver runs one canary after another, and traffic
    clients start a client per thread.
    """
    return httpx.create_ssl_context()


def free_port() -> int:
    """A free loopback port, never the same one twice in this process: the server meant to
    bind the last one may not have bound it yet when the next one is asked for."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _ISSUED:
            _ISSUED.add(port)
            return port
    raise ShipyardError("no free loopback port")


def tree(pid: int) -> list[int]:
    """The process and every descendant, parents first; [] if it is gone."""
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop(pid: int, timeout: float = 30) -> None:
    """SIGTERM the process and its descendants, SIGKILL whatever is left after `timeout`."""
    procs = []
    for p in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(p))
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p.pid) for p in procs):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)  # reap our own children, so they stop being zombies
        time.sleep(0.2)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def start(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=out,
            env=env or dict(os.environ),
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def wait_ready(url: str, pid: int, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ShipyardError(f"{url}: process {pid} exited before it was ready\n{tail}")
        try:
            if httpx.get(url, timeout=2, verify=client_tls()).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ShipyardError(f"{url}: not ready after {timeout:.0f} s (log: {log})")


def bin_path(name: str) -> str:
    return str(Path(sys.executable).with_name(name))
