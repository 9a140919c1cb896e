"""Real DVC repos and a real local remote (no mocks)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from litops.core.component_cli import UserError
from litops.core.workspace import Workspace
from litops.data import DataRepo, ingest, synthesize
from litops.data.api import prepare

from data_helpers import jpeg_bytes, small_cfg, tree_digest

VERSION_RE = re.compile(r"^[0-9a-f]{32}\.dir$")


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_version_is_idempotent_and_changes_with_data(ws, tmp_path):
    cfg = small_cfg(ws.home)
    synthesize(cfg, ws)
    repo = DataRepo(ws)
    v1 = repo.version("embedded")
    assert VERSION_RE.match(v1["data_version"])
    assert v1["committed"] is True and v1["pushed"] > 0
    assert v1["dataset_dir"] == str(ws.dataset_dir("embedded"))
    assert _git(ws.data_repo, "rev-parse", "HEAD") == v1["git_sha"]
    assert _git(ws.data_repo, "status", "--porcelain") == ""
    assert (ws.dvc_remote / "files" / "md5").is_dir()
    n_commits = _git(ws.data_repo, "rev-list", "--count", "HEAD")

    t0 = time.perf_counter()
    v2 = DataRepo(ws).version("embedded")
    assert time.perf_counter() - t0 < 3.0
    assert v2["data_version"] == v1["data_version"] and v2["committed"] is False
    assert v2["git_sha"] == v1["git_sha"] and v2["pushed"] == 0
    assert _git(ws.data_repo, "rev-list", "--count", "HEAD") == n_commits

    # the quarantine of a rejected ingest never changes the data version
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    (bad / "a.txt").write_text("x")
    with pytest.raises(UserError):
        ingest(bad, cfg, ws)
    assert DataRepo(ws).version("embedded")["data_version"] == v1["data_version"]
    assert _git(ws.data_repo, "status", "--porcelain") == ""

    # new data -> new version, new commit
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        (good / f"n{i}.jpg").write_bytes(jpeg_bytes())
        (good / f"n{i}.txt").write_text(f"new caption {i}")
    ingest(good, cfg, ws)
    v3 = DataRepo(ws).version("embedded")
    assert v3["committed"] and v3["data_version"] != v1["data_version"] and v3["git_sha"] != v1["git_sha"]
    assert VERSION_RE.match(v3["data_version"])
    assert "embedded.dvc" in _git(ws.data_repo, "show", "--stat", "--oneline", "HEAD")


def test_push_then_pull_restores_in_fresh_clone_and_fresh_home(ws, tmp_path):
    cfg = small_cfg(ws.home)
    synthesize(cfg, ws)
    v1 = DataRepo(ws).version("embedded")
    files_v1 = tree_digest(ws.dataset_dir("embedded"))

    # 1. a fresh clone of the data repo (no cache, no dataset files), same remote
    ws2 = Workspace(tmp_path / "clone-home")
    ws2.home.mkdir()
    subprocess.run(["git", "clone", "-q", str(ws.data_repo), str(ws2.data_repo)], check=True)
    assert not ws2.dataset_dir("embedded").exists()
    r = DataRepo(ws2, remote_url=str(ws.dvc_remote)).pull("embedded")
    assert r["data_version"] == v1["data_version"] and r["fetched"] > 0
    assert tree_digest(ws2.dataset_dir("embedded")) == files_v1

    # a later version, then restore v1 by its version string in a bare home (pod case)
    cfg.data.n_train = 30
    synthesize(cfg, ws)
    v2 = DataRepo(ws).version("embedded")
    assert v2["data_version"] != v1["data_version"]
    ws3 = Workspace(tmp_path / "bare-home")
    r3 = DataRepo(ws3, remote_url=str(ws.dvc_remote)).pull("embedded", data_version=v1["data_version"])
    assert r3["data_version"] == v1["data_version"]
    assert tree_digest(ws3.dataset_dir("embedded")) == files_v1

    # 2. the dataset deleted locally: pull restores the current version from the remote
    shutil.rmtree(ws.dataset_dir("embedded"))
    shutil.rmtree(ws.data_repo / ".dvc" / "cache")
    DataRepo(ws).pull("embedded")
    assert DataRepo(ws).version("embedded")["data_version"] == v2["data_version"]


def test_prepare_synthesizes_once_then_only_versions(ws):
    cfg = small_cfg(ws.home)
    r1 = prepare(cfg, ws)
    r2 = prepare(cfg, ws)
    assert r1["generated"] and not r2["generated"]
    assert r1["data_version"] == r2["data_version"] and r1["committed"] and not r2["committed"]
    assert r2["splits"] == {"train": 48, "val": 12, "test": 24}


def test_version_of_missing_dataset_is_a_user_error(ws):
    cfg = small_cfg(ws.home, source="path", name="nothing")
    with pytest.raises(UserError, match="does not exist yet"):
        prepare(cfg, ws)
    with pytest.raises(UserError, match="no dataset 'nothing'"):
        DataRepo(ws).version("nothing")
