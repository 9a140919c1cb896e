"""A deployment holds the config composed at deploy time as its one typed parameter: the Prefect UI shows
a config form, not a list of override strings, and every scheduled or triggered run takes it as it is."""

from __future__ import annotations

from prefect.utilities.callables import parameter_schema

from litops.core.config import LitopsConfig, from_dict
from litops.flows.config import load_config
from litops.flows.deploy import build_deployment
from litops.flows.retrain import retrain


def test_the_deployment_parameter_is_the_composed_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LITOPS_HOME", str(tmp_path))
    cfg = load_config(["train.steps=7", "loss=softmax"])
    deployment = build_deployment(cfg)

    assert list(deployment.parameters) == ["config"]
    held = from_dict(LitopsConfig, deployment.parameters["config"])
    assert held == cfg and held.train.steps == 7 and held.loss.name == "softmax"

    schema = parameter_schema(retrain)  # what Prefect sends for the deployment's form
    assert schema.required == ["config"]
    definitions = schema.definitions
    config_ref = schema.properties["config"]["$ref"].rsplit("/", 1)[-1]
    sections = definitions[config_ref]["properties"]
    assert {"data", "model", "loss", "train", "registry"} <= set(sections)  # a form of sections, not strings
    assert definitions["TrainConfig"]["properties"]["steps"]["type"] == "integer"
