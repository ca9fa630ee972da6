"""Which labeling service serves a storage root: its registration and a look over HTTP.

A running `gtrun serve` registers its URL in `<root>/.gtrun/service.json`; `gtrun run`, `gtrun
status` and the rest on the same root find it there. A registration counts only while a service
answers at its URL for that root (GET /health): one left by a killed service is stale. This module
needs no uvicorn, so the commands that only look for a service do not load it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner.errors import ConfigError


def state_file(root: Path | str) -> Path:
    return Path(root).resolve() / ".gtrun" / "service.json"


def url_of(host: str, port: int) -> str:
    """The service's URL on `host`.

    >>> url_of("::1", 8008), url_of("127.0.0.1", 8008)
    ('http://[::1]:8008', 'http://127.0.0.1:8008')
    """
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def served_root(url: str, timeout: float = 2) -> Path | None:
    """The storage root of the gtrun labeling service answering at `url`, or None when none does
    (nothing listens there, or something that is not gtrun's service)."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            health = json.loads(resp.read())
        return Path(health["root"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def registration(root: Path | str) -> dict[str, Any] | None:
    """What `<root>/.gtrun/service.json` says (url, pid, token), or None when it says nothing usable."""
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(state_file(root).read_text())
        if isinstance(found, dict) and isinstance(found.get("url"), str):
            return found
    return None


def running_url(root: Path | str) -> str | None:
    """The URL of a service that is up and serves this storage root, if any."""
    found = registration(root)
    if found is None:
        return None
    url = str(found["url"])
    return url if served_root(url) == Path(root).resolve() else None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One process at a time registers a service for `root` (two `gtrun serve` started together)."""
    lock = state_file(root).with_name("service.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def served_already(root: Path | str, url: str) -> ConfigError:
    """The error of a second service for a root: the one serving it, by URL."""
    return ConfigError("--root", f"{Path(root).resolve()} is served already by the gtrun labeling service at "
                       f"{url}/", "gtrun run and gtrun status use that one; to serve the folder from here "
                       "instead, stop it first (Ctrl+C where it runs)")


def register(root: Path | str, url: str, token: str) -> None:
    """Record the service at `url` as the one serving `root`. A live service already serving it is
    an error naming its URL (its registration is left alone); a stale registration is replaced."""
    root = Path(root).resolve()
    with _locked(root):
        found = registration(root)
        # our own URL in the file: left by a service that had this port before and is gone (we hold
        # the port now); asking it would ask ourselves before we answer
        if found is not None and found["url"] != url and served_root(found["url"]) == root:
            raise served_already(root, found["url"])
        path = state_file(root)
        tmp = path.with_suffix(f".{os.getpid()}.part")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "token": token}))
        tmp.replace(path)


def unregister(root: Path | str, token: str) -> None:
    """Remove the registration if it is still this service's own (`token`), not a later one's."""
    if (registration(root) or {}).get("token") != token:
        return  # another service's, or none (the folder may be gone: nothing is made again)
    with contextlib.suppress(OSError), _locked(Path(root).resolve()):
        if (registration(root) or {}).get("token") == token:
            state_file(root).unlink()
