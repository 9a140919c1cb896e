"""Zero-shot classification on a user's labelled images, in LAION CLIP_benchmark's conventions.

Images: an ImageFolder tree (class subfolders sorted by name give the class index) or a folder
of webdataset shards whose samples carry a `cls` member (the class index as text). Class names:
`classnames.txt`, one per line in class-index order. Prompts: one template per line with `{c}`
where the class name goes (`zeroshot_classification_templates.txt`). The classifier is the mean
of each class's normalised prompt embeddings, re-normalised (metrics.zeroshot_classifier).

Metrics: `zeroshot_top1`, `zeroshot_top5` (k clipped to the class count) and
`mean_per_class_recall` (the mean over classes that have images of their top-1 recall).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from litops.core.component_cli import UserError

from . import metrics as M
from .suite_base import Scorer, SuiteResult, incomplete_note, read_lines, require_folder, unreadable_note
from .suite_images import ImageRef, list_class_folders, scan_shards, shard_files

CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
PLACEHOLDER = "{c}"


@dataclass
class ZeroShotSuite:
    name: str
    classes: list[str]
    templates: list[str]
    refs: list[ImageRef]
    labels: torch.Tensor  # class index per image
    kind: str = "zeroshot"
    notes: list[str] = field(default_factory=list)  # what preparing it skipped

    def texts(self) -> list[str]:
        """Class-major prompts: every template of class 0, then of class 1, ..."""
        return [t.replace(PLACEHOLDER, c) for c in self.classes for t in self.templates]

    def images(self) -> list[ImageRef]:
        return self.refs

    def score(self, scorer: Scorer) -> SuiteResult:
        classifier = M.zeroshot_classifier(scorer.embed_texts(self.texts()), len(self.classes))
        embedded = scorer.embed_images(self.refs)
        counts = {"images": len(self.refs), "unreadable": embedded.unreadable, "classes": len(self.classes)}
        notes = unreadable_note(self.name, embedded.unreadable, len(self.refs))
        if not len(embedded.rows):
            raise UserError(f"suite '{self.name}': none of its {len(self.refs)} images could be decoded")
        labels = self.labels[embedded.rows]
        top1, top5, confusion = M.zeroshot_eval(embedded.embeddings, classifier, labels, topk=5)
        recalls = per_class_recall(confusion)
        present = [r for r in recalls if r is not None]
        metrics = {"zeroshot_top1": top1, "zeroshot_top5": top5,
                   "mean_per_class_recall": sum(present) / len(present)}
        plot = {"classes": self.classes, "matrix": confusion.tolist(), "recalls": recalls}
        return SuiteResult(metrics, plot, counts, notes)


def per_class_recall(confusion: torch.Tensor) -> list[float | None]:
    """Top-1 recall per true class (rows of the confusion matrix); None for a class without images."""
    totals = confusion.sum(1)
    return [float(confusion[c, c] / totals[c]) if totals[c] else None for c in range(len(totals))]


def read_templates(path: Path) -> list[str]:
    templates = read_lines(path, "zero-shot templates")
    for line in templates:
        if PLACEHOLDER not in line:
            raise UserError(f"zero-shot templates file {path}: template {line!r} has no {PLACEHOLDER} for the class name")
    return templates


def prepare_zeroshot(suite) -> ZeroShotSuite:
    """The suite's class names, templates and image list, checked against each other (no pixels read)."""
    root = Path(suite.path).expanduser()
    require_folder(root, suite.name)
    classnames_path = Path(suite.classnames).expanduser() if suite.classnames else root / CLASSNAMES_FILE
    templates_path = Path(suite.templates).expanduser() if suite.templates else root / TEMPLATES_FILE
    classes = read_lines(classnames_path, "class names")
    templates = read_templates(templates_path)
    shards, notes = shard_files(root), []
    if shards:
        refs, labels = _shard_images(shards, len(classes), suite.name, notes)
    else:
        refs, labels = _folder_images(root, len(classes), classnames_path, suite.name)
    return ZeroShotSuite(suite.name, classes, templates, refs, torch.tensor(labels, dtype=torch.long), notes=notes)


def _folder_images(root: Path, n_classes: int, classnames_path: Path, suite: str) -> tuple[list[ImageRef], list[int]]:
    folders, refs, labels = list_class_folders(root)
    if not folders:
        raise UserError(f"suite '{suite}': {root} has neither class subfolders nor *.tar shards")
    if len(folders) != n_classes:
        raise UserError(f"suite '{suite}': {root} has {len(folders)} class folders but {classnames_path} "
                        f"names {n_classes} classes")
    if not refs:
        raise UserError(f"suite '{suite}': no image files ({', '.join(('jpg', 'png', 'webp'))}, ...) "
                        f"in the class folders of {root}")
    return refs, labels


def _shard_images(shards: list[Path], n_classes: int, suite: str, notes: list[str]) -> tuple[list[ImageRef], list[int]]:
    scan = scan_shards(shards, ("cls",))
    notes += incomplete_note(suite, scan.incomplete, "an image and a 'cls' member")
    if not scan.samples:
        raise UserError(f"suite '{suite}': no sample with an image and a 'cls' member in the shards of {shards[0].parent}")
    refs, labels = [], []
    for sample in scan.samples:
        text = sample.members["cls"].decode("utf-8", "replace").strip()
        if not text.lstrip("-").isdigit() or not 0 <= int(text) < n_classes:
            raise UserError(f"suite '{suite}': sample {sample.key} in {sample.image.location} has class {text!r}, "
                            f"not an index in 0..{n_classes - 1}")
        refs.append(sample.image)
        labels.append(int(text))
    return refs, labels
