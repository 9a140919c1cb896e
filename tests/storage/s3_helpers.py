"""Helpers of the storage tests (a unique module name: every test folder has its own conftest)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))  # fake_apiserver

ACCESS_KEY = "AKIALITOPSTEST000001"
SECRET_KEY = "litops-test-secret-7f3b9c2e5a1d4e8f"  # grepped for in logs and MLflow params: must never appear


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 HTTP server (real S3 REST protocol: boto3, DVC and MLflow talk to it via an endpoint URL)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Credentials only in the environment, as a Kubernetes Secret would provide them."""
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_server, "MLFLOW_S3_ENDPOINT_URL": s3_server}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def bucket(s3_env, request):
    import boto3

    name = "litops-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    return name


def tiny_dataset(root: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("litops_tests_root_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_dataset(root, {"train": 32}, 32)


def tiny_config(path: Path, steps: int, bucket: str = "", endpoint: str = "") -> Path:
    from litops.core.config import LitopsConfig, to_dict

    cfg = LitopsConfig()
    cfg.data.image_size = 32
    cfg.model.embed_dim, cfg.model.image_width, cfg.model.text_width, cfg.model.vocab_size = 32, 8, 32, 1024
    cfg.model.context_length = 16
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.checkpoint_every = steps, 16, 1, 2
    cfg.train.device, cfg.train.num_threads = "cpu", 1
    cfg.loss.impl = "reference"
    if bucket:
        cfg.storage.kind, cfg.storage.bucket, cfg.storage.prefix, cfg.storage.endpoint_url = "s3", bucket, "litops", endpoint
    path.write_text(json.dumps(to_dict(cfg)))
    return path


# ---------------------------------------------------------------------------- PostgreSQL

def _pg_bin(name: str) -> str | None:
    import glob
    import shutil

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster (Debian's packages; `.ci/run` installs them): initdb + pg_ctl in a
    temp folder, TCP on 127.0.0.1. PostgreSQL refuses to run as root, so as root it runs as the
    `postgres` user (runuser). Skips, with the reason, when it cannot be started."""
    import os
    import shutil
    import subprocess
    import tempfile
    import time

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="litops-pg-", dir="/tmp")
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data, log = os.path.join(root, "data"), os.path.join(root, "server.log")

    def run(cmd):
        return subprocess.run(as_user + cmd, capture_output=True, text=True, timeout=120)

    out = run([initdb, "-D", data, "-U", "litops", "--auth=trust", "-E", "UTF8", "--no-sync"])
    if out.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {(out.stderr or out.stdout).strip()[-300:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    out = run([pg_ctl, "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start"])
    if out.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {(out.stderr or out.stdout).strip()[-300:]}")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="litops", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE mlflow")
        conn.close()
        yield f"postgresql+psycopg2://litops@127.0.0.1:{port}/mlflow"
    finally:
        run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"])
        time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- mlflow server

class MlflowServer:
    def __init__(self, backend: str, artifacts: str, env: dict[str, str], workdir: Path):
        import os
        import subprocess

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"mlflow-server-{self.port}.log"
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", backend, "--serve-artifacts", "--artifacts-destination", artifacts]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
                                     env={**os.environ, **env, "MLFLOW_S3_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
                                          # no background job runner (GenAI jobs): ~25 s less start-up here
                                          "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                                     start_new_session=True)

    def wait(self, timeout: float = 90) -> "MlflowServer":
        import time
        import urllib.request

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not answer in {timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        import os
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except Exception:  # noqa: BLE001
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
