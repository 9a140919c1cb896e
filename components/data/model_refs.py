"""The data version a registered model was trained on: `MODEL@ALIAS` or `MODEL/N` -> its `data_version` tag.

MLflow is imported only here, and only when a model reference is resolved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litops.core.component_cli import UserError

from .versioning import DATA_VERSION_RE

FORMS = "'<32 hex>.dir', 'MODEL@ALIAS' or 'MODEL/N'"


def is_data_version(ref: str) -> bool:
    return bool(DATA_VERSION_RE.match(ref))


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(model name, alias, version number); exactly one of alias and version is set."""
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in ref:
        name, number = ref.rsplit("/", 1)
        if name and number.isdigit():
            return name, None, number
    raise UserError(f"unknown version '{ref}' (expected {FORMS})")


def resolve(ref: str, tracking_uri: str) -> dict[str, Any]:
    """{"data_version", "model", "model_version", "run_id"} of a model reference."""
    name, alias, number = parse_model_ref(ref)
    mv = _model_version(_client(tracking_uri), name, alias, number, ref)
    data_version = (mv.tags or {}).get("data_version", "")
    if not is_data_version(data_version):
        raise UserError(f"model version {name}/{mv.version} has no data_version tag (got {data_version!r})")
    return {"data_version": data_version, "model": name, "model_version": int(mv.version), "run_id": mv.run_id}


def _client(tracking_uri: str):
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"no MLflow registry at {tracking_uri} (nothing has been registered yet)")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def _model_version(client, name: str, alias: str | None, number: str | None, ref: str):
    from mlflow.exceptions import MlflowException

    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, number)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise UserError(f"no registered model version '{ref}' in {client.tracking_uri}") from None
        raise UserError(f"looking up '{ref}' in {client.tracking_uri} failed: {e.message.splitlines()[0]}") from None
