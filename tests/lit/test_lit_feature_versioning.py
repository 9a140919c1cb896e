"""Feature caches are versioned like the data: `dvc add`-ed beside the dataset, pushed, pulled back."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from litops.core.workspace import Workspace
from litops.data.versioning import DataRepo
from litops.train.feature_cache import cache_dir_for
from tests.conftest import make_tiny_dataset


def test_feature_cache_is_dvc_tracked_pushed_and_pulled(tmp_path):
    ws = Workspace(tmp_path / "home")
    repo = DataRepo(ws).ensure()
    dataset = make_tiny_dataset(ws.dataset_dir("tiny"))
    fdir = Path(cache_dir_for(dataset))
    assert fdir == ws.data_repo / "features" / "tiny"
    fdir.mkdir(parents=True)
    torch.save({"features": torch.ones(2, 3)}, fdir / "abc.pt")  # what the trainer writes
    v = repo.version("tiny")
    assert (ws.data_repo / "features" / "tiny.dvc").is_file()
    tracked = repo._git("ls-files").stdout.split()
    assert "features/tiny.dvc" in tracked and "features/.gitignore" in tracked
    assert v["pushed"] >= 1
    shutil.rmtree(fdir)
    shutil.rmtree(dataset)
    repo.pull("tiny")
    assert torch.equal(torch.load(fdir / "abc.pt")["features"], torch.ones(2, 3))
