"""moto's S3 on 127.0.0.1 behind a WSGI middleware that counts what it serves: bytes of GET
response bodies and requests, by (method, path). Tests use it to prove how often a shard was
downloaded. From another test folder:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
    from counting_s3 import counting_s3, counting_s3_server  # noqa: F401 - pytest fixtures

Paths are path-style (`/bucket/key`): boto3 and s3fs address an IP endpoint that way.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from s3_helpers import ACCESS_KEY, SECRET_KEY


class ByteCounter:
    """WSGI middleware: counts requests of every method and the body bytes of GET responses.
    `delay` (seconds) holds each GET body back, so that concurrent readers really overlap;
    `hold(prefix)` sends half of a matching GET body and waits for `release()`, so that a
    test can kill a client in the middle of a download."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.bytes: Counter[tuple[str, str]] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.delay = 0.0
        self.held_prefix: str | None = None
        self.released = threading.Event()

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        with self.lock:
            self.requests[(method, path)] += 1
        body = self.app(environ, start_response)
        return self._counted(body, path) if method == "GET" else body

    def _counted(self, body, path: str):
        try:
            if self.delay:
                time.sleep(self.delay)
            held = self.held_prefix is not None and path.startswith(self.held_prefix)
            for chunk in body:
                parts = [chunk[: len(chunk) // 2], chunk[len(chunk) // 2:]] if held and len(chunk) > 1 else [chunk]
                for k, part in enumerate(parts):
                    if k == 1:
                        self.released.wait(timeout=60)
                        held = False
                    yield part
                    with self.lock:  # counted once the server has written it
                        self.bytes[("GET", path)] += len(part)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def hold(self, prefix: str) -> None:
        self.released.clear()
        self.held_prefix = prefix

    def release(self) -> None:
        self.held_prefix = None
        self.released.set()

    def reset(self) -> None:
        with self.lock:
            self.bytes.clear()
            self.requests.clear()
        self.delay = 0.0
        self.release()

    def get_bytes(self, prefix: str = "") -> int:
        with self.lock:
            return sum(n for (_, path), n in self.bytes.items() if path.startswith(prefix))

    def get_requests(self, method: str = "GET", prefix: str = "") -> int:
        with self.lock:
            return sum(n for (m, path), n in self.requests.items() if m == method and path.startswith(prefix))


class CountingS3:
    """Context manager: the server runs in a daemon thread; `url` is its endpoint."""

    def __init__(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication
        from moto.server import create_backend_app

        self.counter = ByteCounter(DomainDispatcherApplication(create_backend_app))
        self.server = None
        self.thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> "CountingS3":
        from moto.moto_server.werkzeug_app import MotoRequestHandler  # keeps S3 metadata headers with underscores
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, self.counter, threaded=True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="counting-s3", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.counter.release()  # no handler left waiting
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def env(self) -> dict[str, str]:
        """Credentials and endpoint, only in the environment (as s3_helpers.s3_env provides them)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.url}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def reset(self) -> None:
        self.counter.reset()

    def get_bytes(self, prefix: str = "") -> int:
        return self.counter.get_bytes(prefix)

    def get_requests(self, method: str = "GET", prefix: str = "") -> int:
        return self.counter.get_requests(method, prefix)


@pytest.fixture(scope="session")
def counting_s3_server():
    with CountingS3() as server:
        yield server


@pytest.fixture
def counting_s3(counting_s3_server, monkeypatch) -> CountingS3:
    """The counting server with fresh counts, its credentials and endpoint in the environment."""
    for k, v in counting_s3_server.env().items():
        monkeypatch.setenv(k, v)
    counting_s3_server.reset()
    yield counting_s3_server
    counting_s3_server.reset()
