"""The DVC remote lives in the data repo's committed config: a plain `git clone` can `dvc pull`."""

from __future__ import annotations

import subprocess

from dvc.config import Config
from dvc.repo import Repo

from litops.data import DataRepo, synthesize

from data_helpers import small_cfg, tree_digest


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _configs(root):
    cfg = Config(dvc_dir=str(root / ".dvc"), validate=False)
    return cfg.load_one("repo"), cfg.load_one("local")


def test_a_git_clone_pulls_the_same_files(ws, tmp_path):
    synthesize(small_cfg(ws.home), ws)
    DataRepo(ws).version("embedded")
    files = tree_digest(ws.dataset_dir("embedded"))

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws.data_repo), str(clone)], check=True)
    assert not (clone / ".dvc" / "config.local").exists()
    with Repo(str(clone)) as repo:
        repo.pull()
    assert tree_digest(clone / "datasets" / "embedded") == files


def test_an_old_local_remote_moves_into_the_committed_config(ws, tmp_path):
    repo = DataRepo(ws).ensure()
    with Config(dvc_dir=str(ws.data_repo / ".dvc"), validate=False).edit("local") as conf:
        conf["core"]["remote"] = "litops"
        conf["remote"]["litops"] = {"url": str(tmp_path / "stale-remote")}
    head = _git(ws.data_repo, "rev-parse", "HEAD")
    repo.ensure()
    committed, local = _configs(ws.data_repo)
    assert committed["remote"]["litops"] == {"url": str(ws.dvc_remote)}
    assert not local["remote"] and "remote" not in local["core"]
    assert "stale-remote" not in (ws.data_repo / ".dvc" / "config.local").read_text()
    assert local["core"]["site_cache_dir"] == repo.site_cache_dir
    assert _git(ws.data_repo, "rev-parse", "HEAD") == head, "the committed config did not change"
    assert _git(ws.data_repo, "status", "--porcelain") == ""


def test_s3_options_are_committed_but_credentials_are_not(ws, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-not-for-git")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-not-for-git")
    options = {"endpointurl": "http://127.0.0.1:9", "region": "eu-west-1"}
    DataRepo(ws, remote_url="s3://bucket/litops/dvc", remote_options=options).ensure()
    committed = _git(ws.data_repo, "show", "HEAD:.dvc/config")
    assert _configs(ws.data_repo)[0]["remote"]["litops"] == {"url": "s3://bucket/litops/dvc", **options}
    assert "not-for-git" not in committed
    for path in (ws.data_repo / ".dvc").glob("config*"):
        assert "not-for-git" not in path.read_text()
