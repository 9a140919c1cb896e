"""litops.core.faults: each point fires only when armed, batch keys are recorded in their format, and a
misspelt point is a one-line error at the start. A crash is a real SIGKILL, so it runs in a child in its
own session (the seam kills the caller's whole process group)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from litops.core import faults
from litops.core.component_cli import EXIT_CONFIG_ERROR
from litops.core.config import ConfigError

SEAM_ENVS = (faults.CRASH_ENV, faults.NAN_ENV, faults.RECORD_KEYS_ENV, faults.FLOW_PID_ENV)


@pytest.fixture
def env(monkeypatch):
    """The process's environment with no fault armed; the seam reads it afresh after the test sets it."""
    for name in SEAM_ENVS:
        monkeypatch.delenv(name, raising=False)
    faults.armed.cache_clear()
    yield monkeypatch
    os.environ.pop(faults.FLOW_PID_ENV, None)  # set by mark_flow_process, not through monkeypatch
    faults.armed.cache_clear()


def run_child(code: str, **armed: str) -> subprocess.CompletedProcess:
    return run_python(["-c", textwrap.dedent(code)], **armed)


def run_python(args: list[str], **armed: str) -> subprocess.CompletedProcess:
    child_env = {k: v for k, v in os.environ.items() if k not in SEAM_ENVS} | armed
    return subprocess.run([sys.executable, *args], env=child_env, capture_output=True, text=True, timeout=60,
                          start_new_session=True)


def batches(n: int):
    return (SimpleNamespace(step=i, keys=[f"{i:04d}-a", f"{i:04d}-b"]) for i in range(n))


def test_nothing_armed_arms_nothing():
    armed = faults.Armed.from_env({})
    assert armed == faults.Armed() and not armed.arms_trainer
    assert faults.Armed.from_env({faults.CRASH_ENV: "", faults.NAN_ENV: ""}) == faults.Armed()


def test_the_points_parse():
    armed = faults.Armed.from_env({faults.CRASH_ENV: "after_step_12", faults.NAN_ENV: "nan_loss_at_step_3",
                                   faults.RECORD_KEYS_ENV: "/tmp/k"})
    assert (armed.crash_at, armed.crash_after_step, armed.nan_at_step) == ("after_step_12", 12, 3)
    assert armed.record_keys_to == Path("/tmp/k") and armed.arms_trainer
    for point in ("before_alias", "after_train", "after_register", "after_version_data", "after_gate"):
        named = faults.Armed.from_env({faults.CRASH_ENV: point})
        assert named.crash_at == point and named.crash_after_step is None and not named.arms_trainer


@pytest.mark.parametrize("name, value", [(faults.CRASH_ENV, "after_trian"), (faults.CRASH_ENV, "after_step_0"),
                                         (faults.CRASH_ENV, "after_step_x"), (faults.CRASH_ENV, "after_step_3 "),
                                         (faults.NAN_ENV, "nan_loss_at_step_0"), (faults.NAN_ENV, "nan_at_5")])
def test_an_unknown_point_is_a_one_line_config_error(name, value):
    with pytest.raises(ConfigError) as raised:
        faults.Armed.from_env({name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}={value!r} names no ") and "\n" not in message


def test_a_component_given_an_unknown_point_fails_at_the_start_with_one_line():
    out = run_python(["-m", "litops.register", "lookup"], LITOPS_CRASH_AT="after_trian")
    assert out.returncode == EXIT_CONFIG_ERROR, out.stderr
    assert out.stderr.strip() == ("litops register: config error: LITOPS_CRASH_AT='after_trian' names no crash "
                                  "point (after_step_<k>, " + ", ".join(faults.NAMED_CRASH_POINTS) + ")")


def test_the_litops_cli_given_an_unknown_fault_fails_before_doing_anything():
    out = run_child("from litops.flows.cli import main; main(['run'])", LITOPS_FAULT="nan_loss_at_step_five")
    assert out.returncode == EXIT_CONFIG_ERROR, out.stderr
    assert out.stderr.strip() == ("litops: config error: LITOPS_FAULT='nan_loss_at_step_five' names no fault "
                                  "(nan_loss_at_step_<k>, k from 1)")


def test_crash_point_kills_only_at_its_armed_point():
    out = run_child("""
        from litops.core.faults import crash_point
        crash_point("after_train"); print("passed after_train", flush=True)
        crash_point("before_alias"); print("passed before_alias", flush=True)
    """, LITOPS_CRASH_AT="before_alias")
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert out.stdout.splitlines() == ["passed after_train"]
    assert "litops: test fault: SIGKILL at before_alias" in out.stderr


def test_unarmed_crash_points_do_nothing():
    out = run_child("""
        from litops.core.faults import FLOW_STEPS, crash_point, flow_step_done
        crash_point("before_alias")
        for step in FLOW_STEPS:
            flow_step_done(step)
        print("alive")
    """)
    assert out.returncode == 0 and out.stdout.strip() == "alive", out.stderr


@pytest.mark.parametrize("point, finished", [("after_train", ["version data", "lookup", "train"]),
                                             ("after_register", ["version data", "lookup", "train", "evaluate",
                                                                 "register"])])
def test_the_flow_dies_after_the_armed_step_finished(point, finished):
    out = run_child("""
        from litops.core.faults import FLOW_STEPS, flow_step_done
        for step in FLOW_STEPS:
            print(step, flush=True)
            flow_step_done(step)
    """, LITOPS_CRASH_AT=point)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert out.stdout.splitlines() == finished
    assert f"SIGKILL at {point}" in out.stderr


def test_an_armed_flow_refuses_a_step_it_does_not_know(env):
    env.setenv(faults.CRASH_ENV, "after_train")
    with pytest.raises(ValueError, match="flow step 'version-data' is not in"):
        faults.flow_step_done("version-data")


def test_the_trainer_dies_after_step_k_has_run_and_not_before():
    out = run_child("""
        from types import SimpleNamespace
        from litops.core.faults import training_steps
        for batch in training_steps((SimpleNamespace(step=i, keys=[]) for i in range(6)), 0, nan_target=None):
            print(f"step {batch.step + 1} done", flush=True)
    """, LITOPS_CRASH_AT="after_step_3")
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert out.stdout.splitlines() == ["step 1 done", "step 2 done", "step 3 done"]
    assert "SIGKILL at after_step_3" in out.stderr


def test_the_trainer_dies_after_its_last_step_too():
    out = run_child("""
        from types import SimpleNamespace
        from litops.core.faults import training_steps
        for batch in training_steps((SimpleNamespace(step=i, keys=[]) for i in range(2)), 0, nan_target=None):
            print(f"step {batch.step + 1} done", flush=True)
        print("finished", flush=True)
    """, LITOPS_CRASH_AT="after_step_2")
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert out.stdout.splitlines() == ["step 1 done", "step 2 done"]


def test_unarmed_the_trainer_gets_its_own_batches_back(env):
    env.setenv(faults.CRASH_ENV, "after_train")  # the flow's point: nothing for the trainer
    own = batches(3)
    assert faults.training_steps(own, 0, nan_target=None) is own


def test_nan_fills_the_target_before_step_k_only(env):
    env.setenv(faults.NAN_ENV, "nan_loss_at_step_2")
    target = torch.ones(())
    finite_at_step = [bool(torch.isfinite(target)) for _ in faults.training_steps(batches(3), 0, nan_target=target)]
    assert finite_at_step == [True, False, False]


def test_each_rank_records_the_keys_it_trains_on(env, tmp_path):
    folder = tmp_path / "keys"
    env.setenv(faults.RECORD_KEYS_ENV, str(folder))
    for rank in (0, 1):
        seen = [batch.keys for batch in faults.training_steps(batches(3), rank, nan_target=None)]
        assert len(seen) == 3
    for rank in (0, 1):
        lines = (folder / f"keys-rank{rank}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == [
            {"step": i, "rank": rank, "keys": [f"{i:04d}-a", f"{i:04d}-b"]} for i in range(3)]


def test_a_step_is_recorded_before_it_runs(env, tmp_path):
    """A step that fails (a divergence) was still trained on: its keys are in the file."""
    env.setenv(faults.RECORD_KEYS_ENV, str(tmp_path))
    for batch in faults.training_steps(batches(5), 0, nan_target=None):
        if batch.step == 1:
            break
    steps = [json.loads(line)["step"] for line in (tmp_path / "keys-rank0.jsonl").read_text().splitlines()]
    assert steps == [0, 1]


def test_the_flow_marks_itself_only_when_a_crash_is_armed(env):
    faults.mark_flow_process()
    assert faults.FLOW_PID_ENV not in os.environ
    env.setenv(faults.CRASH_ENV, "before_alias")
    faults.armed.cache_clear()
    faults.mark_flow_process()
    assert os.environ[faults.FLOW_PID_ENV] == str(os.getpid())


def test_a_forked_child_reads_its_own_environment():
    """The step server forks a step and then sets the step's environment: the seam must not keep the server's."""
    out = run_child("""
        import os
        from litops.core.faults import armed
        assert armed().crash_at is None
        os.environ["LITOPS_CRASH_AT"] = "before_alias"
        pid = os.fork()
        if pid == 0:
            os._exit(0 if armed().crash_at == "before_alias" else 1)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """)
    assert out.stdout.strip() == "0", out.stderr
