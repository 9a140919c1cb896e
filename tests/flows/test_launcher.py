"""LocalProcessLauncher: streams logs, returns the component result, surfaces failures with the last lines."""

from __future__ import annotations

import sys
import time

import pytest

from litops.core.step_errors import ErrorRecord
from litops.core.step_results import ChampionResult, UnreadableRecord
from litops.flows.launcher import ComponentFailed, JobSpec, LocalProcessLauncher


class ScriptLauncher(LocalProcessLauncher):
    """Runs an inline script instead of `-m litops.<component>`: same pipes, same parsing."""

    def __init__(self, script: str):
        super().__init__(warm=False)
        self.script = script

    def command(self, spec: JobSpec) -> list[str]:
        return [sys.executable, "-u", "-c", self.script, *spec.args]


def test_streams_lines_and_returns_result():
    script = ("import sys\n"
              "from litops.core.step_results import ChampionResult\n"
              "print('hello'); sys.stderr.write('progress 1\\rprogress 2\\r'); sys.stderr.flush()\n"
              "print(ChampionResult(version=int(sys.argv[1]), model_uri=None).to_line())\n")
    seen: list[str] = []
    job = ScriptLauncher(script).run(JobSpec("t", "data", ["42"]), log=seen.append)
    assert job.exit_code == 0 and job.result == ChampionResult(version=42, model_uri=None)
    assert "hello" in seen and "progress 1" in seen and "progress 2" in seen  # \r updates become lines
    assert not any(line.startswith("LITOPS_RESULT") for line in seen)


def test_nonzero_exit_raises_with_last_lines():
    script = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(3)\n"
    with pytest.raises(ComponentFailed) as err:
        ScriptLauncher(script).run(JobSpec("boom", "train"), log=lambda _: None)
    assert err.value.exit_code == 3
    assert err.value.tail[-1] == "line 99"
    assert "train step 'boom' failed with exit code 3" in str(err.value) and "line 99" in str(err.value)


def test_an_error_record_becomes_the_failures_kind_and_its_one_line():
    """A component's error record, not the look of a line, tells the launcher what went wrong."""
    script = ("import os\n"
              "from litops.core.component_cli import run_main, UserError\n"
              "assert os.environ['LITOPS_ERRORS'] == 'records'\n"
              "def main(argv):\n"
              "    print('litops data: error: a line that only looks like an error')\n"
              "    raise UserError('no such folder: /x')\n"
              "run_main(main, 'data')\n")
    out, err = [], []
    with pytest.raises(ComponentFailed) as failed:
        ScriptLauncher(script).run(JobSpec("bad", "data"), log=out.append, diagnostics=err.append)
    assert failed.value.error == ErrorRecord("data", "input", "no such folder: /x")
    assert failed.value.exit_code == 65 and failed.value.kind == "input" and not failed.value.retried
    assert err == ["litops data: error: no such folder: /x"]
    assert out == ["litops data: error: a line that only looks like an error"]
    assert failed.value.tail[-1] == "litops data: error: no such folder: /x"


def test_a_crash_is_retried_and_an_unreadable_result_names_its_step():
    with pytest.raises(ComponentFailed) as crashed:
        ScriptLauncher("raise SystemExit(1)").run(JobSpec("boom", "train"), log=lambda _: None)
    assert crashed.value.error is None and crashed.value.kind is None and crashed.value.retried
    script = "print('LITOPS_RESULT {\"kind\": \"champion\", \"schema\": 7, \"version\": 1, \"model_uri\": null}')"
    with pytest.raises(UnreadableRecord, match="data step 'old': a 'champion' result of schema 7"):
        ScriptLauncher(script).run(JobSpec("old", "data"), log=lambda _: None)


def test_interrupt_stops_the_child(tmp_path):
    pid_file = tmp_path / "pid"
    script = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nprint('started', flush=True)\ntime.sleep(60)\n"

    def interrupt(line: str) -> None:
        if line == "started":
            raise KeyboardInterrupt

    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        ScriptLauncher(script).run(JobSpec("sleepy", "train"), log=interrupt)
    assert time.time() - t0 < 30
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        import os
        os.kill(pid, 0)


def test_warm_start_runs_a_real_component_in_its_own_process(tmp_path):
    """The default local mode forks components from a preloaded server: same pipes, results and exit codes."""
    launcher = LocalProcessLauncher()
    assert launcher.warm
    seen: list[str] = []
    job = launcher.run(JobSpec("lookup", "register", ["lookup", "--data-version", "d", "--config-hash", "h",
                                                      "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]), log=seen.append)
    assert job.exit_code == 0
    assert job.result.version is None and job.result.champion_version is None

    with pytest.raises(ComponentFailed) as err:
        launcher.run(JobSpec("train", "train", ["--dataset-dir", str(tmp_path / "missing"), "--checkpoint-dir",
                                                str(tmp_path / "ck")]), log=lambda _: None)
    assert err.value.exit_code != 0
    assert any("missing" in line for line in err.value.tail)


def test_step_server_child_runs_in_its_own_session_and_is_stopped_with_it(tmp_path):
    import os

    from litops.flows.launcher import step_server

    server = step_server()
    proc = server.start("train", ["--help"], {**os.environ})
    out = b"".join(proc.chunks()).decode()
    assert proc.wait() == 0 and "--checkpoint-dir" in out
    slow = server.start("data", ["synth", "--config", str(tmp_path / "nope.json")], {**os.environ})
    deadline = time.monotonic() + 10
    while os.getsid(slow.pid) != slow.pid and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.getsid(slow.pid) == slow.pid, "a step leads its own session, so stopping it stops its readers"
    LocalProcessLauncher._stop(slow)
    assert slow.poll() is not None
    crashed = server.start("train", ["--checkpoint-dir"], {**os.environ})  # argparse: exit code 2
    b"".join(crashed.chunks())
    assert crashed.wait() == 2


def test_light_steps_do_not_wait_for_the_step_server(tmp_path, monkeypatch):
    """While the server imports, a light step is exec'd (its own interpreter); once the server says
    it is ready, the same step is forked from it. Either way the result is the same."""
    from litops.core import process_start
    from litops.flows import launcher as launcher_module

    launcher = LocalProcessLauncher()
    spec = JobSpec("lookup", "register", ["lookup", "--data-version", "d", "--config-hash", "h",
                                          "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], light=True)
    started = []
    real_popen = launcher_module.subprocess.Popen
    monkeypatch.setattr(launcher_module.subprocess, "Popen", lambda *a, **k: started.append("exec") or real_popen(*a, **k))
    real_start = process_start.StepServer.start
    monkeypatch.setattr(process_start.StepServer, "start", lambda *a, **k: started.append("fork") or real_start(*a, **k))

    monkeypatch.setattr(process_start.StepServer, "ready", lambda self: False)
    assert launcher.run(spec, log=lambda _: None).result.version is None
    monkeypatch.setattr(process_start.StepServer, "ready", lambda self: True)
    assert launcher.run(spec, log=lambda _: None).result.version is None
    assert started == ["exec", "fork"]


def test_the_step_server_says_when_its_imports_are_done():
    from litops.core.process_start import StepServer

    server = StepServer()
    try:
        deadline = time.monotonic() + 120
        while not server.ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.ready(), "the step server never finished its imports"
    finally:
        server.stop()
    assert server.process.returncode == 0, "closing its stdin ends the server"
