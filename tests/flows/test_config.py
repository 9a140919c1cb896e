"""Hydra composition with the typed schema: overrides apply, bad keys and types fail in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from litops.core.config import ConfigError, LitopsConfig, config_hash
from litops.flows.config import load_config


def test_defaults_are_the_embedded_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("LITOPS_HOME", str(tmp_path / "home"))
    cfg = load_config()
    assert cfg.home == str(tmp_path / "home")
    assert (cfg.loss.name, cfg.launcher.kind, cfg.model.name, cfg.mlflow.tracking_uri) == ("sigmoid", "local", "lit", "")


def test_overrides_and_groups():
    cfg = load_config(["train.steps=7", "loss=softmax", "registry.min_improvement=0.1"])
    assert cfg.train.steps == 7 and cfg.loss.name == "softmax" and cfg.registry.min_improvement == 0.1


@pytest.mark.parametrize("override, needle", [
    ("train.stepz=3", "stepz"),
    ("train.steps=many", "train.steps"),
    ("loss=hinge", "loss/hinge"),
    ("model.lock=frozen", "model.lock"),
    ("+surprise=1", "surprise"),
])
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_config_hash_tracks_training_sections_only():
    a, b = LitopsConfig(), LitopsConfig()
    b.registry.min_improvement = 0.5
    assert config_hash(a) == config_hash(b)
    b.train.steps += 1
    assert config_hash(a) != config_hash(b)


def test_cli_bad_key_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, "LITOPS_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "litops.flows", "run", "train.stepz=3"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 78
    assert "Traceback" not in out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "stepz" in lines[0] and lines[0].startswith("litops: config error")


def test_keys_that_do_not_change_the_weights_keep_the_training_run_hash():
    from litops.core.config import NOT_HASHED

    base = load_config([])
    unchanged = ["data.workers=2", "data.cache_dir=/tmp/elsewhere", "data.cache_limit=1GiB",
                 "train.checkpoint_every=7", "train.log_every=3", "train.num_threads=1"]
    assert sorted(o.split("=")[0] for o in unchanged) == sorted(f"{s}.{k}" for s, keys in NOT_HASHED.items() for k in keys)
    for override in unchanged:
        assert config_hash(load_config([override])) == config_hash(base), override
    for override in ("data.n_train=10", "train.steps=7", "train.lr=0.1", "train.seed=3"):
        assert config_hash(load_config([override])) != config_hash(base), override
