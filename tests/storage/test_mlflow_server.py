"""The production tracking setup: a real `mlflow server` (started here as a subprocess) with
`--serve-artifacts --artifacts-destination s3://...` and MLFLOW_S3_ENDPOINT_URL, on a SQLite and
on a real PostgreSQL backend store.

Stand-ins: S3 is moto's server on 127.0.0.1 (S3 REST protocol); PostgreSQL is a real server from
Debian's packages started by the `postgres_url` fixture (skips with the reason when it cannot be
started; `.ci/run` installs it so it runs in CI). The client sees only the tracking URI: artifacts
go through the server's proxy (mlflow-artifacts:/), as `storage=s3` configures it.
"""

from __future__ import annotations

import boto3
import pytest

from s3_helpers import MlflowServer

pytestmark = pytest.mark.timeout(180)



def _log_register_alias_load(server: MlflowServer, bucket: str, name: str):
    import mlflow
    import numpy as np
    import pandas as pd

    class Scale(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input * 2

    mlflow.set_tracking_uri(server.url)
    client = mlflow.MlflowClient(server.url, registry_uri=server.url)
    # what the trainer's MLflow logger does with storage=s3: artifact_location mlflow-artifacts:/litops
    exp_id = client.create_experiment(f"exp-{name}", artifact_location="mlflow-artifacts:/litops")
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_param("lr", 0.001)
        mlflow.log_metric("zeroshot_top1", 0.5)
        info = mlflow.pyfunc.log_model(name="model", python_model=Scale(), pip_requirements=[], registered_model_name=name)
    # artifacts landed in the bucket, under the server's --artifacts-destination
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.startswith("mlflow/") and k.endswith("MLmodel") for k in keys), keys
    version = client.search_model_versions(f"name = '{name}'")[0].version
    client.set_registered_model_alias(name, "champion", version)
    assert client.get_model_version_by_alias(name, "champion").run_id == run.info.run_id
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(pd.DataFrame({"x": np.array([1.0, 2.5])}))
    assert list(out["x"]) == [2.0, 5.0]
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert list(loaded.predict(pd.DataFrame({"x": [3.0]}))["x"]) == [6.0]
    return version


def test_mlflow_server_with_s3_artifacts(tmp_path, s3_env, bucket):
    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", f"s3://{bucket}/mlflow", s3_env, tmp_path).wait()
    try:
        _log_register_alias_load(server, bucket, "lit-s3")
    finally:
        server.stop()


def test_mlflow_server_on_postgresql_registry_alias(tmp_path, s3_env, bucket, postgres_url):
    import psycopg2

    server = MlflowServer(postgres_url, f"s3://{bucket}/mlflow", s3_env, tmp_path).wait(timeout=150)
    try:
        version = _log_register_alias_load(server, bucket, "lit-pg")
    finally:
        server.stop()
    # the registry really lives in PostgreSQL
    with psycopg2.connect(postgres_url.replace("+psycopg2", "")) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, alias, version FROM registered_model_aliases")
        assert cur.fetchall() == [("lit-pg", "champion", int(version))]
