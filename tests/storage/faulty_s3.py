"""An HTTP proxy on 127.0.0.1 that fails some of the requests it passes on to moto's S3 server.

Faults, as an overloaded S3 or MinIO and a flaky network produce them:
- `503`: an S3 XML error body (`SlowDown` or `ServiceUnavailable`), the request never reaches moto;
- `reset`: the connection is reset (TCP RST) before any byte of the response;
- `cut`: the status line, the headers and half of the body, then a reset: a download lost midway
  (a response without a body is reset after moto has acted on the request: the client never hears).

Which requests fail is seeded and independent of thread timing: the n-th request with a given
method and target fails when `Random(f"{seed}|{method} {target}|{n}").random() < rate`, so a rerun
fails the same requests as long as litops sends the same ones. `fail_always(path)` fails every
request for one object (a fault that persists). The proxy counts requests, faults
by kind and path, and the requests that follow a fault on the same target (the clients' retries).

Paths are path-style (`/bucket/key`): boto3 and s3fs address an IP endpoint that way. From another
test folder: `sys.path.insert(0, <tests/storage>)`, then `from faulty_s3 import faulty_s3, faulty_s3_server`.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

FAULT_KINDS = ("503", "reset", "cut")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "expect", "content-length"}
ERROR_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
              '<Resource>{path}</Resource></Error>')
UNAVAILABLE = (("SlowDown", "Please reduce your request rate."),
               ("ServiceUnavailable", "The service is unavailable. Please retry."))


class ConnectionReset(Exception):
    """Raised by a handler after it reset its connection: nothing more may be written to it."""


class FaultPlan:
    """Decides, counts and remembers the faults; shared by the handler threads."""

    def __init__(self, seed: int = 0, rate: float = 0.0):
        self.seed, self.rate = seed, rate
        self.always: set[str] = set()  # paths of objects that fail every request
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, target) -> requests seen
        self.faults: Counter[tuple[str, str]] = Counter()  # (kind, path) -> faults injected
        self.retries = 0  # requests whose previous request to the same target was failed
        self._failed_last: set[tuple[str, str]] = set()

    def decide(self, method: str, target: str) -> str | None:
        """The fault for this request (None: pass it on); `record` counts the one applied."""
        path = target.split("?", 1)[0]
        with self.lock:
            n = self.requests[(method, target)]
            self.requests[(method, target)] += 1
            if (method, target) in self._failed_last:
                self.retries += 1
            rng = random.Random(f"{self.seed}|{method} {target}|{n}")
            kind = rng.choice(FAULT_KINDS) if path in self.always or rng.random() < self.rate else None
            if kind is None:
                self._failed_last.discard((method, target))
            else:
                self._failed_last.add((method, target))
            return kind

    def record(self, kind: str, target: str) -> None:
        with self.lock:
            self.faults[(kind, target.split("?", 1)[0])] += 1

    def total_requests(self, prefix: str = "") -> int:
        with self.lock:
            return sum(n for (_, target), n in self.requests.items() if target.startswith(prefix))

    def total_faults(self, prefix: str = "", kind: str = "") -> int:
        with self.lock:
            return sum(n for (k, path), n in self.faults.items() if path.startswith(prefix) and kind in ("", k))

    def reset(self, seed: int | None = None, rate: float = 0.0) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self._failed_last.clear()
            self.retries, self.rate, self.always = 0, rate, set()
            if seed is not None:
                self.seed = seed


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients pool connections: a reset hits a reused one
    server: "_ProxyServer"

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionReset, ConnectionError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _proxy(self) -> None:
        body = self._request_body()
        fault = self.server.plan.decide(self.command, self.path)
        if fault == "503":
            return self._unavailable()
        if fault == "reset":
            return self._reset()
        status, reason, headers, length, data = self._forward(body)
        if fault == "cut" and (self.command == "HEAD" or len(data) < 2):
            return self._reset()  # no body to cut: moto has acted on the request, the client never hears
        self.send_response_only(status, reason)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
        self.end_headers()
        if fault == "cut":
            self.wfile.write(data[: len(data) // 2])
            return self._reset("cut")
        if self.command != "HEAD":
            self.wfile.write(data)

    def _request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], str | None, bytes]:
        """moto's answer: status, reason, end-to-end headers, Content-Length (a HEAD's is the object's), body."""
        host, port = self.server.upstream
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            return resp.status, resp.reason, kept, resp.getheader("Content-Length"), data
        finally:
            conn.close()

    def _unavailable(self) -> None:
        self.server.plan.record("503", self.path)
        path = self.path.split("?", 1)[0]
        code, message = UNAVAILABLE[zlib.crc32(self.path.encode()) % len(UNAVAILABLE)]
        data = ERROR_BODY.format(code=code, message=message, path=path).encode()
        self.send_response(503, "Service Unavailable")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _reset(self, kind: str = "reset") -> None:
        """Close with SO_LINGER 0: the kernel sends RST, not FIN, so the client reads a reset."""
        self.server.plan.record(kind, self.path)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the last reference to the socket but the connection itself
        self.connection.close()
        self.close_connection = True
        raise ConnectionReset


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], plan: FaultPlan):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.plan = upstream, plan


class FaultyS3:
    """Context manager: the proxy in a daemon thread in front of `upstream` (moto's endpoint); `url` is its endpoint."""

    def __init__(self, upstream: str, seed: int = 0):
        u = urlparse(upstream)
        self.plan = FaultPlan(seed)
        self.server = _ProxyServer((u.hostname, u.port), self.plan)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="faulty-s3", daemon=True)

    def __enter__(self) -> "FaultyS3":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def fail(self, rate: float, seed: int | None = None) -> None:
        """From now on fail `rate` of the requests (counts start again)."""
        self.plan.reset(seed, rate)

    def fail_always(self, path: str) -> None:
        """Fail every request for the object at `path` (`/bucket/key`)."""
        with self.plan.lock:
            self.plan.always.add(path)

    def figures(self, prefix: str = "") -> dict[str, int]:
        """Requests, faults (by kind) and retries seen so far; `prefix` narrows requests and faults to some paths."""
        return {"requests": self.plan.total_requests(prefix), "faults": self.plan.total_faults(prefix),
                **{f"faults_{k}": self.plan.total_faults(prefix, k) for k in FAULT_KINDS},
                "retries": self.plan.retries}


@pytest.fixture(scope="session")
def faulty_s3_server(s3_server):
    with FaultyS3(s3_server) as proxy:
        yield proxy


@pytest.fixture
def faulty_s3(faulty_s3_server, s3_env, monkeypatch) -> FaultyS3:
    """The proxy, failing nothing yet, as the endpoint litops reaches through the environment
    (`s3_env` still names moto itself, for a test's own setup and checks)."""
    for k in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.setenv(k, faulty_s3_server.url)
    faulty_s3_server.fail(0.0)
    yield faulty_s3_server
    faulty_s3_server.fail(0.0)
