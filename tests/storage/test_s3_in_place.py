"""Datasets that stay in S3 (`data add s3://... --in-place`), on moto's S3 at 127.0.0.1.

The bucket holds img2dataset shards (key.jpg, key.txt, key.json with url/caption/width/height) with
two hostile samples; they are excluded by index, never rewritten, and only the manifest is versioned.
A changed object is caught: by the node cache's ETag check when read, by `data checkout` on a HEAD.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from litops.core.component_cli import UserError
from litops.core.config import DataConfig, LitopsConfig

GOOD = 6  # samples per shard before the hostile ones


def jpeg(colour=(200, 40, 40), size=24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="JPEG")
    return buf.getvalue()


def shard_bytes(first: int, n: int, hostile: bool = False) -> bytes:
    """An img2dataset shard; `hostile` adds an empty caption and an undecodable image."""
    members = []

    def sample(key: str, image: bytes, text: str) -> None:
        meta = {"url": f"https://example.com/{key}.jpg", "caption": text, "width": 24, "height": 24, "key": key}
        members.extend([(f"{key}.jpg", image), (f"{key}.json", json.dumps(meta).encode()), (f"{key}.txt", text.encode())])

    for i in range(first, first + n):
        sample(f"{i:09d}", jpeg((i * 37 % 250, 40, 90)), f"a photo of thing {i % 3}")
        if hostile and i == first + 1:
            sample(f"{i:09d}a", jpeg(), "   ")  # caption_empty
            sample(f"{i:09d}b", b"\xff\xd8 not a jpeg", "a broken image")  # image_undecodable
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def s3_client(env):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")


def etags(s3, bucket: str) -> dict[str, str]:
    return {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def config(home: Path, name: str, max_bad: float = 0.3) -> LitopsConfig:
    return LitopsConfig(home=str(home), data=DataConfig(source="path", name=name, max_bad_fraction=max_bad))


@pytest.fixture
def flat_bucket(bucket, s3_env):
    """s3://<bucket>/laion: a flat img2dataset folder of two shards and a stats file."""
    s3 = s3_client(s3_env)
    s3.put_object(Bucket=bucket, Key="laion/00000.tar", Body=shard_bytes(0, GOOD))
    s3.put_object(Bucket=bucket, Key="laion/00000_stats.json", Body=json.dumps({"successes": GOOD}).encode())
    s3.put_object(Bucket=bucket, Key="laion/00001.tar", Body=shard_bytes(100, GOOD, hostile=True))
    return bucket


def test_in_place_add_excludes_hostile_samples_and_rewrites_nothing(flat_bucket, s3_env, tmp_path):
    from litops.core.manifest import read_manifest, read_offsets
    from litops.core.shard_index import StorageOptions, index_members
    from litops.data.api import add_in_place_and_version

    s3, url = s3_client(s3_env), f"s3://{flat_bucket}/laion"
    before = etags(s3, flat_bucket)
    home = tmp_path / "home"
    r = add_in_place_and_version(url, config(home, "laion"))
    assert r["by_reason"] == {"caption_empty": 1, "image_undecodable": 1}
    assert r["total"] == 2 * GOOD + 2 and r["bad"] == 2 and r["excluded"] == 2
    assert r["data_version"].endswith(".dir") and r["committed"]

    after = etags(s3, flat_bucket)
    assert {k: v for k, v in after.items() if not k.endswith(".idx")} == before  # nothing rewritten
    assert {"laion/00000.tar.idx", "laion/00001.tar.idx"} <= set(after)

    dataset_dir = Path(r["dataset_dir"])
    assert sorted(p.name for p in dataset_dir.iterdir()) == ["dataset.json", "manifest.json"]
    assert not list((home / "data").rglob("*.tar"))
    storage = StorageOptions.from_config(config(home, "laion"))
    m = read_manifest(dataset_dir, storage)
    assert m.root == url and m.exclusions_by_reason == r["by_reason"]
    (e0,), = [m.splits["train"][:1]]
    e1 = m.splits["train"][1]
    assert e0.excluded == () and e1.samples == GOOD + 2 and e1.excluded == (2, 3)  # in index_members' order
    assert e1.etag == before["laion/00001.tar"].strip('"')
    body = s3.get_object(Bucket=flat_bucket, Key="laion/00001.tar")["Body"].read()
    members = index_members(io.BytesIO(body))
    assert [members[i].key for i in e1.excluded] == ["000000101a", "000000101b"]
    assert len(read_offsets(m.index_url(e1), storage)) == e1.samples + 1
    assert json.loads((dataset_dir / "dataset.json").read_text())["splits"]["train"] == 2 * GOOD

    files = {p.name: p.read_bytes() for p in dataset_dir.iterdir()}
    again = add_in_place_and_version(url, config(home, "laion"))
    assert again["data_version"] == r["data_version"] and not again["committed"]
    assert {p.name: p.read_bytes() for p in dataset_dir.iterdir()} == files
    assert etags(s3, flat_bucket) == after  # the same .idx bytes are not PUT again


def test_in_place_add_over_the_bad_limit_changes_nothing(flat_bucket, s3_env, tmp_path):
    from litops.data.api import add_in_place_and_version

    s3 = s3_client(s3_env)
    before = etags(s3, flat_bucket)
    with pytest.raises(UserError) as err:
        add_in_place_and_version(f"s3://{flat_bucket}/laion", config(tmp_path / "home", "strict", max_bad=0.05))
    assert "\n" not in str(err.value) and "caption_empty=1" in str(err.value)
    assert etags(s3, flat_bucket) == before
    assert not (tmp_path / "home" / "data" / "datasets" / "strict").exists()


def test_changed_object_is_caught_by_reader_and_checkout(flat_bucket, s3_env, tmp_path):
    from litops.core.shard_cache import ShardChangedError
    from litops.core.shard_index import StorageOptions
    from litops.core.stream import CacheSpec, SplitStream
    from litops.data.api import add_in_place_and_version, checkout

    home, url = tmp_path / "home", f"s3://{flat_bucket}/laion"
    cfg = config(home, "laion")
    r = add_in_place_and_version(url, cfg)
    out = checkout(cfg, r["data_version"])
    assert out["verified_shards"] == 2 and (Path(out["dataset_dir"]) / "manifest.json").is_file()

    # the same size, other bytes: only the ETag tells
    s3 = s3_client(s3_env)
    old = s3.get_object(Bucket=flat_bucket, Key="laion/00000.tar")["Body"].read()
    new = shard_bytes(500, GOOD)
    assert len(new) == len(old)
    s3.put_object(Bucket=flat_bucket, Key="laion/00000.tar", Body=new)

    with pytest.raises(UserError) as err:
        checkout(cfg, r["data_version"])
    assert "\n" not in str(err.value) and "laion/00000.tar" in str(err.value)

    stream = SplitStream.open(r["dataset_dir"], "train", StorageOptions.from_config(cfg),
                              cache=CacheSpec(str(tmp_path / "cache")))
    with pytest.raises(ShardChangedError, match="00000.tar"):
        for _ in stream.one_pass(4, 24):
            pass


def test_plain_add_ignores_manifest_and_index_files(tmp_path):
    from litops.data.sources import plan_units

    src = tmp_path / "src"
    src.mkdir()
    (src / "00000.tar").write_bytes(shard_bytes(0, 2))
    for name in ("manifest.json", "00000.tar.idx", "00000_stats.json"):
        (src / name).write_bytes(b"{}")
    units = plan_units(str(src), LitopsConfig())
    assert [u.kind for u in units] == ["tar"]


RUN = ["data.source=path", "data.name=bucketed", "data.image_size=32", "train.steps=10", "train.batch_size=8",
       "train.checkpoint_every=10", "train.warmup_steps=2", "model.image_width=16", "model.text_width=32",
       "model.text_heads=2", "model.embed_dim=32", "registry.model_name=lit-bucketed", "registry.absolute_floor=0.0",
       # img2dataset captions name no attributes: no zero-shot metric to gate on
       "registry.primary_metric=retrieval_mean_r1", "registry.guard_metrics=[retrieval_i2t_r1,retrieval_t2i_r1]"]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.mark.slow
def test_flow_trains_and_evaluates_straight_from_the_bucket(harness, bucket, s3_env, tmp_path, monkeypatch):
    from litops.flows.config import load_config
    from litops.flows.retrain import retrain
    from litops.data.api import add_in_place_and_version

    s3 = s3_client(s3_env)
    s3.put_object(Bucket=bucket, Key="ds/train/00000.tar", Body=shard_bytes(0, 24))
    s3.put_object(Bucket=bucket, Key="ds/train/00001.tar", Body=shard_bytes(100, 24, hostile=True))
    s3.put_object(Bucket=bucket, Key="ds/val/00000.tar", Body=shard_bytes(900, 12))
    home = tmp_path / "home"
    monkeypatch.setenv("LITOPS_HOME", str(home))
    added = add_in_place_and_version(f"s3://{bucket}/ds", config(home, "bucketed"))
    assert added["by_reason"] == {"caption_empty": 1, "image_undecodable": 1}

    summary = retrain(config=load_config(RUN))
    assert summary["status"] == "promoted", summary
    assert summary["data_version"] == added["data_version"]
    assert "retrieval_mean_r1" in summary["metrics"]
    assert not list((home / "data").rglob("*.tar"))  # the shards never entered the data repo
    assert list((home / "shard-cache").rglob("*")), "the shards went through the node cache"
    features = s3.list_objects_v2(Bucket=bucket, Prefix="features/ds/").get("Contents", [])
    assert len([o for o in features if o["Key"].endswith(".pt")]) == 2, "the locked tower's features sit beside the data"
    assert not list(home.rglob("features/**/*.pt")) and not (home / "feature-cache").exists()

    s3.put_object(Bucket=bucket, Key="ds/train/00000.tar", Body=shard_bytes(500, 24))  # same size, other bytes
    with pytest.raises(Exception) as err:
        retrain(config=load_config(RUN + ["train.steps=12"]))
    assert "ds/train/00000.tar changed since this data version" in str(err.value)


def test_cli_in_place_flag(flat_bucket, s3_env, tmp_path, capsys):
    from litops.core.step_results import parse_result
    from litops.core.config import to_dict
    from litops.data.cli import main
    from litops.flows.cli import parse

    args = parse(["data", "add", f"s3://{flat_bucket}/laion", "--in-place", "data.name=laion"])
    assert args.in_place and args.path == f"s3://{flat_bucket}/laion"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(to_dict(config(tmp_path / "home", "laion"))))
    assert main(["add", f"s3://{flat_bucket}/laion", "--in-place", "--config", str(cfg)]) == 0
    result = parse_result(capsys.readouterr().out.splitlines())
    assert result.details["in_place"] == f"s3://{flat_bucket}/laion" and result.details["excluded"] == 2 and result.committed


def test_plain_add_into_an_in_place_dataset_is_refused(flat_bucket, s3_env, tmp_path):
    from litops.data.api import add_and_version, add_in_place_and_version

    add_in_place_and_version(f"s3://{flat_bucket}/laion", config(tmp_path / "home", "laion"))
    src = tmp_path / "more"
    src.mkdir()
    (src / "00000.tar").write_bytes(shard_bytes(700, 2))
    with pytest.raises(UserError, match="stays in s3://"):
        add_and_version(str(src), config(tmp_path / "home", "laion"))
