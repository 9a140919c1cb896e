"""A user's own image–caption pairs through `litops`, as a new user would bring them.

The folder is what img2dataset writes with `output_format=files`: `00000/000000000.jpg` beside its
`.txt` caption and its `.json` (url, caption, key, status, width, height, ...), and no metadata of
this project. The pictures are drawn here with PIL: coloured shapes, captioned with what they show.

- With the gate's metrics named outright as a metric these pairs cannot give (`zeroshot_top1`: no
  classes), `litops run` is refused before anything trains: in well under 10 s, in one line.
- A plain `litops run data.source=path data.name=...` (no registry override) trains on the data
  version `data add` committed, evaluates retrieval on the `val` split (no `test` split: no
  `*_heldout` metric, a note instead), and the gate promotes on `retrieval_mean_r1`. This is the
  one flow run on a user's pairs; test_path_source.py checks what object metadata adds, without one.

Real parts: the `litops` CLI, `data add` into a git + DVC data repo, Prefect's temporary server,
every step its own OS process, MLflow on SQLite. Stand-ins: the drawn pictures for photos, and a
small from-scratch model trained for few steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw

from litops.core.workspace import Workspace
from litops.data.versioning import DataRepo
from tests.flows.count_compositions import LOG_ENV
from tests.flows.test_eval_suites_flow import litops

pytestmark = pytest.mark.slow

COLOURS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 60, 220), "yellow": (230, 215, 30)}
SHAPES = ("square", "circle", "triangle")
PAIRS, PER_FOLDER, SIZE = 300, 100, 48
DATA = ["data.source=path", "data.name=caps", "data.image_size=32"]
ADD = [*DATA, "data.shard_size=100", "data.val_fraction=0.2"]  # 60 pairs held out in `val`
TRAIN = ["experiment=scratch_small", "train.steps=30", "train.batch_size=32", "train.checkpoint_every=30", "train.warmup_steps=3",
         "train.lr=3e-3", "model.image_width=16", "model.text_width=64", "model.text_heads=2", "model.embed_dim=64"]
AUTO_GATE = "the gate decides on retrieval_mean_r1; guards: retrieval_i2t_r1, retrieval_t2i_r1"


def picture(colour: str, shape: str) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (240, 240, 240))
    draw, box = ImageDraw.Draw(image), (8, 8, SIZE - 8, SIZE - 8)
    if shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    elif shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    else:
        draw.polygon([(SIZE // 2, 8), (SIZE - 8, SIZE - 8), (8, SIZE - 8)], fill=COLOURS[colour])
    return image


def img2dataset_folder(root: Path) -> Path:
    """PAIRS samples in img2dataset's `files` layout, PER_FOLDER to a shard folder."""
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for i in range(PAIRS):
        colour, shape = combos[i % len(combos)]
        folder, key, caption = root / f"{i // PER_FOLDER:05d}", f"{i:09d}", f"a {colour} {shape}"
        folder.mkdir(parents=True, exist_ok=True)
        picture(colour, shape).save(folder / f"{key}.jpg", format="JPEG", quality=90)
        (folder / f"{key}.txt").write_text(caption)
        (folder / f"{key}.json").write_text(json.dumps({
            "url": f"https://images.example.com/{key}.jpg", "caption": caption, "key": key, "status": "success",
            "error_message": None, "width": SIZE, "height": SIZE, "original_width": 4 * SIZE,
            "original_height": 4 * SIZE}))
    return root


def test_user_pairs_get_a_gate_they_can_pass_and_a_metric_they_cannot_give_is_refused_before_training(tmp_path):
    home = tmp_path / "home"
    added = litops(home, "data", "add", str(img2dataset_folder(tmp_path / "img2dataset")), *ADD, timeout=180)
    assert added.returncode == 0, added.stderr[-3000:]
    data_version = DataRepo(Workspace(home)).current_version("caps")
    assert data_version and data_version.endswith(".dir") and f"data version {data_version}" in added.stdout

    t0 = time.monotonic()
    refused = litops(home, "run", *DATA, *TRAIN, "registry.primary_metric=zeroshot_top1", timeout=60)
    seconds = time.monotonic() - t0
    assert refused.returncode == 78, refused.stderr[-3000:]
    assert seconds < 10, seconds
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and refused.stdout == "", refused.stderr
    assert lines[0].startswith("litops: config error: registry.primary_metric 'zeroshot_top1' is not reported for "
                               "dataset 'caps' (reported: retrieval_i2t_r1, ")
    assert "retrieval_mean_r1" in lines[0]
    assert not (home / "checkpoints").exists() or not any((home / "checkpoints").iterdir())  # nothing trained
    assert not (home / "mlflow.db").exists()  # no run, no model version

    compositions = tmp_path / "compositions.log"  # the config is composed once per run, in the CLI's process
    run = subprocess.run([sys.executable, "-m", "tests.flows.count_compositions", "run", *DATA, *TRAIN],
                         capture_output=True, text=True, timeout=400,
                         env={**os.environ, "LITOPS_HOME": str(home), LOG_ENV: str(compositions)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert [line.split()[0] for line in compositions.read_text().splitlines()] == ["compose"]
    assert AUTO_GATE in run.stderr and "PROMOTED" in run.stdout + run.stderr

    uri = f"sqlite:///{home}/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("lit-embedded", "champion")
    assert f"version {champion.version}: PROMOTED" in run.stdout
    assert champion.tags["gate_decision"] == "promoted" and "retrieval_mean_r1" in champion.tags["gate_reason"]
    assert champion.tags["data_version"] == data_version
    assert {"metric.retrieval_mean_r1", "metric.retrieval_i2t_r1", "metric.retrieval_t2i_r1"} <= set(champion.tags)
    assert not any(tag.startswith(("metric.zeroshot", "metric.compositional")) for tag in champion.tags)
    logged = client.get_run(champion.tags["train_run_id"]).data.metrics
    for direction in ("i2t", "t2i"):  # R@1/5/10 both ways on the held-out `val` pairs, and their plot
        recalls = [logged[f"retrieval_{direction}_r{k}"] for k in (1, 5, 10)]
        assert 0.0 <= recalls[0] <= recalls[1] <= recalls[2] <= 1.0, (direction, recalls)
    assert not [k for k in logged if k.endswith("_heldout")]  # no test split: nothing invented for it
    assert "eval/recall_at_k.png" in {f.path for f in client.list_artifacts(champion.tags["train_run_id"], "eval")}
    runs = [p for p in (home / "runs").glob("*/config.yaml") if p.parent.name != "cli"]  # runs/cli: `data add`'s
    assert len(runs) == 1 and yaml.safe_load(runs[0].read_text())["registry"]["primary_metric"] == "retrieval_mean_r1"
    evaluation = json.loads((runs[0].parent / "eval" / "metrics.json").read_text())
    assert any("split 'test' skipped" in note and "_heldout" in note for note in evaluation["skipped"])
