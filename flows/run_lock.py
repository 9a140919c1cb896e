"""One retrain per model and workspace at a time: an flock on <home>/locks/<model>.lock.

No Prefect here: `litops run` takes the lock before Prefect starts, so a refused run is quick.
The flow takes it again (deployment runs call the flow directly); within one process the lock
is re-entrant, since a second flock on a new descriptor of the same file would refuse itself.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_held: dict[Path, int] = {}  # lock file -> depth, for this process
_guard = threading.Lock()


class RunInProgress(RuntimeError):
    pass


def lock_path(home: Path, model_name: str) -> Path:
    return Path(home) / "locks" / f"{model_name}.lock"


@contextmanager
def model_lock(home: Path, model_name: str) -> Iterator[None]:
    path = lock_path(home, model_name).resolve()
    with _guard:
        reentered = path in _held
        fd = None if reentered else _acquire(path, model_name, home)
        _held[path] = _held.get(path, 0) + 1
    try:
        yield
    finally:
        with _guard:
            _held[path] -= 1
            if not _held[path]:
                del _held[path]
                os.close(fd)  # closing the descriptor releases the flock


def _acquire(path: Path, model_name: str, home: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no truncation: the holder's pid stays readable
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise RunInProgress(f"another retrain of '{model_name}' is running in {home}{by}; "
                            "try again when it ends") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
