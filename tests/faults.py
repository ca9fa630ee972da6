"""A fault-injecting HTTP proxy on 127.0.0.1, for tests of retries and error paths.

`FaultProxy(upstream, rule)` forwards every request to `upstream` (method, path with query string,
headers -- Host included, so signatures stay valid -- and body) and returns the upstream's answer,
unless `rule(method, path, headers, attempt_no)` names a fault:

- None: forward as is;
- "500": answer 500 InternalError without forwarding;
- "503-slowdown": answer 503 with S3's `SlowDown` error, without forwarding;
- "throttle": answer 400 `{"__type": "ThrottlingException"}`, as a JSON-protocol service (Athena)
  throttles, without forwarding;
- "drop-response": forward, then close the connection without answering: the request took effect
  upstream but its response is lost.

`attempt_no` counts requests with the same method, path and X-Amz-Target (the operation of a
JSON-protocol call, whose path is always "/"), from 1. `rewrite(method, path, headers, body)` may
return a new body for an upstream answer (e.g. a GetQueryExecution whose State is FAILED).
`proxy.log` lists (method, path, target, fault) for every request.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

Rule = Callable[[str, str, Mapping[str, str], int], "str | None"]
Rewrite = Callable[[str, str, Mapping[str, str], bytes], "bytes | None"]
FAULTS = ("500", "503-slowdown", "throttle", "drop-response")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def target(headers: Mapping[str, str]) -> str:
    """The JSON-protocol operation (`AmazonAthena.StartQueryExecution`), or ""."""
    return next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")


def _canned(fault: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
    json_protocol = bool(target(headers))
    if fault == "throttle":
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        return 400, {"Content-Type": "application/x-amz-json-1.1"}, body
    if fault == "503-slowdown":
        body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message></Error>")
        return 503, {"Content-Type": "application/xml"}, body
    if json_protocol:
        body = json.dumps({"__type": "InternalServerException", "message": "injected 500"}).encode()
        return 500, {"Content-Type": "application/x-amz-json-1.1"}, body
    body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error. Please try again.</Message></Error>")
    return 500, {"Content-Type": "application/xml"}, body


class FaultProxy:
    """A ThreadingHTTPServer on 127.0.0.1 that forwards to `upstream`, injecting faults by `rule`."""

    def __init__(self, upstream: str, rule: Rule | None = None, rewrite: Rewrite | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"FaultProxy forwards to 127.0.0.1 only, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.rule: Rule = rule or (lambda method, path, headers, attempt: None)
        self.rewrite = rewrite
        self.log: list[tuple[str, str, str, str | None]] = []
        self._attempts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def calls(self, operation: str = "", method: str = "") -> list[tuple[str, str, str, str | None]]:
        """Logged requests whose X-Amz-Target ends with `operation` and method is `method` (if set)."""
        return [e for e in self.log if e[2].endswith(operation) and (not method or e[0] == method)]

    def _decide(self, method: str, path: str, headers: Mapping[str, str]) -> str | None:
        key = (method, path, target(headers))
        with self._lock:
            self._attempts[key] += 1
            attempt = self._attempts[key]
        fault = self.rule(method, path, headers, attempt)
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {', '.join(FAULTS)}")
        with self._lock:
            self.log.append((method, path, target(headers), fault))
        return fault

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]],
                 body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            return response.status, response.reason, list(response.getheaders()), data
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, *,
                      head: bool = False) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() in HOP_BY_HOP or (name.lower() == "content-length" and not head):
                        continue
                    self.send_header(name, value)
                if not head:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _handle(self) -> None:
                method, path = self.command, self.path
                headers = {k: v for k, v in self.headers.items()}
                body = self._body()
                fault = proxy._decide(method, path, headers)
                if fault in ("500", "503-slowdown", "throttle"):
                    status, extra, data = _canned(fault, headers)
                    self._send(status, list(extra.items()), data)
                    return
                status, _reason, upstream_headers, data = proxy._forward(
                    method, path, list(self.headers.items()), body)
                if fault == "drop-response":
                    self.close_connection = True  # answer nothing: the client sees the connection close
                    return
                if proxy.rewrite is not None and method != "HEAD":
                    data = proxy.rewrite(method, path, headers, data) or data
                self._send(status, upstream_headers, data, head=method == "HEAD")

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler


__all__ = ["FaultProxy", "FAULTS", "target"]
