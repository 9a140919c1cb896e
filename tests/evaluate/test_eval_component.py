"""Scoring with a model whose embeddings we control, and the CLI end to end.

The fixture dataset encodes each object in its pixels: the top half is filled with the
object's palette colour, the bottom half with a grey level per shape. A stub "model" reads
those back and embeds images as one-hot colour + one-hot shape, and texts as a bag of
colour/shape words. It is a perfect zero-shot classifier, it tells a swapped colour or shape
word apart, but as a bag of words it cannot bind colours to shapes.
"""

from __future__ import annotations

import os

import io
import json
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from litops.core.component_cli import EXIT_BAD_INPUT, run_main
from litops.core.step_results import parse_result
from litops.core.config import LitopsConfig, ModelConfig, to_dict
from litops.evaluate import evaluate as E
from litops.evaluate.cli import main as cli_main

PALETTE = {"red": (220, 35, 35), "green": (40, 170, 50), "blue": (35, 70, 225), "yellow": (240, 215, 30),
           "purple": (135, 50, 190), "orange": (250, 135, 15), "pink": (250, 125, 200), "cyan": (20, 205, 215)}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle", "star", "cross"]
SIZE = 32


def _pixels(colour: str, shape: str) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    img[: SIZE // 2] = PALETTE[colour]
    img[SIZE // 2 :] = 20 + 45 * SHAPES.index(shape)
    return img


def _jpg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _samples(split: str) -> list[tuple[str, str, dict]]:
    """(caption, pixels-of, meta) per sample: all single objects, then two-object scenes."""
    out = []
    singles = [(c, s) for c in COLOURS for s in SHAPES] if split == "val" else [
        (COLOURS[i], SHAPES[(2 * i + 1) % 5]) for i in range(6)] * 2
    for i, (c, s) in enumerate(singles):
        cap = f"a {c} {s}" if i % 2 else f"there is a small {c} {s} on the left"
        out.append((cap, {"objects": [{"colour": c, "shape": s, "size": "small", "position": "left"}]}))
    n_pairs = 10 if split == "val" else 4
    for i in range(n_pairs):
        (c1, s1), (c2, s2) = singles[i], singles[-1 - i]
        if i == 0:
            c2 = c1  # same colour: no binding swap possible
        cap = f"a {c1} {s1} left of a {c2} {s2}"
        out.append((cap, {"objects": [{"colour": c1, "shape": s1, "size": "large", "position": "left"},
                                      {"colour": c2, "shape": s2, "size": "large", "position": "right"}]}))
    return out


def make_dataset(root: Path, with_json: bool = True, with_meta: bool = True) -> Path:
    for split in ("val", "test"):
        path = root / split / "shard-000000.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w") as tar:
            for i, (cap, meta) in enumerate(_samples(split)):
                o = meta["objects"][0]
                members = [("jpg", _jpg(_pixels(o["colour"], o["shape"]))), ("txt", cap.encode())]
                if with_meta:
                    members.append(("json", json.dumps(meta).encode()))
                for ext, payload in members:
                    info = tarfile.TarInfo(f"{split}-{i:05d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    if with_json:
        attrs = {"colour": COLOURS, "shape": SHAPES, "size": ["small", "large"], "position": ["left", "right"]}
        (root / "dataset.json").write_text(json.dumps({"name": root.name, "attributes": attrs}))
    return root


class StubModel:
    """Reads colour/shape from pixels; bag-of-words text embeddings. Counts its calls."""

    def __init__(self):
        self.image_calls, self.text_batches = 0, []
        self.rgb = torch.tensor([PALETTE[c] for c in COLOURS], dtype=torch.float)

    def embed_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.image_calls += 1
        x = images.float()
        top = x[:, :, : SIZE // 2].mean((2, 3))  # [N,3]
        colour = torch.cdist(top, self.rgb).argmin(1)
        grey = x[:, :, SIZE // 2 :].mean((1, 2, 3))
        shape = ((grey - 20) / 45).round().clamp(0, len(SHAPES) - 1).long()
        emb = torch.zeros(len(x), len(COLOURS) + len(SHAPES) + 1)
        emb[torch.arange(len(x)), colour] = 1
        emb[torch.arange(len(x)), len(COLOURS) + shape] = 1
        return torch.nn.functional.normalize(emb, dim=-1)

    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        self.text_batches.append(list(texts))
        vocab = COLOURS + SHAPES
        emb = torch.zeros(len(texts), len(vocab) + 1)
        for i, t in enumerate(texts):
            words = set(t.split())
            for j, w in enumerate(vocab):
                emb[i, j] = float(w in words)
            emb[i, -1] = 0.0 if emb[i].any() else 1.0
        return torch.nn.functional.normalize(emb, dim=-1)


def _cfg() -> LitopsConfig:
    cfg = LitopsConfig()
    cfg.data.image_size = SIZE
    return cfg


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("evalds") / "ds")


# --------------------------------------------------------------------------- scoring with a stub


def test_stub_model_zeroshot_is_perfect_with_diagonal_confusion(dataset):
    evalset = E.prepare_from_config(dataset, _cfg())
    report = E.score_model(StubModel(), evalset)
    m = report.metrics
    for sfx in ("", "_heldout"):
        for attr in ("colour", "shape"):
            assert m[f"zeroshot_{attr}_top1{sfx}"] == 1.0
            assert m[f"zeroshot_{attr}_top5{sfx}"] == 1.0
        assert m[f"zeroshot_top1{sfx}"] == 1.0 and m[f"zeroshot_top5{sfx}"] == 1.0
    conf = report.confusion[""]
    assert conf["colour"]["classes"] == COLOURS and conf["shape"]["classes"] == SHAPES
    for attr in ("colour", "shape"):
        mat = torch.tensor(conf[attr]["matrix"])
        assert torch.equal(mat, torch.diag(torch.diag(mat)))
    # Only single-object samples take part: 40 in val.
    assert int(torch.tensor(conf["colour"]["matrix"]).sum()) == 40


def test_bag_of_words_wins_attribute_swaps_but_not_binding(dataset):
    evalset = E.prepare_from_config(dataset, _cfg())
    val = evalset.splits[0]
    counts = val.counts()
    # 40 single-object swaps + 9 two-object swaps (the pair with equal colours has none).
    assert counts["compositional_pairs"] == 49 and counts["binding_pairs"] == 9
    m = E.score_model(StubModel(), evalset).metrics
    assert m["compositional_acc_binding"] == 0.0  # same words, same bag: a tie is not a win
    assert m["compositional_acc"] == pytest.approx(40 / 49)
    assert m["compositional_acc_binding_heldout"] == 0.0
    assert m["compositional_acc_heldout"] == pytest.approx(12 / 15)


def test_each_image_and_distinct_text_embedded_once(dataset):
    evalset = E.prepare_from_config(dataset, _cfg())
    stub = StubModel()
    m = E.score_model(stub, evalset).metrics
    assert stub.image_calls == 2  # once per split
    assert len(stub.text_batches) == 1
    texts = stub.text_batches[0]
    assert len(texts) == len(set(texts))
    assert "a red circle" in texts and "a photo of a cyan" in texts
    assert {f"retrieval_{d}_r{k}{s}" for d in ("i2t", "t2i") for k in (1, 5, 10) for s in ("", "_heldout")} <= set(m)
    assert all(0.0 <= v <= 1.0 for v in m.values())


def test_evaluate_model_function_matches_score_model(dataset):
    stub = StubModel()
    m = E.evaluate_model(stub, dataset, _cfg())
    assert m == E.score_model(StubModel(), E.prepare_from_config(dataset, _cfg())).metrics


def test_user_data_without_metadata_skips_gracefully(tmp_path):
    ds = make_dataset(tmp_path / "user", with_json=False, with_meta=False)
    evalset = E.prepare_from_config(ds, _cfg())
    m = E.score_model(StubModel(), evalset).metrics
    assert "retrieval_i2t_r1" in m and "retrieval_t2i_r1_heldout" in m
    assert not any(k.startswith(("zeroshot", "compositional")) for k in m)
    joined = " ".join(evalset.notes)
    assert "dataset.json" in joined and "zero-shot" in joined and "compositional" in joined


def test_missing_attribute_in_dataset_json_skips_that_task(tmp_path):
    ds = make_dataset(tmp_path / "partial")
    (ds / "dataset.json").write_text(json.dumps({"attributes": {"colour": COLOURS}}))
    import shutil

    shutil.rmtree(ds / "test")  # only a val split
    evalset = E.prepare_from_config(ds, _cfg())
    m = E.score_model(StubModel(), evalset).metrics
    assert m["zeroshot_colour_top1"] == 1.0 and "zeroshot_shape_top1" not in m
    assert m["zeroshot_top1"] == 1.0
    assert not any(k.endswith("_heldout") for k in m)
    assert any("'shape'" in n for n in evalset.notes) and any("'test'" in n for n in evalset.notes)


# --------------------------------------------------------------------------- CLI end to end


def _save_model(path: Path, seed: int) -> Path:
    from litops.core.checkpoint import atomic_save
    from litops.core.model import LiTModel

    torch.manual_seed(seed)
    cfg = _cfg()
    m = LiTModel(ModelConfig(), SIZE)
    atomic_save({"config": to_dict(cfg), "image_size": SIZE, "model": m.state_dict(), "step": 0}, path)
    return path


try:
    import warnings

    import mlflow.pyfunc

    warnings.filterwarnings("ignore", message="Add type hints to the `predict` method")

    class LitWrapper(mlflow.pyfunc.PythonModel):
        """Stand-in for the register component's wrapper: exposes `lit_model`."""

        def load_context(self, context):
            from litops.core.checkpoint import load_model

            self.lit_model, _ = load_model(context.artifacts["model"])

        def predict(self, context, model_input, params=None):
            return self.lit_model.embed_texts(list(model_input)).numpy()
except ImportError:  # pragma: no cover
    LitWrapper = None


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run_main(cli_main, "evaluate", argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A sqlite MLflow store with a training run (loss history) and a model registered via pyfunc."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("evalstore")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    model_file = _save_model(root / "model.pt", seed=0)
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.create_experiment("evaltest", artifact_location=str(root / "artifacts"))
    run_id = client.create_run(exp).info.run_id
    client.log_batch(run_id, metrics=[Metric("train/loss", 3.0 / (1 + s), 0, s) for s in range(0, 50, 5)])
    client.set_terminated(run_id)
    # The same weights registered through a pyfunc wrapper: same code path, same numbers.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(experiment_id=exp):
        mlflow.pyfunc.log_model(name="model", python_model=LitWrapper(), artifacts={"model": str(model_file)},
                                registered_model_name="lit-evaltest", pip_requirements=[])
    client.set_registered_model_alias("lit-evaltest", "champion", "1")
    yield {"uri": uri, "run_id": run_id, "model_file": model_file, "client": client}
    # set_*_uri (here and in the in-process CLI) are process-wide and exported as env vars: undo them.
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    tracking_utils._tracking_uri, registry_utils._registry_uri = None, None
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(key, None)


def _write_cfg(path: Path, uri: str = "") -> Path:
    cfg = _cfg()
    cfg.mlflow.tracking_uri = uri
    path.write_text(json.dumps(to_dict(cfg)))
    return path


def test_cli_end_to_end_with_mlflow(dataset, store, tmp_path, capsys):
    client, run_id, model_file = store["client"], store["run_id"], store["model_file"]
    cfg_path = _write_cfg(tmp_path / "cfg.json", store["uri"])  # the store comes from the config
    out = tmp_path / "out"
    code, stdout, err = _run_cli(["--config", str(cfg_path), "--dataset-dir", str(dataset), "--out", str(out),
                                  "--model", f"challenger={model_file}", "--model", "champion=models:/lit-evaltest@champion",
                                  "--run-id", run_id], capsys)
    assert code == 0, err
    result = parse_result(stdout.splitlines())
    assert result is not None
    ch, cp = result.metrics["challenger"], result.metrics["champion"]
    for name in ("zeroshot_top1", "zeroshot_colour_top5", "zeroshot_shape_top1_heldout", "retrieval_i2t_r1",
                 "retrieval_t2i_r10_heldout", "retrieval_mean_r1", "compositional_acc",
                 "compositional_acc_binding", "compositional_acc_heldout"):
        assert 0.0 <= ch[name] <= 1.0
    assert cp == pytest.approx(ch)
    assert result.splits["val"]["samples"] == 50 and result.splits["test"]["samples"] == 16
    assert json.loads((out / "metrics.json").read_text())["metrics"] == result.metrics

    logged = client.get_run(run_id).data.metrics
    assert set(logged) == set(ch) | {"train/loss"}
    assert all(logged[k] == pytest.approx(v) for k, v in ch.items())
    names = {f.path for f in client.list_artifacts(run_id, "eval")}
    assert names == {"eval/loss_curve.png", "eval/zeroshot_confusion.png", "eval/recall_at_k.png"}
    assert result.artifacts == sorted(result.artifacts, key=["eval/loss_curve.png", "eval/zeroshot_confusion.png",
                                                                   "eval/recall_at_k.png"].index)
    for p in result.plots:
        assert Path(p).is_file() and Path(p).parent == out and Path(p).read_bytes()[:4] == b"\x89PNG"


def test_cli_missing_model_is_one_line(dataset, store, tmp_path, capsys):
    cfg_path = _write_cfg(tmp_path / "cfg.json")
    code, _, err = _run_cli(["--config", str(cfg_path), "--dataset-dir", str(dataset), "--out", str(tmp_path / "o"),
                             "--model", f"x={tmp_path / 'nope.pt'}"], capsys)
    assert code == EXIT_BAD_INPUT
    assert err.strip().count("\n") == 0 and "nope.pt" in err and "Traceback" not in err

    code, _, err = _run_cli(["--config", str(cfg_path), "--dataset-dir", str(dataset), "--out", str(tmp_path / "o"),
                             "--model", "x=models:/no-such-model@champion", "--tracking-uri", store["uri"]], capsys)
    assert code == EXIT_BAD_INPUT
    assert store["uri"] in err and "no-such-model" in err and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("litops evaluate:")] == [err.splitlines()[-1]]


def test_cli_unreachable_store_is_one_line(dataset, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(to_dict(_cfg())))
    proc = subprocess.run(
        [sys.executable, "-m", "litops.evaluate", "--config", str(cfg_path), "--dataset-dir", str(dataset),
         "--out", str(tmp_path / "o"), "--model", "challenger=models:/lit-embedded@champion",
         "--tracking-uri", uri, "--run-id", "0123abcd"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == EXIT_BAD_INPUT
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and uri in lines[0] and "unreachable" in lines[0], proc.stderr
    assert "LITOPS_RESULT" not in proc.stdout
