"""S3 faults survived: ingestion, training and checkpoint mirroring through a store that fails 5% of requests.

Stand-ins: moto's S3 server on 127.0.0.1 is the store; between it and litops sits a proxy
(faulty_s3.py) that answers a seeded 5% of requests with a 503 (an S3 XML error body), a reset
connection, or a reset after half the body. litops retries through botocore's retry handler,
boto3's transfer manager and s3fs (litops.core.s3_retries). The trainer runs as a real subprocess
with its reader processes; `data add` and the checkpoint restore run in this process. The test's
own uploads and checks go to moto directly, past the proxy.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import pytest

from faulty_s3 import faulty_s3, faulty_s3_server  # noqa: F401 - pytest fixtures
from s3_helpers import ACCESS_KEY, SECRET_KEY, tiny_config
from test_s3_in_place import GOOD, config, shard_bytes

pytestmark = pytest.mark.timeout(300)

RATE = 0.05
BUCKET = "litops-faults"
SHARDS, PER_SHARD, BATCH = 4, 24, 16
SEED = 829  # under it every phase below meets faults, of every kind in training (asserted)


class Phase:
    """Prints the proxy's figures (requests, faults, retries) of one phase, with its wall and CPU seconds
    (this process and its children)."""

    def __init__(self, name: str, proxy):
        self.name, self.proxy = name, proxy

    def __enter__(self) -> "Phase":
        self.before, self.t0, self.cpu0 = self.proxy.figures(), time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc) -> None:
        after, wall, cpu = self.proxy.figures(), time.perf_counter() - self.t0, self._cpu() - self.cpu0
        print(json.dumps({"phase": self.name, **{k: after[k] - self.before[k] for k in after},
                          "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}))

    @staticmethod
    def _cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.fixture(scope="module")
def dataset(s3_server):
    """s3://litops-faults/ds: img2dataset shards in train/, indexed in place (manifest and .idx beside
    them), and src/: the same layout with two bad samples in one shard, for `data add`."""
    from litops.core.shard_index import StorageOptions
    from litops.data.indexing import index_source

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                      aws_secret_access_key=SECRET_KEY)
    s3.create_bucket(Bucket=BUCKET)
    for j in range(SHARDS):
        s3.put_object(Bucket=BUCKET, Key=f"ds/train/{j:05d}.tar", Body=shard_bytes(100 * j, PER_SHARD))
        s3.put_object(Bucket=BUCKET, Key=f"src/{j:05d}.tar", Body=shard_bytes(100 * j, GOOD, hostile=j == 1))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        index_source(f"s3://{BUCKET}/ds", StorageOptions(s3_server))
    return {"train": f"s3://{BUCKET}/ds", "src": f"s3://{BUCKET}/src",
            "good_keys": {f"{100 * j + i:09d}" for j in range(SHARDS) for i in range(GOOD)}}


# ---------------------------------------------------------------------------- data add


def dataset_keys(dataset_dir: Path) -> set[str]:
    keys = set()
    for shard in dataset_dir.rglob("*.tar"):
        with tarfile.open(shard) as tf:
            keys |= {m.name.rsplit("/", 1)[-1].split(".", 1)[0] for m in tf if m.name.endswith(".txt")}
    return keys


def test_data_add_ingests_every_good_sample_through_faults(faulty_s3, dataset, tmp_path):
    from litops.data.api import add_and_version, add_in_place_and_version

    cfg = config(tmp_path / "home", "copied")
    cfg.data.workers = 1  # in this process: every request of the ingest passes the proxy's counts
    faulty_s3.fail(RATE, SEED)
    with Phase("data add", faulty_s3):
        copied = add_and_version(dataset["src"], cfg)
    assert faulty_s3.figures()["faults"] > 0, "no fault hit `data add`: choose another seed"
    assert copied["good"] == len(dataset["good_keys"]) and copied["bad"] == 2
    assert dataset_keys(Path(copied["dataset_dir"])) == dataset["good_keys"]

    faulty_s3.fail(RATE, SEED)
    with Phase("data add --in-place", faulty_s3):
        in_place = add_in_place_and_version(dataset["src"], config(tmp_path / "home", "in-place"))
    assert faulty_s3.figures()["faults"] > 0, "no fault hit `data add --in-place`: choose another seed"
    assert in_place["good"] == len(dataset["good_keys"]) and in_place["by_reason"] == copied["by_reason"]


# ---------------------------------------------------------------------------- training and its checkpoint mirror


def start_training(tmp: Path, name: str, endpoint: str, data: str, mirror: bool = True,
                   **storage) -> subprocess.Popen:
    """One epoch of the trainer with 2 reader processes, S3 at `endpoint`; checkpoints mirrored to the bucket."""
    path = tiny_config(tmp / f"{name}.json", steps=SHARDS * PER_SHARD // BATCH, bucket=BUCKET if mirror else "",
                       endpoint=endpoint)
    spec = json.loads(path.read_text())
    spec["train"]["batch_size"], spec["train"]["checkpoint_every"] = BATCH, 2
    spec["data"]["workers"], spec["data"]["cache_dir"] = 2, str(tmp / f"cache-{name}")
    spec["storage"].update(endpoint_url=endpoint, **storage)
    spec["home"] = str(tmp / "home")
    path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LITOPS_PROGRESS": "lines",
           "LITOPS_RECORD_BATCH_KEYS": str(tmp / f"keys-{name}")}
    cmd = [sys.executable, "-m", "litops.train", "--config", str(path), "--dataset-dir", data,
           "--checkpoint-dir", str(tmp / f"ckpt-{name}")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)


def finished(trainer: subprocess.Popen) -> tuple[int, str]:
    """(exit code, stderr) of a trainer; killed after 4 minutes."""
    try:
        _, err = trainer.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        trainer.kill()
        _, err = trainer.communicate()
    return trainer.returncode, err


def batch_keys(tmp: Path, name: str) -> list[list[str]]:
    lines = (tmp / f"keys-{name}" / "keys-rank0.jsonl").read_text().splitlines()
    return [json.loads(line)["keys"] for line in lines]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_epoch_streams_the_same_batches_and_its_checkpoint_restores_through_faults(faulty_s3, s3_env, dataset,
                                                                                     tmp_path):
    from litops.core.checkpoint import latest_checkpoint
    from litops.train.remote_checkpoints import S3CheckpointMirror

    # the run without faults goes to moto itself, at the same time
    clean = start_training(tmp_path, "clean", s3_env["AWS_ENDPOINT_URL"], dataset["train"], mirror=False)
    faulty_s3.fail(RATE, SEED)
    with Phase("train through faults, checkpoints mirrored", faulty_s3):
        faulty = finished(start_training(tmp_path, "faulty", faulty_s3.url, dataset["train"]))
    clean = finished(clean)
    assert faulty[0] == 0, faulty[1][-3000:]
    assert clean[0] == 0, clean[1][-3000:]
    figures = faulty_s3.figures()
    assert faulty_s3.figures(f"/{BUCKET}/ds/")["faults"] > 0, "no fault hit the shards: choose another seed"
    assert figures["retries"] > 0 and all(figures[f"faults_{k}"] > 0 for k in ("503", "reset", "cut")), figures
    clean_keys, faulty_keys = batch_keys(tmp_path, "clean"), batch_keys(tmp_path, "faulty")
    assert len(faulty_keys) == SHARDS * PER_SHARD // BATCH
    assert faulty_keys == clean_keys
    assert sorted(k for batch in faulty_keys for k in batch) == sorted(
        f"{100 * j + i:09d}" for j in range(SHARDS) for i in range(PER_SHARD))  # one epoch: every sample once

    local = latest_checkpoint(tmp_path / "ckpt-faulty")
    with Phase("checkpoint restored through faults", faulty_s3):
        restored = S3CheckpointMirror(f"s3://{BUCKET}/litops/checkpoints/ckpt-faulty", faulty_s3.url).pull(
            tmp_path / "restored")
    assert faulty_s3.figures(f"/{BUCKET}/litops/checkpoints/")["faults"] > 0, \
        "no fault hit the checkpoint mirror: choose another seed"
    assert restored is not None and restored.name == local.name
    assert sha256(restored) == sha256(local)


# ---------------------------------------------------------------------------- a fault that persists


def test_a_persistent_fault_fails_with_one_line_naming_the_object(faulty_s3, dataset, tmp_path):
    """Every request for one object fails; 2 attempts a request keep the wait short."""
    from litops.core.s3_retries import S3Retries, S3Unavailable
    from litops.core.step_errors import EXIT_UNAVAILABLE
    from litops.data.api import add_and_version
    from litops.train.remote_checkpoints import S3CheckpointMirror

    shard = f"{dataset['train']}/train/00001.tar"
    faulty_s3.fail_always(shard[len("s3:/"):])
    with Phase("train, one shard always failing", faulty_s3):
        code, err = finished(start_training(tmp_path, "broken", faulty_s3.url, dataset["train"], mirror=False,
                                            max_attempts=2))
    assert code == EXIT_UNAVAILABLE, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(f"litops train: error: {shard} is unavailable: "), err[-3000:]
    assert "Traceback" not in err, err[-3000:]

    source = f"{dataset['src']}/00002.tar"
    faulty_s3.fail_always(source[len("s3:/"):])
    cfg = config(tmp_path / "home", "copied")
    cfg.data.workers, cfg.storage.max_attempts = 1, 2
    with pytest.raises(S3Unavailable) as err:
        add_and_version(dataset["src"], cfg)
    assert str(err.value).startswith(f"{source} is unavailable: ") and "\n" not in str(err.value)

    checkpoint = tmp_path / "step-00000001.pt"
    checkpoint.write_bytes(b"weights")
    uri = f"s3://{BUCKET}/litops/checkpoints/persistent"
    faulty_s3.fail_always(f"/{BUCKET}/litops/checkpoints/persistent/{checkpoint.name}")
    with pytest.raises(S3Unavailable) as err:
        S3CheckpointMirror(uri, faulty_s3.url, retries=S3Retries(max_attempts=2)).push(checkpoint)
    assert str(err.value).startswith(f"{uri}/{checkpoint.name} is unavailable: ") and "\n" not in str(err.value)
