"""Evaluation suites on users' own data: each kind on small generated data, scored by embedders
whose answers we know.

Every image is a flat square of one of five palette colours (a little noise so JPEG has
something to keep). `ColourEmbedder` reads the colour back and embeds an image as the one-hot
of its palette colour, and a text as the one-hot of the colour word it contains: a perfect
classifier, and a bag of words that cannot tell "red and blue" from "blue and red".
`RandomEmbedder` embeds every image and text at random: chance level.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from litops.core.component_cli import EXIT_BAD_INPUT, UserError, run_main
from litops.core.step_results import parse_result
from litops.core.config import ConfigError, LitopsConfig, SuiteConfig, to_dict, validate
from litops.evaluate import evaluate as E
from litops.evaluate.cli import main as cli_main
from litops.evaluate.suite_base import Scorer
from litops.evaluate.suites import prepare_suite, suite_plot
from litops.core.progress import Progress

from tests.conftest import make_tiny_dataset

PALETTE = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (135, 50, 190)}
CLASSES = list(PALETTE)
SIZE = 32
TEMPLATES = ["a photo of a {c} thing.", "a {c} square"]


def colour_jpg(colour: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(PALETTE[colour]) + rng.integers(-8, 9, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


class ColourEmbedder:
    image_input_size = SIZE

    def __init__(self, confuse: dict[str, str] | None = None):
        self.confuse = confuse or {}  # image colour -> colour it is embedded as
        self.rgb = torch.tensor([PALETTE[c] for c in CLASSES], dtype=torch.float)
        self.images_embedded = 0

    def embed_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.images_embedded += len(images)
        seen = torch.cdist(images.float().mean((2, 3)), self.rgb).argmin(1).tolist()
        index = [CLASSES.index(self.confuse.get(CLASSES[i], CLASSES[i])) for i in seen]
        return torch.nn.functional.one_hot(torch.tensor(index), len(CLASSES) + 1).float()

    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        emb = torch.zeros(len(texts), len(CLASSES) + 1)
        for i, text in enumerate(texts):
            words = set(text.replace(".", " ").split())
            for j, colour in enumerate(CLASSES):
                emb[i, j] = float(colour in words)
            emb[i, -1] = 0.0 if emb[i].any() else 1.0
        return torch.nn.functional.normalize(emb, dim=-1)


class RandomEmbedder:
    image_input_size = SIZE

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)

    def embed_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(len(images), 16, generator=self.gen), dim=-1)

    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(len(texts), 16, generator=self.gen), dim=-1)


# --------------------------------------------------------------------------- data on disk


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def image_folder(root: Path, per_class: dict[str, int]) -> Path:
    """An ImageFolder tree: folder names sort into CLASSES' order (a 0-4 prefix), files jpg and png."""
    for index, colour in enumerate(CLASSES):
        folder = root / f"{index}-{colour}"
        folder.mkdir(parents=True)
        for i in range(per_class[colour]):
            data = colour_jpg(colour, 100 * index + i)
            if i % 2:
                (folder / f"img{i:03d}.jpg").write_bytes(data)
            else:
                Image.open(io.BytesIO(data)).save(folder / f"img{i:03d}.png")
    write_lines(root / "classnames.txt", CLASSES)
    write_lines(root / "zeroshot_classification_templates.txt", TEMPLATES)
    return root


def class_shards(root: Path, per_class: dict[str, int]) -> Path:
    """The same classes as webdataset shards with a `cls` member, split over two shards."""
    samples = [(f"s{index}-{i:03d}", {"jpg": colour_jpg(colour, 100 * index + i), "cls": str(index).encode()})
               for index, colour in enumerate(CLASSES) for i in range(per_class[colour])]
    write_tar(root / "shard-000000.tar", samples[::2])
    write_tar(root / "shard-000001.tar", samples[1::2])
    write_lines(root / "classnames.txt", CLASSES)
    write_lines(root / "zeroshot_classification_templates.txt", TEMPLATES)
    return root


def caption_shards(root: Path, n: int) -> Path:
    samples = [(f"r{i:04d}", {"jpg": colour_jpg(CLASSES[i % 5], i), "txt": f"a {CLASSES[i % 5]} square".encode()})
               for i in range(n)]
    write_tar(root / "shard-000000.tar", samples)
    return root


def triples_file(path: Path, keys: list[str]) -> Path:
    """Per key: a colour replaced (a bag of words wins it) and two colours swapped (it ties, so loses)."""
    lines = []
    for i, key in enumerate(keys):
        colour, other = CLASSES[i % 5], CLASSES[(i + 1) % 5]
        lines.append({"key": key, "caption": f"a {colour} square", "swapped": f"a {other} square", "type": "replace_att"})
        lines.append({"key": key, "caption": f"a {colour} square next to {other}", "type": "swap att",
                      "swapped": f"a {other} square next to {colour}"})
    return write_lines(path, [json.dumps(line) for line in lines])


def score(suite, model, workers: int = 0):
    return suite.score(Scorer(model, batch_size=8, image_size=SIZE, workers=workers, bar=Progress()))


EVEN = {c: 6 for c in CLASSES}


# --------------------------------------------------------------------------- zero-shot


def test_zeroshot_folder_perfect_embedder_scores_one_and_plots_a_confusion_matrix(tmp_path):
    suite = prepare_suite(SuiteConfig("colours", "zeroshot", str(image_folder(tmp_path / "f", EVEN))), [1])
    result = score(suite, ColourEmbedder())
    assert result.metrics == {"zeroshot_top1": 1.0, "zeroshot_top5": 1.0, "mean_per_class_recall": 1.0}
    matrix = torch.tensor(result.plot["matrix"])
    assert torch.equal(matrix, torch.diag(torch.tensor([EVEN[c] for c in CLASSES])))
    assert result.counts == {"images": 30, "unreadable": 0, "classes": 5}
    path = suite_plot(tmp_path, "colours", "zeroshot", result, "m")
    assert path.name == "colours_confusion.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_zeroshot_shards_with_cls_score_as_the_same_images_in_folders(tmp_path):
    per_class = {c: 3 + i for i, c in enumerate(CLASSES)}
    confused = ColourEmbedder(confuse={"purple": "red"})
    from_folders = score(prepare_suite(SuiteConfig("f", "zeroshot", str(image_folder(tmp_path / "f", per_class))), [1]),
                         confused)
    from_shards = score(prepare_suite(SuiteConfig("s", "zeroshot", str(class_shards(tmp_path / "s", per_class))), [1]),
                        ColourEmbedder(confuse={"purple": "red"}))
    assert from_shards.metrics == from_folders.metrics
    assert from_shards.plot["matrix"] == from_folders.plot["matrix"]


def test_mean_per_class_recall_weighs_classes_not_images(tmp_path):
    per_class = {c: 4 for c in CLASSES} | {"purple": 12}
    suite = prepare_suite(SuiteConfig("u", "zeroshot", str(image_folder(tmp_path / "u", per_class))), [1])
    result = score(suite, ColourEmbedder(confuse={"purple": "red"}))  # every purple image called red
    total = sum(per_class.values())
    assert result.metrics["zeroshot_top1"] == pytest.approx((total - per_class["purple"]) / total)
    assert result.metrics["mean_per_class_recall"] == pytest.approx((len(CLASSES) - 1) / len(CLASSES))
    assert result.plot["recalls"] == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_random_embedder_is_near_chance_and_top5_clips_to_the_class_count(tmp_path):
    suite = prepare_suite(SuiteConfig("r", "zeroshot", str(image_folder(tmp_path / "r", {c: 40 for c in CLASSES}))), [1])
    m = score(suite, RandomEmbedder()).metrics
    chance = 1 / len(CLASSES)
    assert abs(m["zeroshot_top1"] - chance) < 0.12 and abs(m["mean_per_class_recall"] - chance) < 0.12
    assert m["zeroshot_top5"] == 1.0  # k = 5 classes: every image's class is within its top 5


def test_unreadable_image_is_counted_and_skipped(tmp_path):
    root = image_folder(tmp_path / "bad", EVEN)
    (root / "2-blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    suite = prepare_suite(SuiteConfig("bad", "zeroshot", str(root)), [1])
    result = score(suite, ColourEmbedder())
    assert result.counts["images"] == 31 and result.counts["unreadable"] == 1
    assert result.metrics["zeroshot_top1"] == 1.0
    assert result.notes == ["suite 'bad': 1 of 31 images unreadable, skipped"]


def test_many_classes_plot_per_class_recall(tmp_path):
    from litops.evaluate.suite_base import SuiteResult

    classes = [f"class{i}" for i in range(40)]
    recalls = [i / 40 for i in range(40)]
    result = SuiteResult({}, {"classes": classes, "matrix": [], "recalls": recalls}, {})
    path = suite_plot(tmp_path, "big", "zeroshot", result, "m")
    assert path.name == "big_per_class_recall.png" and path.read_bytes()[:4] == b"\x89PNG"


def one_line_error(config: SuiteConfig, ks=(1,)) -> str:
    with pytest.raises(UserError) as err:
        prepare_suite(config, list(ks))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_zeroshot_bad_inputs_are_one_line_errors_naming_the_file(tmp_path):
    root = image_folder(tmp_path / "z", EVEN)
    assert str(tmp_path / "missing") in one_line_error(SuiteConfig("z", "zeroshot", str(tmp_path / "missing")))

    (root / "classnames.txt").rename(root / "names.txt")
    assert str(root / "classnames.txt") in one_line_error(SuiteConfig("z", "zeroshot", str(root)))

    names = str(root / "names.txt")
    bad_templates = write_lines(tmp_path / "t.txt", ["a photo of a {c}", "a photo of a {}"])
    message = one_line_error(SuiteConfig("z", "zeroshot", str(root), classnames=names, templates=str(bad_templates)))
    assert str(bad_templates) in message and "{c}" in message

    four = write_lines(tmp_path / "four.txt", CLASSES[:4])
    message = one_line_error(SuiteConfig("z", "zeroshot", str(root), classnames=str(four)))
    assert str(four) in message and "5 class folders" in message and "4 classes" in message


def test_class_index_out_of_range_in_shards_is_an_error(tmp_path):
    root = class_shards(tmp_path / "s", EVEN)
    write_tar(root / "shard-000002.tar", [("odd", {"jpg": colour_jpg("red", 0), "cls": b"7"})])
    message = one_line_error(SuiteConfig("s", "zeroshot", str(root)))
    assert "odd" in message and "shard-000002.tar" in message and "'7'" in message


# --------------------------------------------------------------------------- retrieval


def test_retrieval_perfect_and_random_embedders(tmp_path):
    ks = [1, 5, 10]
    suite = prepare_suite(SuiteConfig("pairs", "retrieval", str(caption_shards(tmp_path / "p", 60))), ks)
    perfect = score(suite, ColourEmbedder())
    names = {f"retrieval_{d}_r{k}" for d in ("i2t", "t2i") for k in ks} | {"retrieval_mean_r1"}
    assert set(perfect.metrics) == names
    assert all(v == 1.0 for v in perfect.metrics.values())  # identical captions count as hits
    assert perfect.counts == {"images": 60, "unreadable": 0, "distinct_captions": 5}
    random = score(suite, RandomEmbedder()).metrics
    assert random["retrieval_mean_r1"] < 0.5
    assert random["retrieval_i2t_r1"] <= random["retrieval_i2t_r5"] <= random["retrieval_i2t_r10"]
    path = suite_plot(tmp_path, "pairs", "retrieval", perfect, "m")
    assert path.name == "pairs_recall_at_k.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_retrieval_reader_processes_give_the_same_metrics(tmp_path):
    suite = prepare_suite(SuiteConfig("pairs", "retrieval", str(caption_shards(tmp_path / "p", 40))), [1, 5])
    model = ColourEmbedder(confuse={"green": "blue"})
    assert score(suite, model, workers=2).metrics == score(suite, model, workers=0).metrics


def test_retrieval_needs_shards(tmp_path):
    (tmp_path / "empty").mkdir()
    assert str(tmp_path / "empty") in one_line_error(SuiteConfig("p", "retrieval", str(tmp_path / "empty")))


# --------------------------------------------------------------------------- compositional


def test_compositional_accuracy_per_swap_type_and_each_image_embedded_once(tmp_path):
    shards = caption_shards(tmp_path / "c", 10)
    keys = [f"r{i:04d}" for i in range(10)]
    config = SuiteConfig("probe", "compositional", str(shards), triples=str(triples_file(tmp_path / "t.jsonl", keys)))
    suite = prepare_suite(config, [1])
    model = ColourEmbedder()
    result = score(suite, model)
    # a bag of words wins every replaced colour and ties (so loses) every swap
    assert result.metrics == {"compositional_acc": 0.5, "compositional_acc_replace_att": 1.0,
                              "compositional_acc_swap_att": 0.0}
    assert model.images_embedded == len(keys)  # two triples per image, one embedding
    assert result.counts == {"images": 10, "unreadable": 0, "triples": 20, "triples_scored": 20}
    path = suite_plot(tmp_path, "probe", "compositional", result, "m")
    assert path.name == "probe_compositional.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_compositional_bad_inputs(tmp_path):
    shards = caption_shards(tmp_path / "c", 4)
    triples = triples_file(tmp_path / "t.jsonl", ["r0000", "nope"])
    message = one_line_error(SuiteConfig("p", "compositional", str(shards), triples=str(triples)))
    assert str(triples) in message and "'nope'" in message

    broken = write_lines(tmp_path / "broken.jsonl", ['{"key": "r0000", "caption": "a"}'])
    message = one_line_error(SuiteConfig("p", "compositional", str(shards), triples=str(broken)))
    assert str(broken) in message and "line 1" in message


# --------------------------------------------------------------------------- with the built-in benchmark


def suites_cfg(tmp_path: Path) -> LitopsConfig:
    cfg = LitopsConfig()
    cfg.data.image_size = SIZE
    cfg.data.workers = 0
    keys = [f"r{i:04d}" for i in range(10)]
    cfg.eval.suites = [
        SuiteConfig("colours", "zeroshot", str(image_folder(tmp_path / "zs", EVEN))),
        SuiteConfig("pairs", "retrieval", str(caption_shards(tmp_path / "pairs", 20))),
        SuiteConfig("probe", "compositional", str(tmp_path / "pairs"), triples=str(triples_file(tmp_path / "t.jsonl", keys))),
    ]
    return validate(cfg)


def test_suite_metrics_join_the_benchmark_prefixed_and_leave_it_unchanged(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "tiny", {"val": 16, "test": 16})
    cfg = suites_cfg(tmp_path)
    plain = LitopsConfig()
    plain.data.image_size, plain.data.workers = SIZE, 0
    builtin = E.score_model(ColourEmbedder(), E.prepare_from_config(dataset, plain)).metrics

    report = E.score_model(ColourEmbedder(), E.prepare_from_config(dataset, cfg))
    suite_metrics = {k: v for k, v in report.metrics.items() if "/" in k}
    assert {k: v for k, v in report.metrics.items() if "/" not in k} == builtin
    assert report.metrics["colours/zeroshot_top1"] == 1.0 and report.metrics["pairs/retrieval_mean_r1"] == 1.0
    assert report.metrics["probe/compositional_acc_swap_att"] == 0.0
    assert {k.split("/")[0] for k in suite_metrics} == {"colours", "pairs", "probe"}
    assert set(report.suites) == {"colours", "pairs", "probe"}

    only = E.score_model(ColourEmbedder(), E.prepare_from_config(None, cfg, ["pairs"])).metrics
    assert set(only) == {k for k in suite_metrics if k.startswith("pairs/")}


def save_small_model(path: Path) -> Path:
    from litops.core.checkpoint import atomic_save
    from litops.core.config import ModelConfig
    from litops.core.model import LiTModel

    torch.manual_seed(0)
    cfg = LitopsConfig()
    cfg.data.image_size = SIZE
    model = LiTModel(ModelConfig(), SIZE)
    atomic_save({"config": to_dict(cfg), "image_size": SIZE, "model": model.state_dict(), "step": 0}, path)
    return path


def test_component_cli_writes_suite_metrics_and_plots(tmp_path, capsys):
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(to_dict(suites_cfg(tmp_path))))
    model = save_small_model(tmp_path / "model.pt")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        run_main(cli_main, "evaluate", ["--config", str(cfg_path), "--out", str(out), "--model", f"m={model}",
                                        "--model", f"again={model}", "--suites", "colours,probe"])
    stdout, err = capsys.readouterr()
    assert exc.value.code == 0, err
    result = parse_result(stdout.splitlines())
    metrics = result.metrics["m"]
    assert {k.split("/")[0] for k in metrics} == {"colours", "probe"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert result.metrics["again"] == pytest.approx(metrics)  # every model gets the suites, a champion too
    assert sorted(Path(p).name for p in result.plots) == ["colours_confusion.png", "probe_compositional.png"]
    assert result.suites["colours"] == {"kind": "zeroshot", "images": 30, "unreadable": 0, "classes": 5}
    assert json.loads((out / "metrics.json").read_text())["metrics"] == result.metrics

    with pytest.raises(SystemExit) as exc:
        run_main(cli_main, "evaluate", ["--config", str(cfg_path), "--out", str(out), "--model", f"m={model}",
                                        "--suites", "nope"])
    _, err = capsys.readouterr()
    assert exc.value.code == EXIT_BAD_INPUT
    assert err.strip().count("\n") == 0 and "'nope'" in err and "colours, pairs, probe" in err


@pytest.mark.parametrize("suites, key", [
    ([SuiteConfig("a", "zeroshot", "/x"), SuiteConfig("a", "retrieval", "/y")], "eval.suites[1].name"),
    ([SuiteConfig("a/b", "zeroshot", "/x")], "eval.suites[0].name"),
    ([SuiteConfig("benchmark", "zeroshot", "/x")], "eval.suites[0].name"),
    ([SuiteConfig("a", "classify", "/x")], "eval.suites[0].kind"),
    ([SuiteConfig("a", "retrieval", "")], "eval.suites[0].path"),
    ([SuiteConfig("a", "compositional", "/x")], "eval.suites[0].triples"),
])
def test_suite_config_errors_name_the_key(suites, key):
    cfg = LitopsConfig()
    cfg.eval.suites = suites
    with pytest.raises(ConfigError, match=r"^config key '" + key.replace("[", r"\[").replace("]", r"\]")) as err:
        validate(cfg)
    assert "\n" not in str(err.value)
