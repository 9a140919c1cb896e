"""Test-only faults and observations: the one seam production code calls, once per boundary.

Nothing here acts unless a test arms it through the environment, read once per process (and again
in a forked child: the step server sets a step's environment after the fork):

  LITOPS_CRASH_AT=<point>
      SIGKILL, like a power cut, the flow's whole process group (the flow, its step server, Prefect's
      temporary server) and then the caller's own group (a component runs in its own session), at:
        after_step_<k>      the trainer, after step k and its checkpoint
        after_<flow step>   the flow, after that step finished: after_version_data, after_lookup,
                            after_train, after_evaluate, after_register, after_gate
        before_<event>      the gate (register/gate_states.py), before a transition writes anything:
                            before_alias (the alias move of a promotion), before_record_promotion,
                            before_reject, before_promote_manually, before_roll_back, before_reopen
  LITOPS_FAULT=nan_loss_at_step_<k>
      fill the trainer's NaN target (the logit scale) with NaN before step k: that step's loss,
      gradients and update turn NaN for real
  LITOPS_RECORD_BATCH_KEYS=<folder>
      every training rank appends one line per step to <folder>/keys-rank<r>.jsonl:
      {"step": <step, from 0>, "rank": <r>, "keys": [<the sample keys it trains on>]}

A value that names no point is a ConfigError when the process starts (`armed()`, called by every
component's `run_main`, the litops CLI and the flow), never a fault that silently does not fire.

The boundaries, one call each:
  training_steps(batches, rank, nan_target)   the trainer's loop
  flow_step_done(step)                        the flow, where each of its steps finishes
  crash_point(name)                           the primitive, for the register component's gate
Unarmed, each returns at once on the values read once. No torch import: the flow imports this too.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Protocol, TypeVar

from litops.core.config import ConfigError

CRASH_ENV = "LITOPS_CRASH_AT"
NAN_ENV = "LITOPS_FAULT"
RECORD_KEYS_ENV = "LITOPS_RECORD_BATCH_KEYS"
FLOW_PID_ENV = "LITOPS_FLOW_PID"  # set by the flow so a component knows whom to take down

FLOW_STEPS = ("version data", "lookup", "train", "evaluate", "register", "gate")
GATE_CRASH_POINTS = ("before_alias", "before_record_promotion", "before_reject", "before_promote_manually",
                     "before_roll_back", "before_reopen")
NAMED_CRASH_POINTS = (*GATE_CRASH_POINTS, *(f"after_{step.replace(' ', '_')}" for step in FLOW_STEPS))
STEP_CRASH = re.compile(r"after_step_([1-9]\d*)")
NAN_FAULT = re.compile(r"nan_loss_at_step_([1-9]\d*)")


@dataclass(frozen=True)
class Armed:
    """What the environment arms: a crash point, a step to fill with NaN, a folder for batch keys."""

    crash_at: str | None = None
    crash_after_step: int | None = None  # the trainer's share of crash_at
    nan_at_step: int | None = None
    record_keys_to: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Armed":
        crash_at, nan = env.get(CRASH_ENV) or None, env.get(NAN_ENV) or None
        step_crash = STEP_CRASH.fullmatch(crash_at) if crash_at else None
        if crash_at and not step_crash and crash_at not in NAMED_CRASH_POINTS:
            raise ConfigError(f"{CRASH_ENV}={crash_at!r} names no crash point "
                              f"(after_step_<k>, {', '.join(NAMED_CRASH_POINTS)})")
        nan_step = NAN_FAULT.fullmatch(nan) if nan else None
        if nan and not nan_step:
            raise ConfigError(f"{NAN_ENV}={nan!r} names no fault (nan_loss_at_step_<k>, k from 1)")
        return cls(crash_at, int(step_crash.group(1)) if step_crash else None,
                   int(nan_step.group(1)) if nan_step else None,
                   Path(env[RECORD_KEYS_ENV]) if env.get(RECORD_KEYS_ENV) else None)

    @property
    def arms_trainer(self) -> bool:
        return self.crash_after_step is not None or self.nan_at_step is not None or self.record_keys_to is not None


@functools.cache
def armed() -> Armed:
    """The environment's faults, read once per process; a misspelt point raises ConfigError here."""
    return Armed.from_env(os.environ)


os.register_at_fork(after_in_child=armed.cache_clear)


def mark_flow_process() -> None:
    """Called by the flow: its children inherit the pid to kill (only when a crash is armed)."""
    if armed().crash_at:
        os.environ[FLOW_PID_ENV] = str(os.getpid())


def crash_point(name: str) -> None:
    """Die here when LITOPS_CRASH_AT names this point."""
    if armed().crash_at != name:
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


def flow_step_done(step: str) -> None:
    """The flow's step `step` (one of FLOW_STEPS) finished: crash point after_<step>."""
    if not armed().crash_at:
        return
    if step not in FLOW_STEPS:  # a renamed step would leave its documented point never firing
        raise ValueError(f"flow step {step!r} is not in litops.core.faults.FLOW_STEPS {FLOW_STEPS}")
    crash_point(f"after_{step.replace(' ', '_')}")


class Batch(Protocol):
    step: int  # from 0
    keys: list[str]


B = TypeVar("B", bound=Batch)


def training_steps(batches: Iterator[B], rank: int, nan_target) -> Iterator[B]:
    """The trainer's batches, one per step, through the seam: before step k its keys are recorded and
    `nan_target` (a tensor) may be filled with NaN; after it (when the loop asks for the next batch,
    so after its checkpoint) the process may die at after_step_<k>. Unarmed: `batches` itself."""
    faults = armed()
    if not faults.arms_trainer:
        return batches
    return _armed_steps(faults, batches, rank, nan_target)


def _armed_steps(faults: Armed, batches: Iterator[B], rank: int, nan_target) -> Iterator[B]:
    keys_file = faults.record_keys_to / f"keys-rank{rank}.jsonl" if faults.record_keys_to else None
    if keys_file:
        keys_file.parent.mkdir(parents=True, exist_ok=True)
    for batch in batches:
        step = batch.step + 1
        if keys_file:
            with open(keys_file, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": batch.step, "rank": rank, "keys": batch.keys}) + "\n")
        if faults.nan_at_step == step:
            print(f"litops: test fault: NaN at nan_loss_at_step_{step}", file=sys.stderr, flush=True)
            nan_target.detach().fill_(float("nan"))
        yield batch
        if faults.crash_after_step == step:
            crash_point(f"after_step_{step}")


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
