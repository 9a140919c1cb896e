"""The metric names declared before training (metric_names) are the names scoring then reports.

Real data on disk (tar shards, dataset.json, suite files) scored by the stub embedders of the
scoring tests, which stand in for a trained model: names do not depend on the embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

from litops.core.config import LitopsConfig
from litops.evaluate import evaluate as E
from litops.evaluate.metric_names import reported_metrics

from tests.conftest import make_tiny_dataset, write_shard, _draw
from tests.evaluate.test_eval_component import StubModel, make_dataset
from tests.evaluate.test_eval_suites import SIZE, ColourEmbedder, suites_cfg


def scored_names(model, dataset: Path | None, cfg: LitopsConfig) -> list[str]:
    return sorted(E.score_model(model, E.prepare_from_config(dataset, cfg)).metrics)


def plain_cfg() -> LitopsConfig:
    cfg = LitopsConfig()
    cfg.data.image_size, cfg.data.workers = SIZE, 0
    return cfg


def test_benchmark_with_object_metadata_and_every_suite_kind(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "tiny", {"val": 16, "test": 16})  # single objects: no binding swap
    cfg = suites_cfg(tmp_path)
    declared = reported_metrics(cfg, dataset)
    assert sorted(declared) == scored_names(ColourEmbedder(), dataset, cfg)
    assert {"zeroshot_top1", "compositional_acc_heldout", "probe/compositional_acc_swap_att",
            "colours/mean_per_class_recall", "pairs/retrieval_mean_r1"} <= set(declared)


def test_a_caption_only_dataset_reports_retrieval_alone(tmp_path):
    """img2dataset's json fields, no object metadata, no test split: what `data add` makes of a user's pairs."""
    samples = [(f"k{i:03d}", _draw(colour, "circle", SIZE), f"a {colour} circle",
                {"url": f"https://example.com/{i}.jpg", "caption": f"a {colour} circle", "width": SIZE, "height": SIZE})
               for i, colour in enumerate(["red", "green", "blue", "yellow"] * 3)]
    write_shard(tmp_path / "caps" / "val" / "000000.tar", samples)
    (tmp_path / "caps" / "dataset.json").write_text(json.dumps({"attributes": {}, "splits": {"train": 0, "val": 12}}))
    declared = reported_metrics(plain_cfg(), tmp_path / "caps")
    assert sorted(declared) == scored_names(ColourEmbedder(), tmp_path / "caps", plain_cfg())
    assert declared == ["retrieval_i2t_r1", "retrieval_t2i_r1", "retrieval_i2t_r5", "retrieval_t2i_r5",
                        "retrieval_i2t_r10", "retrieval_t2i_r10", "retrieval_mean_r1"]


def test_two_object_images_of_the_embedded_benchmark_add_the_binding_probe(tmp_path):
    dataset = make_dataset(tmp_path / "synth")  # singles and two-object pairs in val and test
    meta = json.loads((dataset / "dataset.json").read_text())
    meta.update(source="synth", params={"two_object_fraction": 0.3})
    (dataset / "dataset.json").write_text(json.dumps(meta))
    cfg = plain_cfg()
    declared = reported_metrics(cfg, dataset)
    assert sorted(declared) == scored_names(StubModel(), dataset, cfg)
    assert {"compositional_acc_binding", "compositional_acc_binding_heldout"} <= set(declared)
