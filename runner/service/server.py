"""Starting the labeling service: in the foreground (`gtrun serve`) or in a thread for one call.

A running service records its URL in `<root>/.gtrun/service.json`, so `gtrun run` and
`gtrun status` on the same storage root find it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from runner.io.store import Store
from runner.service import DEFAULT_PORT
from runner.service.app import create_app


def _state_file(root: Path) -> Path:
    return Path(root).resolve() / ".gtrun" / "service.json"


def running_url(root: Path) -> str | None:
    """The URL of a service that is up and serves this storage root, if any."""
    path = _state_file(root)
    if not path.is_file():
        return None
    try:
        url = json.loads(path.read_text())["url"]
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            health = json.loads(resp.read())
        return str(url) if Path(health["root"]) == Path(root).resolve() else None
    except (OSError, ValueError, KeyError):
        return None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Service:
    """A uvicorn server for the app, on a socket bound before it starts (so port 0 works)."""

    def __init__(self, root: Path | str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 storage: Store | None = None) -> None:
        self.root = Path(root)
        self.sock = _bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.url = _url(host, self.port)
        self.app = create_app(root, storage)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)

    def _record(self) -> None:
        path = _state_file(self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
        tmp.replace(path)

    def _forget(self) -> None:
        path = _state_file(self.root)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("url") == self.url:
                path.unlink()

    def run(self) -> None:
        """Serve until interrupted (Ctrl+C)."""
        self._record()
        try:
            self.server.run(sockets=[self.sock])
        except KeyboardInterrupt:
            pass
        finally:
            self._forget()

    @contextlib.contextmanager
    def running(self, record: bool = False) -> Iterator[Service]:
        """Serve from a thread for the duration of the block."""
        thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the labeling service did not start")
            time.sleep(0.01)
        if record:
            self._record()
        try:
            yield self
        finally:
            if record:
                self._forget()
            self.server.should_exit = True
            thread.join(timeout=10)
            self.sock.close()
