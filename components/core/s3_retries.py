"""How litops reaches S3: clients that retry transient faults, and one line when a fault persists.

Transient faults (503 SlowDown / ServiceUnavailable, 500/502/504, connections reset or refused,
read timeouts) are retried with exponential backoff and jitter by botocore's retry handler in
`standard` mode: `storage.max_attempts` attempts per request in all (`storage.retry_mode=adaptive`
also slows the client down while the store throttles it). botocore retries a request until a
response arrives; a connection lost while a body streams comes after that, and is retried a level up:
- boto3's transfer manager (`download_file`, used by the shard cache, `data add` and the checkpoint
  mirror) requests the object again itself (`TransferConfig.num_download_attempts`);
- s3fs runs a whole GET again (`cat_file`, a block of an open file) up to `S3FileSystem.retries`
  times. That loop also wraps each call, botocore's retries inside it, so a persistent fault costs
  BODY_ATTEMPTS^2 x max_attempts requests: BODY_ATTEMPTS stays small.
No loop of litops's own retries anything. A fault that outlives the retries is raised as
`S3Unavailable`: one line naming the object, and an exit code the flow's task retries (not a bad-input one).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from litops.core.component_cli import UserError

DEFAULT_ATTEMPTS = 8  # storage.max_attempts's default: ~35 s of backoff (20 s at most a wait) before a fault persists
BODY_ATTEMPTS = 3  # s3fs's GETs of a body cut short (a reset mid-download)
TRANSIENT_STATUS = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class S3Retries:
    """Attempts per request and botocore's retry mode; picklable, so reader processes get the same."""

    max_attempts: int = DEFAULT_ATTEMPTS
    mode: str = "standard"

    @classmethod
    def from_config(cls, cfg) -> "S3Retries":
        return cls(cfg.storage.max_attempts, cfg.storage.retry_mode)

    def botocore_config(self):
        from botocore.config import Config

        return Config(retries={"total_max_attempts": self.max_attempts, "mode": self.mode})

    def client(self, endpoint_url: str | None, region: str | None):
        """A boto3 S3 client of its own session (boto3's sessions are not thread-safe)."""
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region,
                                              config=self.botocore_config())

    def filesystem(self, endpoint_url: str | None, region: str | None):
        import s3fs

        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint_url, "region_name": region},
                               config_kwargs={"retries": {"total_max_attempts": self.max_attempts, "mode": self.mode}})
        fs.retries = BODY_ATTEMPTS  # s3fs has it as a class attribute, not an argument
        return fs


class S3Unavailable(UserError):
    """An S3 object still failing after the retries: one line that names it."""

    kind = "unavailable"  # a later try may work, so the flow retries the step

    def __init__(self, message: str):
        super().__init__(_last_line(message, type(self)))


def _last_line(message: str, cls: type) -> str:
    """A reader process's error reaches the trainer re-raised by torch's DataLoader with the reader's
    traceback in its message; the error's own line is the last one."""
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    last = lines[-1]
    for name in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        if last.startswith(name):
            return last[len(name):]
    return last


def unavailable(url: str, error: BaseException) -> S3Unavailable | None:
    """The one-line error for `error` when it is a transient S3 fault that outlived the retries
    (looking through the exceptions it wraps); None when it is anything else (a missing object,
    access denied, a local error: those keep their own meaning)."""
    if isinstance(error, UserError):
        return None
    for e in _chain(error):
        reason = _transient_reason(e)
        if reason:
            return S3Unavailable(f"{url} is unavailable: {reason}, still failing after retries with backoff "
                                 "(storage.max_attempts a request)")
    return None


@contextmanager
def naming(url: str) -> Iterator[None]:
    """Raise a transient S3 fault that outlived the retries as `S3Unavailable` naming `url`."""
    try:
        yield
    except Exception as e:
        failure = unavailable(url, e)
        if failure is None:
            raise
        raise failure from e


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen and len(seen) < 8:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)


def _transient_reason(e: BaseException) -> str:
    """A short reason when `e` is a transient S3 fault; "" otherwise."""
    from botocore.exceptions import ClientError

    if isinstance(e, ClientError):
        meta, err = e.response.get("ResponseMetadata", {}), e.response.get("Error", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        if status in TRANSIENT_STATUS or meta.get("MaxAttemptsReached"):
            code = str(err.get("Code") or "")  # a HEAD's is its status: it has no body to name one
            return f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
        return ""
    return _short(e) if isinstance(e, _connection_errors()) else ""


def _connection_errors() -> tuple[type[BaseException], ...]:
    """A connection refused, reset or timed out, or a body cut short: botocore's own, boto3's and
    s3transfer's after their download attempts, and aiohttp's and urllib3's, which s3fs lets through."""
    import boto3.exceptions
    import s3transfer.exceptions
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError
    from urllib3.exceptions import IncompleteRead, ProtocolError

    found: tuple[type[BaseException], ...] = (
        BotoConnectionError, HTTPClientError, IncompleteReadError, boto3.exceptions.RetriesExceededError,
        s3transfer.exceptions.RetriesExceededError, IncompleteRead, ProtocolError, ConnectionResetError,
        ConnectionAbortedError, TimeoutError)
    try:
        import aiohttp
    except ImportError:  # s3fs not in use
        return found
    return found + (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)


def _short(e: BaseException) -> str:
    text = re.sub(r"\s+", " ", str(e)).strip()
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
