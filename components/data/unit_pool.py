"""Run `check_unit` over the units in `data.workers` processes, results in input order.

Each worker holds one unit (one input shard) at a time, so peak memory is about
workers x one shard. One worker (or one unit) runs in this process: no pool to start.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from litops.core.config import resolve_workers

from .sources import Unit
from .unit_check import check_unit



def spool_path(spool_dir: Path, index: int) -> Path:
    return spool_dir / f"unit-{index:06d}.spool"


def run_units(units: list[Unit], max_caption_chars: int, spool_dir: Path, workers: int) -> Iterator[dict[str, Any]]:
    """Each unit's `check_unit` result, in the units' order whatever the worker count."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    n = min(resolve_workers(workers), len(units))
    if n <= 1:
        for i, u in enumerate(units):
            yield check_unit(u, max_caption_chars, str(spool_path(spool_dir, i)))
        return
    # spawn, not fork: the parent may hold threads (Prefect, boto3) that a fork would copy mid-lock.
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(check_unit, u, max_caption_chars, str(spool_path(spool_dir, i)))
                   for i, u in enumerate(units)]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()
