"""The node-local shard cache (litops.core.shard_cache) against moto's S3 behind a byte counter:
one download per shard across processes, LRU eviction, changed objects, prefetch, killed downloads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from counting_s3 import counting_s3, counting_s3_server  # noqa: E402,F401 - pytest fixtures

from litops.core.shard_cache import ShardCache, ShardChangedError  # noqa: E402

pytestmark = pytest.mark.timeout(90)

# A reader process: asks for the shards in argv[2] once the parent says go (stdin), prints what it got.
READER = r"""
import json, sys
from pathlib import Path
from litops.core.shard_cache import ShardCache

cache = ShardCache(Path(sys.argv[1]), 0)
items = json.loads(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
paths = [str(cache.local_path(*item)) for item in items]
print(json.dumps({"paths": paths, "downloads": cache.stats.downloads, "hits": cache.stats.hits}), flush=True)
"""


@pytest.fixture
def bucket(counting_s3, request) -> str:
    name = "cache-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:50]
    counting_s3.client().create_bucket(Bucket=name)
    return name


def put(server, bucket: str, key: str, data: bytes) -> tuple[str, int, str, str]:
    """Upload and index a shard: (url, size, etag, version_id) as `litops data index` records them."""
    s3 = server.client()
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    head = s3.head_object(Bucket=bucket, Key=key)
    return f"s3://{bucket}/{key}", head["ContentLength"], head["ETag"], ""


def entries(cache: ShardCache) -> list[str]:
    return sorted(p.name.split("-", 1)[1] for p in cache.shards_dir.iterdir())


def wait_for(predicate, timeout: float = 20.0) -> None:
    t0 = time.time()
    while not predicate():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_counter_sees_each_get_body_once(counting_s3, bucket):
    data = os.urandom(300_000)
    url, size, _, _ = put(counting_s3, bucket, "train/00000.tar", data)
    s3 = counting_s3.client()
    assert s3.get_object(Bucket=bucket, Key="train/00000.tar")["Body"].read() == data
    s3.head_object(Bucket=bucket, Key="train/00000.tar")
    assert counting_s3.get_bytes(f"/{bucket}/train/00000.tar") == size
    assert counting_s3.get_requests("GET", f"/{bucket}/train/00000.tar") == 1
    assert counting_s3.get_requests("HEAD", f"/{bucket}/train/00000.tar") == 2  # put() indexed it too
    counting_s3.reset()
    assert counting_s3.get_bytes() == 0


def test_concurrent_processes_download_each_shard_once(counting_s3, bucket, tmp_path):
    data = {k: os.urandom(400_000 + i) for i, k in enumerate(("train/00000.tar", "train/00001.tar"))}
    items = [put(counting_s3, bucket, k, v) for k, v in data.items()]
    counting_s3.reset()
    counting_s3.counter.delay = 0.3  # the first download is still under way when the others ask
    orders = [items if i % 2 else items[::-1] for i in range(4)]  # half of them ask in the other order
    procs = [subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "cache"), json.dumps(order)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for order in orders]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4

    for url, size, _, _ in items:
        assert counting_s3.get_bytes(url[len("s3:/"):]) == size, f"{url} downloaded more than once"
    assert sum(r["downloads"] for r in results) == 2
    assert sum(r["hits"] for r in results) == 6
    by_url = {url: data[url.split("/", 3)[3]] for url, *_ in items}
    for order, r in zip(orders, results):
        for (url, *_), path in zip(order, r["paths"]):
            assert Path(path).read_bytes() == by_url[url]
    assert len({p for r in results for p in r["paths"]}) == 2
    assert not list((tmp_path / "cache" / "partial").iterdir())


def test_lru_eviction_keeps_the_folder_under_the_limit(counting_s3, bucket, tmp_path):
    a, b, c = (put(counting_s3, bucket, f"train/{i:05d}.tar", os.urandom(100_000)) for i in range(3))
    cache = ShardCache(tmp_path / "cache", limit_bytes=250_000)
    cache.local_path(*a)
    cache.local_path(*b)
    cache.local_path(*a)  # a is now more recent than b
    cache.local_path(*c)
    assert entries(cache) == ["00000.tar", "00002.tar"]  # b, the least recently used, went
    assert cache.stats.evictions == 1 and cache.stats.hits == 1 and cache.stats.downloads == 3

    cache.local_path(*b)  # fetched again; a is now the least recently used
    assert entries(cache) == ["00001.tar", "00002.tar"]
    assert sum(p.stat().st_size for p in cache.shards_dir.iterdir()) <= 250_000
    assert counting_s3.get_bytes(f"/{bucket}/train/00001.tar") == 200_000
    assert cache.stats.bytes_downloaded == 400_000

    small = ShardCache(tmp_path / "small", limit_bytes=50_000)
    with pytest.warns(UserWarning, match="larger than the cache limit"):
        assert small.local_path(*a).stat().st_size == 100_000  # larger than the limit: cached anyway
    small.local_path(*b)
    assert entries(small) == ["00001.tar"]


def test_overwritten_object_raises_and_keeps_nothing(counting_s3, bucket, tmp_path):
    url, size, etag, _ = put(counting_s3, bucket, "train/00003.tar", b"a" * 50_000)
    put(counting_s3, bucket, "train/00003.tar", b"b" * 50_000)  # same size, new bytes
    cache = ShardCache(tmp_path / "cache", limit_bytes=0)
    with pytest.raises(ShardChangedError, match=rf"^{url} changed since it was indexed: ETag \w+ != \w+; re-run"):
        cache.local_path(url, size, etag)
    with pytest.raises(ShardChangedError, match=rf"{url} changed since it was indexed: size 40000 != 50000"):
        cache.local_path(url, 40_000)
    with pytest.raises(ShardChangedError, match="it no longer exists"):
        cache.local_path(f"s3://{bucket}/train/missing.tar", 1)
    assert not list(cache.shards_dir.iterdir()) and not list(cache.partial_dir.iterdir())
    assert counting_s3.get_bytes(f"/{bucket}/train/00003.tar") == 0  # refused before any byte was read

    local = tmp_path / "00000.tar"
    local.write_bytes(b"x" * 10)
    assert cache.local_path(str(local), 10) == local  # a local shard is read in place
    with pytest.raises(ShardChangedError, match=f"{local} changed since it was indexed: size 11 != 10"):
        cache.local_path(str(local), 11)


def test_pinned_version_survives_an_overwrite(counting_s3, bucket, tmp_path):
    s3 = counting_s3.client()
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = os.urandom(30_000)
    s3.put_object(Bucket=bucket, Key="train/00000.tar", Body=old)
    head = s3.head_object(Bucket=bucket, Key="train/00000.tar")
    s3.put_object(Bucket=bucket, Key="train/00000.tar", Body=os.urandom(30_000))
    url = f"s3://{bucket}/train/00000.tar"
    cache = ShardCache(tmp_path / "cache", limit_bytes=0)
    assert cache.local_path(url, 30_000, head["ETag"], head["VersionId"]).read_bytes() == old
    with pytest.raises(ShardChangedError, match="ETag"):
        cache.local_path(url, 30_000, head["ETag"])  # the latest version is not the indexed one


def test_prefetch_fetches_ahead_then_reads_are_hits(counting_s3, bucket, tmp_path):
    items = [put(counting_s3, bucket, f"train/{i:05d}.tar", os.urandom(50_000)) for i in range(4)]
    with ShardCache(tmp_path / "cache", limit_bytes=0) as cache:
        cache.prefetch(items, ahead=2)
        wait_for(lambda: cache.stats.downloads == 2)
        time.sleep(0.3)
        assert cache.stats.downloads == 2  # no further than `ahead` past the shard in use
        for i, item in enumerate(items):
            cache.local_path(*item)
            wait_for(lambda: cache.stats.downloads == min(4, i + 3))
        assert cache.stats.hits == 4 and cache.stats.downloads == 4
    for url, size, _, _ in items:
        assert counting_s3.get_bytes(url[len("s3:/"):]) == size


def test_killed_download_never_looks_complete(counting_s3, bucket, tmp_path):
    data = os.urandom(1_000_000)
    item = put(counting_s3, bucket, "train/00000.tar", data)
    cache = ShardCache(tmp_path / "cache", limit_bytes=0)
    counting_s3.counter.hold(f"/{bucket}/train/00000.tar")  # half the body, then nothing
    reader = subprocess.Popen([sys.executable, "-c", READER, str(cache.cache_dir), json.dumps([item])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready"
        reader.stdin.write("go\n")
        reader.stdin.flush()
        wait_for(lambda: counting_s3.get_bytes(f"/{bucket}/train/00000.tar") > 0
                 and any(p.stat().st_size for p in cache.partial_dir.iterdir()))
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait(timeout=30)
        counting_s3.counter.release()
    assert list(cache.partial_dir.iterdir()), "the killed download left its partial file"
    assert not list(cache.shards_dir.iterdir())

    assert cache.local_path(*item).read_bytes() == data  # the dead reader's lock went with it
    assert cache.stats.downloads == 1
    assert not list(cache.partial_dir.iterdir())  # the leftover was cleared by the next download
