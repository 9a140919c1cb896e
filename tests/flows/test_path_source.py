"""A user's own data with object metadata: `data add` of ~300 image-caption pairs (a folder of PNG
and JPEG files, some of them broken, each pair with a key.json naming its objects), then the
evaluation of what was ingested: retrieval and, from the object metadata, zero-shot metrics on
`val`; nothing for `test` (the set has none) but a note saying so.

The retrain flow on a user's pairs (train, evaluate, register, gate, promote) runs once, in
test_user_data.py, on caption-only pairs as img2dataset writes them; zero-shot is what object
metadata adds, so it is checked here without a second flow run.

Real parts: `data add` into a git+DVC data repo, the evaluation's reading and scoring of the
ingested shards. Stand-in: ColourEmbedder (tests/evaluate/test_eval_suites.py) for a trained
model; which metrics are reported does not depend on the embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
SHAPES = ("square", "circle", "triangle")
N_GOOD, N_BAD = 300, 6


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


def test_user_data_with_object_metadata_is_ingested_and_evaluated_with_zero_shot(tmp_path):
    from litops.core.config import DataConfig, LitopsConfig
    from litops.data import add_and_version
    from litops.evaluate import evaluate as E

    from tests.evaluate.test_eval_suites import ColourEmbedder

    src = tmp_path / "photos"
    user_folder(src)
    cfg = LitopsConfig(home=str(tmp_path / "home"), data=DataConfig(
        source="path", name="mine", image_size=32, shard_size=100, max_bad_fraction=0.05, workers=0))
    added = add_and_version(str(src), cfg)
    assert added["good"] == N_GOOD and added["by_reason"] == {"image_undecodable": N_BAD}
    assert added["added"]["val"] >= 1 and sum(added["added"].values()) == N_GOOD
    assert added["data_version"].endswith(".dir")

    evalset = E.prepare_from_config(added["dataset_dir"], cfg)
    metrics = E.score_model(ColourEmbedder(), evalset).metrics
    assert "retrieval_mean_r1" in metrics and "zeroshot_top1" in metrics
    assert not [k for k in metrics if k.endswith("_heldout")]  # no test split: nothing invented for it
    assert any("split 'test' skipped" in note and "_heldout" in note for note in evalset.notes)
