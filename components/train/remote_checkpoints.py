"""Mirror training checkpoints to an object store (S3 or S3-compatible: MinIO), so that a pod that
replaces a preempted one, on any node, resumes from the latest checkpoint.

- `pull(local_dir)` before training: fetch the newest remote `step-*.pt` if it is newer than
  the newest local one (downloaded to a temp file, then renamed: never half a file).
- `push(path)` after each checkpoint (rank 0 only), then `prune` keeps the newest two remotely.
- Transient S3 faults are retried by botocore (`storage.max_attempts`, `storage.retry_mode`) and,
  for a download cut short, by boto3's transfer manager (litops.core.s3_retries); one that
  persists fails with one line naming the object.
- Credentials only from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a
  Kubernetes Secret in the cluster); the endpoint from the config, else AWS_ENDPOINT_URL /
  MLFLOW_S3_ENDPOINT_URL. Nothing here prints or logs a credential.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from litops.core.checkpoint import latest_checkpoint
from litops.core.s3_retries import S3Retries, naming

_STEP = re.compile(r"(?:^|/)step-(\d+)\.pt$")


def endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None


def split_s3(uri: str) -> tuple[str, str]:
    u = urlparse(uri)
    if u.scheme != "s3" or not u.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return u.netloc, u.path.strip("/")


def _step_of(path: Path | None) -> int:
    if path is None:
        return -1
    m = _STEP.search(path.name)
    return int(m.group(1)) if m else -1


class S3CheckpointMirror:
    def __init__(self, uri: str, endpoint_url: str | None = None, region: str | None = None, client: Any = None,
                 retries: S3Retries = S3Retries()):
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split_s3(self.uri)
        self.endpoint_url = endpoint_url or endpoint_from_env()
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.retries = retries
        self._client = client

    @classmethod
    def for_run(cls, cfg, ckpt_dir: Path) -> "S3CheckpointMirror | None":
        """The mirror of a run's checkpoint folder when the config's storage is S3:
        s3://<bucket>/<prefix>/checkpoints/<folder name> (the folder name is config hash + data version)."""
        st = cfg.storage
        if st.kind != "s3":
            return None
        prefix = "/".join(p for p in (st.prefix.strip("/"), "checkpoints", ckpt_dir.name) if p)
        return cls(f"s3://{st.bucket}/{prefix}", st.endpoint_url or None, st.region, retries=S3Retries.from_config(cfg))

    @property
    def client(self):
        if self._client is None:
            self._client = self.retries.client(self.endpoint_url, self.region)
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def remote_steps(self) -> dict[int, str]:
        """step -> key of every remote step checkpoint."""
        out: dict[int, str] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        with naming(self.uri):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("step-")):
                for obj in page.get("Contents", []):
                    if m := _STEP.search(obj["Key"]):
                        out[int(m.group(1))] = obj["Key"]
        return out

    def pull(self, local_dir: Path) -> Path | None:
        """Make the newest checkpoint (local or remote) available locally; returns its path (None: none)."""
        local_dir.mkdir(parents=True, exist_ok=True)
        local = latest_checkpoint(local_dir)
        remote = self.remote_steps()
        if not remote or max(remote) <= _step_of(local):
            return local
        step = max(remote)
        key = remote[step]
        dest = local_dir / Path(key).name
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=local_dir)
        os.close(fd)
        try:
            with naming(f"s3://{self.bucket}/{key}"):
                self.client.download_file(self.bucket, key, tmp)
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        print(f"checkpoint: fetched {dest.name} from s3://{self.bucket}/{key}", file=sys.stderr, flush=True)
        return dest

    def push(self, path: Path, keep: int | None = 2) -> str:
        key = self._key(path.name)
        with naming(f"s3://{self.bucket}/{key}"):
            self.client.upload_file(str(path), self.bucket, key)
        print(f"checkpoint: uploaded {path.name} to s3://{self.bucket}/{key}", file=sys.stderr, flush=True)
        if keep and _STEP.search(path.name):
            self.prune(keep)
        return f"s3://{self.bucket}/{key}"

    def prune(self, keep: int = 2) -> None:
        steps = sorted(self.remote_steps())
        for step in steps[:-keep]:
            key = self.remote_steps_cache_key(step)
            with naming(f"s3://{self.bucket}/{key}"):
                self.client.delete_object(Bucket=self.bucket, Key=key)

    def remote_steps_cache_key(self, step: int) -> str:
        return self._key(f"step-{step:08d}.pt")


def scratch_dir_for(uri: str) -> Path:
    """Local working folder for `--checkpoint-dir s3://...` (the pod's emptyDir /tmp)."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "litops-checkpoints" / f"{Path(split_s3(uri)[1]).name or 'run'}-{digest}"
