"""`litops run`'s check, before Prefect starts, that the gate's metrics will be reported for a
dataset `litops data add` made: a metric the data cannot give is refused in about a second, in one line.

The flow makes the same check after its data step (flows/retrain.py), which also covers scheduled
runs, the embedded benchmark (made by that step) and the Kubernetes launcher.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def check_gate_metrics(cfg) -> None:
    """ConfigError with the register component's own line when a gate metric will not be reported (or a
    suite's triples file, which says what it reports, cannot be read)."""
    from litops.core.config import ConfigError
    from litops.core.workspace import Workspace
    from litops.flows.config import write_config
    from litops.flows.launcher import ComponentFailed, JobSpec, LocalProcessLauncher

    if cfg.launcher.kind != "local" or cfg.data.source != "path":
        return
    dataset_dir = Workspace(Path(cfg.home)).dataset_dir(cfg.data.name)
    if not (dataset_dir / "dataset.json").is_file():
        return  # the flow's data step says how to add it
    with tempfile.TemporaryDirectory(prefix="litops-gate-") as tmp:
        args = ["gate-metrics", "--config", str(write_config(cfg, Path(tmp) / "config.yaml")),
                "--dataset-dir", str(dataset_dir)]
        try:  # a fresh interpreter: the step imports neither torch nor MLflow; no step server yet
            LocalProcessLauncher(warm=False).run(JobSpec("gate-metrics", "register", args), log=lambda line: None,
                                                 diagnostics=lambda line: None)
        except ComponentFailed as e:  # a gate metric, or a suite's file, the config names wrongly
            if e.error is not None and e.error.message:
                raise ConfigError(e.error.message) from None
            raise
