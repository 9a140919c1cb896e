"""Test-only fault injection: die like a power cut at a named point of a retrain.

`LITOPS_CRASH_AT=<point>` makes `crash_point(<point>)` SIGKILL the flow's whole process group
(the flow, its forkserver, Prefect's temporary server) and then the caller's own process group
(a component runs in its own session). Points: after_train, after_register (flow),
before_alias (the register component's gate). Unset, every call is a no-op.

`LITOPS_FAULT=<point>` makes `nan_point(<point>, tensor)` fill a parameter with NaN in place, so the
run diverges there for real (its loss, gradients and update). Points: nan_loss_at_step_<k> (the trainer).
"""

from __future__ import annotations

import os
import signal
import sys

CRASH_ENV = "LITOPS_CRASH_AT"
FLOW_PID_ENV = "LITOPS_FLOW_PID"  # set by the flow so a component knows whom to take down
NAN_ENV = "LITOPS_FAULT"


def mark_flow_process() -> None:
    """Called by the flow: its children inherit the pid to kill (only when a crash is armed)."""
    if os.environ.get(CRASH_ENV):
        os.environ[FLOW_PID_ENV] = str(os.getpid())


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) != name:
        return
    print(f"litops: test fault: SIGKILL at {name}", file=sys.stderr, flush=True)
    flow_pid = int(os.environ.get(FLOW_PID_ENV) or os.getpid())
    for group in (_group_of(flow_pid), os.getpgrp()):
        if group is not None:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
    os.kill(os.getpid(), signal.SIGKILL)


def nan_point(name: str, parameter) -> None:
    """No torch import here: the flow imports this module too."""
    if os.environ.get(NAN_ENV) != name:
        return
    print(f"litops: test fault: NaN at {name}", file=sys.stderr, flush=True)
    parameter.detach().fill_(float("nan"))


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
