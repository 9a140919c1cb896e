"""Checkpoints mirrored to S3 and resumed from there by a process on a fresh disk.

Stand-in: moto's S3 server on 127.0.0.1 (the S3 REST protocol over HTTP, reached through an
endpoint URL exactly as MinIO is in the cluster); the trainer runs as a real subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest

from s3_helpers import tiny_config, tiny_dataset

pytestmark = pytest.mark.timeout(120)


def run_train(args, env, tmpdir):
    e = {**os.environ, **env, "TMPDIR": str(tmpdir)}
    tmpdir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-m", "litops.train", *args], capture_output=True, text=True, env=e, timeout=100)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1].split(" ", 1)[1])
    return result, out.stderr


def test_storage_s3_config_mirrors_the_flow_checkpoint_dir(tmp_path, s3_env, bucket):
    """The flow passes a local --checkpoint-dir (on the home volume); with storage.kind=s3 the trainer
    mirrors it to s3://<bucket>/<prefix>/checkpoints/<folder>; a pod that has lost the folder resumes."""
    data = tiny_dataset(tmp_path / "tiny")
    cfg = tiny_config(tmp_path / "c.json", 2, bucket=bucket, endpoint=s3_env["AWS_ENDPOINT_URL"])
    ckpt = tmp_path / "home" / "checkpoints" / "hash-dv"
    run_train(["--config", str(cfg), "--dataset-dir", str(data), "--checkpoint-dir", str(ckpt)], {}, tmp_path / "t1")
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"litops/checkpoints/hash-dv/step-00000002.pt", "litops/checkpoints/hash-dv/model.pt"} <= keys
    # a replacement pod on another node: the same mirror, nothing local
    cfg4 = tiny_config(tmp_path / "c4.json", 4)
    result, log = run_train(["--config", str(cfg4), "--dataset-dir", str(data), "--checkpoint-dir",
                             f"s3://{bucket}/litops/checkpoints/hash-dv"], s3_env, tmp_path / "t2")
    assert result["resumed_from"] == 2 and "fetched step-00000002.pt" in log
