"""Bytes downloaded from S3 per epoch and before step 0, counted by the server, not by litops.

The stand-in for S3 is moto's S3 app on 127.0.0.1 behind a WSGI middleware that adds up the body
bytes of every GET (counting_s3.py). The dataset is 8 img2dataset shards indexed in place
(`litops data index`); the trainer (`python -m litops.train`, real gloo ranks under torchrun)
streams one epoch of it through the node-local shard cache.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from counting_s3 import counting_s3, counting_s3_server  # noqa: F401 - pytest fixtures
from s3_helpers import tiny_config
from tests.train.test_exact_resume import sharded_dataset

pytestmark = pytest.mark.timeout(420)

SHARDS, PER_SHARD, BATCH = 8, 96, 64
BUCKET, PREFIX = "litops-egress", "datasets/egress"
MAX_EPOCH_RATIO, MAX_STARTUP_SHARE = 1.05, 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dataset(counting_s3_server, tmp_path_factory) -> dict:
    """8 shards uploaded to the bucket and indexed where they are; returns their URL and sizes."""
    local = sharded_dataset(tmp_path_factory.mktemp("egress") / "made", shards=SHARDS, per_shard=PER_SHARD)
    client = counting_s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    sizes = 0
    for shard in sorted((local / "train").glob("*.tar")):
        client.upload_file(str(shard), BUCKET, f"{PREFIX}/train/{shard.name}")
        sizes += shard.stat().st_size
    url = f"s3://{BUCKET}/{PREFIX}"
    env = {**os.environ, **counting_s3_server.env(), "LITOPS_PROGRESS": "lines"}
    out = subprocess.run([sys.executable, "-m", "litops.data", "index", url], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/manifest.json")["Body"].read()
    return {"url": url, "bytes": sizes, "manifest_bytes": len(manifest)}


def config(tmp: Path, name: str, steps: int, cache_dir: Path, endpoint: str) -> Path:
    path = tiny_config(tmp / f"{name}.json", steps=steps)
    spec = json.loads(path.read_text())
    spec["train"]["batch_size"], spec["train"]["checkpoint_every"] = BATCH, 1000
    spec["data"]["workers"], spec["data"]["cache_dir"] = 2, str(cache_dir)
    spec["storage"]["endpoint_url"] = endpoint
    spec["home"] = str(tmp / "home")
    path.write_text(json.dumps(spec))
    return path


def train(tmp: Path, name: str, s3, data: dict, steps: int, nodes: list[Path], ranks_per_node: int = 1):
    """One trainer per "node" (a torchrun agent with its own cache folder), all in one rendezvous."""
    env = {**os.environ, **s3.env(), "OMP_NUM_THREADS": "1", "LITOPS_PROGRESS": "lines"}
    world = len(nodes) * ranks_per_node
    port, procs = free_port(), []
    for node, cache in enumerate(nodes):
        train_args = ["-m", "litops.train", "--config", str(config(tmp, f"{name}-{node}", steps, cache, s3.url)),
                      "--dataset-dir", data["url"], "--checkpoint-dir", str(tmp / f"ckpt-{name}")]
        launcher = [] if world == 1 else [
            "-m", "torch.distributed.run", f"--nnodes={len(nodes)}", f"--node-rank={node}",
            f"--nproc-per-node={ranks_per_node}", "--master-addr=127.0.0.1", f"--master-port={port}",
            "--max-restarts=0"]
        procs.append(subprocess.Popen([sys.executable, *launcher, *train_args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=tmp))
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def epoch_steps() -> int:
    from litops.core.sample_order import SampleOrder

    order = SampleOrder([PER_SHARD] * SHARDS, BATCH)
    return order.samples_per_epoch // BATCH


def shard_bytes(s3) -> int:
    return s3.get_bytes(f"/{BUCKET}/{PREFIX}/train/")


@pytest.mark.parametrize("shape", ["1 rank x 2 readers", "2 ranks x 2 readers, a cache per node",
                                   "2 ranks x 2 readers, one shared cache"])
def test_one_epoch_downloads_each_shard_once(shape, tmp_path, counting_s3, dataset):
    if shape.startswith("1 rank"):
        train(tmp_path, "one", counting_s3, dataset, epoch_steps(), [tmp_path / "cache"])
    elif "per node" in shape:
        train(tmp_path, "nodes", counting_s3, dataset, epoch_steps(), [tmp_path / "cache-a", tmp_path / "cache-b"])
    else:
        train(tmp_path, "shared", counting_s3, dataset, epoch_steps(), [tmp_path / "cache"], ranks_per_node=2)
    ratio = shard_bytes(counting_s3) / dataset["bytes"]
    manifest = counting_s3.get_bytes(f"/{BUCKET}/{PREFIX}/manifest.json")
    print(json.dumps({"shape": shape, "epoch_bytes_over_dataset": round(ratio, 4), "manifest_bytes": manifest,
                      "dataset_bytes": dataset["bytes"]}))
    assert ratio <= MAX_EPOCH_RATIO, f"{shape}: one epoch downloaded {ratio:.2f}x the dataset"
    assert ratio >= 0.9  # the epoch really read (nearly) every shard
    assert manifest <= 4 * dataset["manifest_bytes"]  # the manifest once per rank at most


def test_start_up_reads_the_manifest_not_the_shards(tmp_path, counting_s3, dataset):
    train(tmp_path, "startup", counting_s3, dataset, 0, [tmp_path / "cache"])
    everything = counting_s3.get_bytes(f"/{BUCKET}/")
    print(json.dumps({"startup_bytes": everything, "dataset_bytes": dataset["bytes"],
                      "share": round(everything / dataset["bytes"], 5)}))
    assert everything <= MAX_STARTUP_SHARE * dataset["bytes"]
