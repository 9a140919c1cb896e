"""The locked tower's feature cache of a dataset that stays in S3 lives in the same bucket, beside
it, and readers stream those files through the node's shard cache. S3 is moto's server on
127.0.0.1 (the real S3 REST protocol), a stand-in for a bucket."""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import torch

from litops.core.model import LiTModel
from litops.core.stream import CacheSpec, SplitStream
from litops.train import feature_cache as fc
from tests.lit.test_lit_feature_cache import PER_SHARD, add_shard, lit_config, tower_weights  # noqa: F401 - fixture

CPU = torch.device("cpu")


def upload_dataset(tmp_path: Path, s3, bucket: str) -> str:
    local = tmp_path / "made"
    for j in range(4):
        add_shard(local, j)
    for tar in sorted((local / "train").glob("*.tar")):
        s3.upload_file(str(tar), bucket, f"corpora/tiny/train/{tar.name}")
    return f"s3://{bucket}/corpora/tiny"


def stored_features(s3, url: str) -> dict:
    bucket, _, key = url[len("s3://"):].partition("/")
    return torch.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), weights_only=True)


def test_features_of_a_bucket_dataset_are_written_beside_it_and_streamed(bucket, s3_env, tmp_path, tower_weights):
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    dataset = upload_dataset(tmp_path, s3, bucket)
    cfg = lit_config(tower_weights)
    cfg.home = str(tmp_path / "home")
    Path(cfg.home).mkdir()
    model = LiTModel(cfg.model, cfg.data.image_size)
    open_split = lambda: SplitStream.open(dataset, "train", cache=CacheSpec(str(tmp_path / "node-cache")))  # noqa: E731

    built = fc.prepare(cfg, model, dataset, open_split(), CPU, data_version="v1")
    assert (built.status, built.encoded) == ("built", 4)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="corpora/features/tiny/")["Contents"]
    names = sorted(o["Key"].rsplit("/", 1)[-1] for o in listed)
    assert len([n for n in names if n.endswith(".pt")]) == 4 and len([n for n in names if n.endswith(".json")]) == 4
    assert all(r.url.startswith(f"s3://{bucket}/corpora/features/tiny/") and r.size > 0 and r.etag
               for r in built.feature_files)
    about = json.loads(s3.get_object(Bucket=bucket, Key=listed[0]["Key"].replace(".pt", ".json"))["Body"].read())
    assert about["samples"] == PER_SHARD and about["data_version"] == "v1"
    assert not (Path(cfg.home) / "feature-cache").exists() and not list(tmp_path.rglob("features/tiny/*.pt")), \
        "no copy of the cache beside a local home or data repo"

    again = fc.prepare(cfg, model, dataset, open_split(), CPU)
    assert (again.status, again.encoded, again.reused) == ("hit", 0, 4)

    batch = open_split().source(None, again.feature_files).batch(0, [(2, 1), (0, 3)])
    stored = [stored_features(s3, again.feature_files[j].url) for j in (2, 0)]
    assert batch.keys == ["s02-01", "s00-03"] and batch.images is None
    assert torch.equal(batch.features, torch.stack([stored[0]["features"][1], stored[1]["features"][3]]))
    fetched = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "node-cache" / "shards").iterdir())
    assert len([n for n in fetched if n.endswith(".pt")]) == 2, f"the two feature files came through the node cache: {fetched}"
