"""LocalProcessLauncher: streams logs, returns the component result, surfaces failures with the last lines."""

from __future__ import annotations

import sys
import time

import pytest

from litops.flows.launcher import ComponentFailed, JobSpec, LocalProcessLauncher


class ScriptLauncher(LocalProcessLauncher):
    """Runs an inline script instead of `-m litops.<component>`: same pipes, same parsing."""

    def __init__(self, script: str):
        super().__init__()
        self.script = script

    def command(self, spec: JobSpec) -> list[str]:
        return [sys.executable, "-u", "-c", self.script, *spec.args]


def test_streams_lines_and_returns_result():
    script = ("import sys, json\n"
              "print('hello'); sys.stderr.write('progress 1\\rprogress 2\\r'); sys.stderr.flush()\n"
              "print('LITOPS_RESULT ' + json.dumps({'answer': int(sys.argv[1])}))\n")
    seen: list[str] = []
    job = ScriptLauncher(script).run(JobSpec("t", "data", ["42"]), log=seen.append)
    assert job.exit_code == 0 and job.result == {"answer": 42}
    assert "hello" in seen and "progress 1" in seen and "progress 2" in seen  # \r updates become lines
    assert not any(line.startswith("LITOPS_RESULT") for line in seen)


def test_nonzero_exit_raises_with_last_lines():
    script = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(3)\n"
    with pytest.raises(ComponentFailed) as err:
        ScriptLauncher(script).run(JobSpec("boom", "train"), log=lambda _: None)
    assert err.value.exit_code == 3
    assert err.value.tail[-1] == "line 99"
    assert "train step 'boom' failed with exit code 3" in str(err.value) and "line 99" in str(err.value)


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
