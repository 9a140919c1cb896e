"""Training streams its shards straight from S3 (moto's S3 server on 127.0.0.1, the real S3 REST
protocol): 20 steps, endpoint from the config, credentials only in the environment, and no shard
on disk outside the node-local cache, which stays within its bound."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from litops.core.step_results import parse_result
from s3_helpers import SECRET_KEY, tiny_config
from tests.train.test_exact_resume import sharded_dataset


def test_twenty_steps_streamed_from_s3_through_a_bounded_cache(tmp_path, s3_env, bucket):
    import boto3

    local = sharded_dataset(tmp_path / "made", shards=3, per_shard=16)
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    for shard in sorted((local / "train").glob("*.tar")):
        client.upload_file(str(shard), bucket, f"datasets/tiny/train/{shard.name}")
    shutil.rmtree(local)

    cfg = tiny_config(tmp_path / "cfg.json", steps=20, bucket=bucket, endpoint=s3_env["AWS_ENDPOINT_URL"])
    spec = json.loads(cfg.read_text())
    largest = max(o["Size"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    spec["data"]["workers"], spec["data"]["cache_dir"] = 2, str(tmp_path / "node-cache")
    spec["data"]["cache_limit"] = str(largest)  # one shard: every epoch evicts and fetches again
    cfg.write_text(json.dumps(spec))
    env = {**os.environ, "LITOPS_PROGRESS": "lines"}
    env.pop("AWS_ENDPOINT_URL")  # the endpoint comes from storage.endpoint_url
    env.pop("MLFLOW_S3_ENDPOINT_URL")
    out = subprocess.run([sys.executable, "-m", "litops.train", "--config", str(cfg),
                          "--dataset-dir", f"s3://{bucket}/datasets/tiny", "--checkpoint-dir", str(tmp_path / "ckpt")],
                         capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = parse_result(out.stdout.splitlines())
    assert result.steps == 20 and result.final_loss == result.final_loss  # trained, loss not NaN
    cached = list((tmp_path / "node-cache").rglob("*.tar"))
    assert cached and not [p for p in tmp_path.rglob("*.tar") if p not in cached], "a shard outside the cache"
    assert sum(p.stat().st_size for p in cached) <= 2 * largest  # the bound, plus the shard just fetched
    assert SECRET_KEY not in out.stdout + out.stderr
