"""A configured evaluation suite through the whole system, from the command line.

`litops run` with a zero-shot suite of the user's own labelled images in `eval.suites` and the
gate's primary metric set to that suite's top-1: the flow evaluates the suite, MLflow records
its metric on the run and the version, and the gate decides on it. Then `litops eval` scores
the new champion on that suite on demand. Real parts: the CLI, Prefect's ephemeral server, every
step as its own process, MLflow on SQLite, git + DVC.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import COLOURS, SHAPES, _draw

pytestmark = pytest.mark.slow

SMALL = ["experiment=scratch_small", "data.n_train=192", "data.n_val=32", "data.n_test=32", "data.image_size=32", "data.shard_size=400",
         "train.steps=6", "train.batch_size=32", "train.checkpoint_every=6", "train.warmup_steps=2",
         "model.image_width=16", "model.text_width=64", "model.text_heads=2", "model.embed_dim=64",
         "registry.absolute_floor=0.0"]  # promoted whatever it scores: `litops eval` then has a champion
PRIMARY = "shapes/zeroshot_top1"


def shapes_suite(root: Path) -> Path:
    """An ImageFolder tree: one folder per shape, every colour drawn in each, CLIP_benchmark's text files."""
    for shape in SHAPES:
        (root / shape).mkdir(parents=True)
        for i, colour in enumerate(list(COLOURS) * 2):
            (root / shape / f"{colour}-{i}.jpg").write_bytes(_draw(colour, shape, 32))
    (root / "classnames.txt").write_text("\n".join(SHAPES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a {c}\na photo of a {c}\n")
    return root


def litops(home: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "LITOPS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "litops.flows", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_the_gate_promotes_on_a_suite_metric_and_litops_eval_reports_it(tmp_path):
    home, suite = tmp_path / "home", shapes_suite(tmp_path / "shapes")
    suites = f"eval.suites=[{{name:shapes,kind:zeroshot,path:{suite}}}]"
    run = litops(home, "run", *SMALL, suites, f"registry.primary_metric={PRIMARY}", timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "PROMOTED" in run.stdout + run.stderr

    uri = f"sqlite:///{home}/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("lit-embedded", "champion")
    assert PRIMARY in champion.tags["gate_reason"]  # "no champion yet: shapes/zeroshot_top1 ... >= absolute floor"
    logged = client.get_run(champion.tags["train_run_id"]).data.metrics
    assert 0.0 <= logged[PRIMARY] <= 1.0
    assert {"shapes/zeroshot_top5", "shapes/mean_per_class_recall", "zeroshot_top1"} <= set(logged)
    assert float(champion.tags[f"metric.{PRIMARY}"]) == pytest.approx(logged[PRIMARY], abs=1e-5)
    artifacts = {f.path for f in client.list_artifacts(champion.tags["train_run_id"], "eval")}
    assert "eval/shapes_confusion.png" in artifacts

    out = tmp_path / "on-demand"
    evaluated = litops(home, "eval", "--model", "models:/lit-embedded@champion", "shapes", suites, "--out", str(out),
                       timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    table = evaluated.stdout
    assert "models:/lit-embedded@champion" in table
    rows = {line.split()[0]: float(line.split()[1]) for line in table.splitlines() if line.startswith("shapes/")}
    assert set(rows) == {PRIMARY, "shapes/zeroshot_top5", "shapes/mean_per_class_recall"}
    assert rows[PRIMARY] == pytest.approx(logged[PRIMARY], abs=1e-4)  # the same model, the same images
    written = json.loads((out / "metrics.json").read_text())
    assert set(next(iter(written["metrics"].values()))) == set(rows)  # the suite asked for, not the benchmark
    assert (out / "shapes_confusion.png").is_file()

    unknown = litops(home, "eval", "--model", "models:/lit-embedded@champion", "nope", suites, timeout=60)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().count("\n") == 0 and "'nope'" in unknown.stderr and "shapes" in unknown.stderr
