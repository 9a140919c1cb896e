"""`litops run` is a Hydra application: Hydra's flags, override grammar and multirun, litops's one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from litops.core.component_cli import EXIT_CONFIG_ERROR

# A sweep point trains 20 steps on a tiny dataset in a few seconds. The sweep machinery does not
# depend on the model, so the points train the small from-scratch model: no pretrained tower to load.
TINY_SWEEP = ["experiment=scratch_small", "data.n_train=400", "data.n_val=80", "data.n_test=80", "data.image_size=32", "data.shard_size=400",
              "train.batch_size=64", "train.checkpoint_every=10", "train.warmup_steps=4", "model.image_width=16",
              "model.text_width=64", "model.text_heads=2", "model.embed_dim=64", "registry.absolute_floor=0.0"]


def litops(args: list[str], home: Path, cwd: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"LITOPS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "litops.flows", "run", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def test_cfg_job_prints_the_composed_config_and_runs_nothing(tmp_path):
    out = litops(["--cfg", "job", "loss=softmax", "train.steps=7"], tmp_path / "home", tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert {"model", "loss", "train", "registry"} <= cfg.keys() and "hydra" not in cfg
    assert cfg["loss"]["name"] == "softmax" and cfg["train"]["steps"] == 7
    assert out.stderr == ""
    assert list(tmp_path.iterdir()) == []  # no outputs/ folder, no workspace: nothing ran


def test_cfg_hydra_shows_that_hydra_writes_nothing_into_the_current_folder(tmp_path):
    out = litops(["--cfg", "hydra"], tmp_path / "home", tmp_path)
    assert out.returncode == 0, out.stderr
    hydra = yaml.safe_load(out.stdout)["hydra"]
    assert hydra["output_subdir"] is None and hydra["job"]["chdir"] is False
    assert hydra["job_logging"]["root"] is None and hydra["hydra_logging"]["root"] is None  # Prefect keeps logging


def test_info_prints_hydra_information(tmp_path):
    out = litops(["--info", "defaults"], tmp_path / "home", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Defaults List" in out.stdout and "loss/sigmoid" in out.stdout and "model/lit" in out.stdout


def test_help_describes_the_flags_examples_and_config_groups(tmp_path):
    out = litops(["--help"], tmp_path / "home", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: litops run")
    for text in ("--cfg", "--multirun", "--config-dir", "--info", "examples:", "litops run -m loss=sigmoid,softmax",
                 "loss: sigmoid, softmax"):
        assert text in out.stdout, text


@pytest.mark.parametrize("override, needle", [
    ("train.stepz=3", "stepz"),
    ("train.steps=many", "train.steps"),
    ("loss=hinge", "loss/hinge"),
    ("+surprise=1", "surprise"),
    ("~train.steps", "~train.steps"),
    ("train.steps=null", "train.steps"),
    ("loss=sigmoid,softmax", "--multirun"),  # a sweep without -m
])
def test_config_errors_are_one_line_on_stderr(tmp_path, override, needle):
    out = litops(["--cfg", "job", override], tmp_path / "home", tmp_path)
    assert out.returncode == EXIT_CONFIG_ERROR, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("litops: config error:") and needle in lines[0], out.stderr


def test_deleting_a_group_default_is_accepted(tmp_path):
    """`~loss` drops the loss group's option: the schema's defaults stay."""
    out = litops(["--cfg", "job", "~loss"], tmp_path / "home", tmp_path)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["loss"]["name"] == "sigmoid"


def test_a_bad_flag_prints_litops_runs_usage(tmp_path):
    out = litops(["--cfg", "everything"], tmp_path / "home", tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("usage: litops run") and "litops run: error:" in out.stderr


def test_config_dir_adds_options_and_config_name_picks_the_primary(tmp_path):
    extra = tmp_path / "mine"
    (extra / "loss").mkdir(parents=True)
    (extra / "loss" / "fast.yaml").write_text("name: softmax\nimpl: reference\n")
    (extra / "profile.yaml").write_text("defaults:\n  - config\n  - override loss: fast\n  - _self_\n"
                                        "train:\n  steps: 11\n")
    out = litops(["--config-dir", str(extra), "--cfg", "job", "loss=fast"], tmp_path / "home", tmp_path)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["loss"] == {"name": "softmax", "impl": "reference", "duplicates": "negative"}
    out = litops(["--config-dir", str(extra), "--config-name", "profile", "--cfg", "job"], tmp_path / "home", tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["train"]["steps"] == 11 and cfg["loss"]["impl"] == "reference"


def test_a_config_source_reads_extra_options_without_global_state(tmp_path):
    """--config-dir reaches the one composition as Hydra's own searchpath key; the next load is unaffected."""
    from litops.flows.config import ConfigSource, load_config

    extra = tmp_path / "mine"
    (extra / "loss").mkdir(parents=True)
    (extra / "loss" / "fast.yaml").write_text("name: softmax\nimpl: reference\n")
    assert load_config(["loss=fast"], ConfigSource(extra_dir=str(extra))).loss.impl == "reference"
    assert load_config(["train.steps=3"]).train.steps == 3  # the packaged tree alone


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """`litops run -m loss=sigmoid,softmax train.steps=20` on a tiny dataset, in a fresh home."""
    cwd = tmp_path_factory.mktemp("cwd")
    home = cwd.parent / f"{cwd.name}-home"
    return cwd, home, litops(["-m", "loss=sigmoid,softmax", "train.steps=20", *TINY_SWEEP], home, cwd, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(320)
def test_multirun_runs_the_flow_per_sweep_point_and_prints_a_table(sweep):
    cwd, home, out = sweep
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("litops run: sweep job #") == 2
    table = out.stdout[out.stdout.index("sweep of 2 runs"):].splitlines()
    assert "train.steps=20" in table[0]  # shared by both runs
    assert re.split(r"\s{2,}", table[1]) == ["overrides", "version", "decision", "zeroshot_top1"]
    rows = [re.split(r"\s{2,}", line) for line in table[3:5]]
    assert [row[0] for row in rows] == ["loss=sigmoid", "loss=softmax"]
    assert [row[1] for row in rows] == ["v1", "v2"]
    assert rows[0][2] == "promoted" and rows[1][2] in ("promoted", "rejected")
    assert all(0.0 <= float(row[3]) <= 1.0 for row in rows)
    assert list(cwd.iterdir()) == []  # no outputs/ or multirun/ in the current folder
    assert list((home / "runs" / "multirun").glob("*/multirun.yaml"))  # Hydra's record of the sweep, in the home
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_models_json_lists_the_swept_versions(sweep):
    cwd, home, out = sweep
    assert out.returncode == 0, out.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"LITOPS_HOME": str(home)}
    listed = subprocess.run([sys.executable, "-m", "litops.flows", "models", "--format", "json"], capture_output=True,
                            text=True, env=env, cwd=cwd, timeout=120)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    versions = {v["version"]: v for v in doc["versions"]}
    assert doc["model_name"] == "lit-embedded" and sorted(versions) == [1, 2]
    assert "champion" in versions[1]["aliases"] or "champion" in versions[2]["aliases"]
    for v in versions.values():
        assert v["run_id"] and v["data_version"].endswith(".dir") and "zeroshot_top1" in v["metrics"]
        assert v["decision"] in ("promoted", "rejected")


def test_a_missing_config_folder_is_a_usage_error(tmp_path):
    out = litops(["--config-path", str(tmp_path / "nope"), "--cfg", "job"], tmp_path / "home", tmp_path)
    assert out.returncode == 2 and "--config-path" in out.stderr and "no such folder" in out.stderr


def test_a_run_with_a_bad_config_fails_before_anything_is_made(tmp_path):
    out = litops(["+surprise=1"], tmp_path / "home", tmp_path)
    assert out.returncode == EXIT_CONFIG_ERROR and out.stderr.startswith("litops: config error: unknown config key")
    assert list(tmp_path.iterdir()) == []  # neither the home nor an outputs/ folder
