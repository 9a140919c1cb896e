"""Where a config's storage lives: the DVC remote, the S3 endpoint. No credentials here: S3 keys
come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; a Secret in the cluster).

storage.kind=local: DVC remote <home>/dvc-remote (the embedded default).
storage.kind=s3:    DVC remote s3://<bucket>/<prefix>/dvc with `endpointurl` (MinIO or any
                    S3-compatible store), MLflow artifacts via the tracking server, checkpoints
                    under s3://<bucket>/<prefix>/checkpoints (litops.train.remote_checkpoints).
"""

from __future__ import annotations

import os
from typing import Any


def s3_endpoint(cfg) -> str | None:
    return cfg.storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None


def s3_uri(cfg, *parts: str) -> str:
    path = "/".join(p.strip("/") for p in (cfg.storage.prefix, *parts) if p and p.strip("/"))
    return f"s3://{cfg.storage.bucket}/{path}" if path else f"s3://{cfg.storage.bucket}"


def dvc_remote(cfg, local_remote: str) -> dict[str, Any]:
    """The DVC remote section (`[remote "litops"]`) for a config: {"url": ..., and for S3 "endpointurl", "region"}."""
    if cfg.storage.kind != "s3":
        return {"url": local_remote}
    remote: dict[str, Any] = {"url": s3_uri(cfg, "dvc"), "region": cfg.storage.region}
    if endpoint := s3_endpoint(cfg):
        remote["endpointurl"] = endpoint
    return remote
