"""A user's own data end to end: `data add` ~300 image-caption pairs (a folder, some of them bad),
then the retrain flow with `data.source=path` trains, evaluates on `val` (the set has no `test`
split), registers and gates a version.

Real parts as in test_e2e: git+DVC data repo, MLflow on SQLite, Prefect's test harness, every
step its own OS process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
SHAPES = ("square", "circle", "triangle")
N_GOOD, N_BAD = 300, 6
PATH_RUN = ["data.source=path", "data.name=mine", "data.image_size=32", "data.shard_size=100",
            "train.steps=30", "train.batch_size=32", "train.checkpoint_every=30", "train.warmup_steps=3",
            "train.lr=3e-3", "model.image_width=16", "model.text_width=64", "model.text_heads=2",
            "model.embed_dim=64", "registry.model_name=lit-mine", "registry.absolute_floor=0.0"]


def draw(colour: str, shape: str, size: int = 40) -> Image.Image:
    im = Image.new("RGB", (size, size), (245, 245, 245))
    d, box = ImageDraw.Draw(im), (8, 8, size - 8, size - 8)
    fill = COLOURS[colour]
    if shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "circle":
        d.ellipse(box, fill=fill)
    else:
        d.polygon([(size // 2, 8), (size - 8, size - 8), (8, size - 8)], fill=fill)
    return im


def user_folder(root: Path) -> None:
    """N_GOOD pairs (PNG and JPEG, with object metadata) and N_BAD broken ones."""
    root.mkdir(parents=True)
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for i in range(N_GOOD):
        colour, shape = combos[i % len(combos)]
        ext = ("png", "PNG") if i % 3 == 0 else ("jpg", "JPEG")
        draw(colour, shape).save(root / f"img{i:04d}.{ext[0]}", format=ext[1])
        (root / f"img{i:04d}.txt").write_text(f"a {colour} {shape}")
        (root / f"img{i:04d}.json").write_text(json.dumps({"objects": [{"colour": colour, "shape": shape}]}))
    for i in range(N_BAD):
        (root / f"bad{i}.jpg").write_bytes(b"not an image")
        (root / f"bad{i}.txt").write_text("a broken sample")


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.mark.slow
def test_user_data_reaches_a_registered_gated_version(harness, tmp_path, monkeypatch):
    from litops.core.config import DataConfig, LitopsConfig
    from litops.data import add_and_version
    from litops.flows.retrain import retrain

    home = tmp_path / "home"
    monkeypatch.setenv("LITOPS_HOME", str(home))
    src = tmp_path / "photos"
    user_folder(src)
    added = add_and_version(str(src), LitopsConfig(home=str(home), data=DataConfig(
        source="path", name="mine", image_size=32, shard_size=100, max_bad_fraction=0.05)))
    assert added["good"] == N_GOOD and added["by_reason"] == {"image_undecodable": N_BAD}
    assert added["added"]["val"] >= 1 and sum(added["added"].values()) == N_GOOD
    assert added["data_version"].endswith(".dir")

    summary = retrain(overrides=PATH_RUN)
    assert summary["status"] == "promoted", summary
    assert summary["data_version"] == added["data_version"]
    metrics = summary["metrics"]
    assert "retrieval_mean_r1" in metrics and "zeroshot_top1" in metrics
    assert not [k for k in metrics if k.endswith("_heldout")]  # no test split: nothing invented for it

    uri = f"sqlite:///{home}/mlflow.db"
    champ = MlflowClient(uri, registry_uri=uri).get_model_version_by_alias("lit-mine", "champion")
    assert int(champ.version) == summary["version"]
    assert champ.tags["gate_decision"] == "promoted" and champ.tags["data_version"] == added["data_version"]
    evaluation = json.loads((Path(summary["run_dir"]) / "eval" / "metrics.json").read_text())
    assert any("split 'test' skipped" in note and "_heldout" in note for note in evaluation["skipped"])
