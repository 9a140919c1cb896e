"""`data add s3://bucket/shards/{00000..00003}.tar` from moto's S3 server on 127.0.0.1,
through storage.endpoint_url, with credentials only in the environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))

from s3_helpers import bucket, s3_env, s3_server  # noqa: E402,F401 - pytest fixtures

from litops.core.component_cli import UserError  # noqa: E402
from litops.core.workspace import Workspace  # noqa: E402
from litops.data import ingest, shards  # noqa: E402

from data_helpers import jpeg_bytes, make_tar, small_cfg, truncated_jpeg  # noqa: E402

N_SHARDS, PER_SHARD = 4, 6


def _upload_shards(tmp_path: Path, s3_env: dict, bucket: str) -> dict[str, bytes]:
    """img2dataset-named shards in the bucket; returns every good sample's caption by key."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    captions = {}
    for i in range(N_SHARDS):
        members = []
        for j in range(PER_SHARD):
            key = f"{i:05d}{j:04d}"
            captions[key] = f"sample {j} of shard {i}".encode()
            members += [(f"{key}.jpg", jpeg_bytes((40 * i, 30 * j, 9))), (f"{key}.txt", captions[key])]
        members += [(f"bad{i}.jpg", truncated_jpeg()), (f"bad{i}.txt", b"a cut image")]
        path = make_tar(tmp_path / f"{i:05d}.tar", members)
        client.upload_file(str(path), bucket, f"laion/{i:05d}.tar")
    client.put_object(Bucket=bucket, Key="laion/notes.md", Body=b"not a shard")
    return captions


def _cfg(home: Path, s3_env: dict, bucket: str):
    cfg = small_cfg(home, name="mine", source="path", shard_size=5, max_bad_fraction=0.5, workers=2)
    cfg.storage.kind, cfg.storage.bucket, cfg.storage.endpoint_url = "s3", bucket, s3_env["AWS_ENDPOINT_URL"]
    return cfg


def _dataset_captions(ws: Workspace) -> dict[str, bytes]:
    return {s["__key__"]: s["txt"] for split in shards.SPLITS
            for p in shards.shard_paths(ws.dataset_dir("mine"), split) for s in shards.read_samples(p)}


def test_brace_expanded_s3_shards_arrive_whole(tmp_path, s3_env, bucket, monkeypatch):
    captions = _upload_shards(tmp_path / "made", s3_env, bucket)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint comes from the config
    ws = Workspace(tmp_path / "home")
    r = ingest(f"s3://{bucket}/laion/{{00000..00003}}.tar", _cfg(ws.home, s3_env, bucket), ws, quiet=True)
    assert r["good"] == N_SHARDS * PER_SHARD and r["by_reason"] == {"image_undecodable": N_SHARDS}
    assert _dataset_captions(ws) == captions


def test_an_s3_prefix_ingests_every_tar_under_it_and_matches_the_brace_list(tmp_path, s3_env, bucket):
    _upload_shards(tmp_path / "made", s3_env, bucket)
    ws = Workspace(tmp_path / "home")
    listed = ingest(f"s3://{bucket}/laion/", _cfg(ws.home, s3_env, bucket), ws, quiet=True)
    assert listed["good"] == N_SHARDS * PER_SHARD
    again = ingest(f"s3://{bucket}/laion/{{00000..00003}}.tar", _cfg(ws.home, s3_env, bucket), ws, quiet=True)
    assert again["already_ingested"] and again["ingest_id"] == listed["ingest_id"]


def test_a_missing_s3_shard_is_a_one_line_error(tmp_path, s3_env, bucket):
    _upload_shards(tmp_path / "made", s3_env, bucket)
    ws = Workspace(tmp_path / "home")
    with pytest.raises(UserError, match="1 of 5 shards are missing") as e:
        ingest(f"s3://{bucket}/laion/{{00000..00004}}.tar", _cfg(ws.home, s3_env, bucket), ws, quiet=True)
    assert "\n" not in str(e.value) and not ws.dataset_dir("mine").exists()


def test_litops_data_add_takes_an_s3_brace_list_on_the_command_line(tmp_path, s3_env, bucket):
    import os
    import subprocess

    captions = _upload_shards(tmp_path / "made", s3_env, bucket)
    env = {**os.environ, "LITOPS_HOME": str(tmp_path / "home")}
    env.pop("AWS_ENDPOINT_URL")  # the endpoint comes from the config, as in production
    out = subprocess.run([str(Path(sys.executable).with_name("litops")), "data", "add",
                          f"s3://{bucket}/laion/{{00000..00003}}.tar", "data.name=mine", "data.source=path",
                          "data.max_bad_fraction=0.5", "storage=s3", f"storage.bucket={bucket}",
                          f"storage.endpoint_url={s3_env['AWS_ENDPOINT_URL']}"],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert _dataset_captions(Workspace(tmp_path / "home")) == captions
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in out.stdout + out.stderr
