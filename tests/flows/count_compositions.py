"""Run the `litops` CLI with Hydra's two public entry points counted: `hydra.compose` and `hydra.main`.

Every config composition of litops goes through one of them (flows/config.py, flows/cli_run.py).
Each call appends a line `<entry> <pid>` to the file named by $LITOPS_TEST_COMPOSITIONS, so a
child process that composed would be counted too.

Usage: python -m tests.flows.count_compositions run KEY=VALUE ...
"""

from __future__ import annotations

import functools
import os
import runpy
import sys

import hydra

LOG_ENV = "LITOPS_TEST_COMPOSITIONS"


def counted(entry: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with open(os.environ[LOG_ENV], "a", encoding="utf-8") as log:
            log.write(f"{entry} {os.getpid()}\n")
        return function(*args, **kwargs)

    return wrapper


def main() -> None:
    hydra.compose = counted("compose", hydra.compose)
    hydra.main = counted("main", hydra.main)
    sys.argv = ["litops", *sys.argv[1:]]
    runpy.run_module("litops.flows", run_name="__main__")


if __name__ == "__main__":
    main()
