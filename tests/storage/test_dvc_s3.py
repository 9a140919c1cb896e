"""DVC push and pull against an S3 remote with `endpointurl` (storage=s3's DVC remote).

Stand-in: moto's S3 server on 127.0.0.1 speaks the S3 REST protocol that DVC's s3 filesystem
(s3fs/aiobotocore) uses against MinIO or AWS; credentials only from the environment.
"""

from __future__ import annotations

import shutil
import subprocess

import boto3
import pytest

from litops.core.config import LitopsConfig
from litops.core.storage import dvc_remote

pytestmark = pytest.mark.timeout(120)


def test_dvc_push_and_pull_through_s3(tmp_path, s3_env, bucket, monkeypatch):
    from dvc.config import Config
    from dvc.repo import Repo

    cfg = LitopsConfig()
    cfg.storage.kind, cfg.storage.bucket, cfg.storage.prefix = "s3", bucket, "litops"
    cfg.storage.endpoint_url = s3_env["AWS_ENDPOINT_URL"]
    remote = dvc_remote(cfg, str(tmp_path / "unused"))
    assert remote == {"url": f"s3://{bucket}/litops/dvc", "region": "us-east-1", "endpointurl": s3_env["AWS_ENDPOINT_URL"]}

    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    Repo.init(str(root)).close()
    conf = Config(dvc_dir=str(root / ".dvc"), validate=False)
    with conf.edit("repo") as c:
        c["core"]["remote"] = "litops"
        c["remote"]["litops"] = remote
    text = (root / ".dvc" / "config").read_text()
    assert "endpointurl" in text and s3_env["AWS_SECRET_ACCESS_KEY"] not in text  # no credential in the repo config

    data = root / "datasets" / "tiny"
    (data / "train").mkdir(parents=True)
    for i in range(3):
        (data / "train" / f"shard-{i}.tar").write_bytes(bytes([i]) * 1000)
    with Repo(str(root)) as repo:
        repo.add(str(data))
        assert repo.push() == 4  # 3 files + the .dir manifest
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 4 and all(k.startswith("litops/dvc/files/md5/") for k in keys)

    shutil.rmtree(data)
    shutil.rmtree(root / ".dvc" / "cache")
    with Repo(str(root)) as repo:
        stats = repo.pull()
    assert stats["stats"]["fetched"] == 4
    assert sorted(p.name for p in (data / "train").iterdir()) == ["shard-0.tar", "shard-1.tar", "shard-2.tar"]
    assert (data / "train" / "shard-2.tar").read_bytes() == bytes([2]) * 1000


def test_storage_s3_config_versions_the_dataset_into_the_bucket(tmp_path, s3_env, bucket):
    """`storage=s3` reaches the data component: `data version` pushes to S3 and a bare home pulls it back."""
    from litops.core.workspace import Workspace
    from litops.data.api import prepare, pull
    from litops.flows.config import load_config

    cfg = load_config(["storage=s3", f"storage.bucket={bucket}", "storage.prefix=prod",
                       f"storage.endpoint_url={s3_env['AWS_ENDPOINT_URL']}",
                       "data.n_train=40", "data.n_val=10", "data.n_test=10", "data.image_size=32"])
    first = prepare(cfg, Workspace(tmp_path / "home-a"))
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("prod/dvc/files/md5/") for k in keys)
    assert not (tmp_path / "home-a" / "dvc-remote").exists(), "nothing goes to the local remote"

    # A pod's bare home shares only the bucket (and the data repo's git history, cloned here).
    home_b = tmp_path / "home-b"
    home_b.mkdir()
    subprocess.run(["git", "clone", "-q", str(tmp_path / "home-a" / "data"), str(home_b / "data")], check=True)
    restored = pull(cfg, Workspace(home_b))
    assert restored["data_version"] == first["data_version"]
    src, dst = Workspace(tmp_path / "home-a").dataset_dir("embedded"), Workspace(home_b).dataset_dir("embedded")
    assert sorted(p.name for p in (dst / "train").iterdir()) == sorted(p.name for p in (src / "train").iterdir())
    assert (dst / "train" / "shard-000000.tar").read_bytes() == (src / "train" / "shard-000000.tar").read_bytes()
