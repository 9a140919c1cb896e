from __future__ import annotations

import json
import os
import subprocess
import sys

from litops.core.component_cli import EXIT_BAD_INPUT, EXIT_CONFIG_ERROR, RESULT_PREFIX
from litops.core.step_results import parse_result
from litops.core.config import to_dict

from data_helpers import small_cfg


def _run(args, home, cwd):
    env = dict(os.environ, LITOPS_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "litops.data", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_cli_synth_add_version(tmp_path):
    home = tmp_path / "home"
    cfg_path = tmp_path / "cfg.json"
    # the config's home is overridden by $LITOPS_HOME
    cfg_path.write_text(json.dumps(to_dict(small_cfg(tmp_path / "ignored", max_bad_fraction=0.1))))
    p = _run(["synth", "--config", str(cfg_path)], home, tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1].startswith(RESULT_PREFIX)
    r = parse_result(lines)
    assert r.command == "synth" and r.details["generated"] and r.committed
    assert r.data_version.endswith(".dir") and len(r.data_version) == 36
    assert r.dataset_dir == str(home / "data" / "datasets" / "embedded")
    assert r.splits == {"train": 48, "val": 12, "test": 24}
    assert not (tmp_path / "ignored").exists()

    # bad input: a folder with one bad pair of two -> one-line error, exit 65
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"")
    (src / "a.txt").write_text("empty image")
    (src / "b.txt").write_text("no image at all")
    p = _run(["add", str(src), "--config", str(cfg_path)], home, tmp_path)
    assert p.returncode == EXIT_BAD_INPUT
    err = [line for line in p.stderr.splitlines() if line.startswith("litops data:")]
    assert len(err) == 1 and "2 of 2 samples" in err[0] and "max_bad_fraction 10.0%" in err[0]
    assert "Traceback" not in p.stderr
    assert RESULT_PREFIX not in p.stdout

    p = _run(["version", "--config", str(cfg_path)], home, tmp_path)
    assert p.returncode == 0, p.stderr
    r2 = parse_result(p.stdout.splitlines())
    assert r2.data_version == r.data_version and r2.committed is False and r2.details["generated"] is False


def test_cli_config_error_exit_code(tmp_path):
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({"data": {"n_trian": 5}}))
    p = _run(["synth", "--config", str(cfg_path)], tmp_path / "home", tmp_path)
    assert p.returncode == EXIT_CONFIG_ERROR
    assert "n_trian" in p.stderr and "Traceback" not in p.stderr
