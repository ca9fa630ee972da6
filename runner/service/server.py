"""Starting the labeling service: in the foreground (`gtrun serve`) or in a thread for one call.

A running service registers its URL in `<root>/.gtrun/service.json` (runner.service.registry), so
`gtrun run` and `gtrun status` on the same storage root find it; one root, one service.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from runner.io.store import Store
from runner.service import DEFAULT_PORT
from runner.service.app import LOOPBACK, create_app
from runner.service.registry import register, running_url, unregister, url_of

__all__ = ["Service", "running_url"]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


class Service:
    """A uvicorn server for the app, on a socket bound before it starts (so port 0 works)."""

    def __init__(self, root: Path | str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 storage: Store | None = None) -> None:
        self.root = Path(root)
        self.sock = _bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.url = url_of(host, self.port)
        self.token = uuid.uuid4().hex  # this service's registration, told from a later one's
        self.app = create_app(root, storage, loopback=host in LOOPBACK)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)

    def register(self) -> None:
        """Register as the service of the root; a ConfigError naming its URL when a live service
        serves it already."""
        register(self.root, self.url, self.token)

    def _forget(self) -> None:
        unregister(self.root, self.token)

    def run(self) -> None:
        """Register (see `register`; again after `gtrun serve` did is harmless), then serve until
        interrupted (Ctrl+C); the registration is removed at the end if it is still this one's."""
        self.register()
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
        try:
            if record:
                self.register()
            yield self
        except BaseException:
            # the caller stopped mid-call (a second Ctrl+C while the job was submitted, say): the
            # call it left is cut short and rolled back, not finished (loading a large manifest's
            # objects takes seconds), so that the process stops at once
            self.app.state.jobs.store.interrupt()
            raise
        finally:
            if record:
                self._forget()
            self.server.should_exit = True
            thread.join(timeout=10)
            self.sock.close()
