"""What `litops` subcommands other than `run` do. Results go to stdout; errors and progress to stderr."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from litops.core.step_results import DataVersionResult, ModelsResult, RollbackResult, StepResult, expect


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def prepare_env(home: str) -> str | None:
    """Prefect's own state goes under the litops home too, unless the user set PREFECT_HOME."""
    os.environ.setdefault("PREFECT_HOME", str(Path(home) / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # slow 2-core boxes
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client: no telemetry, so no first-run notice on a terminal
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from litops.flows.server import use_if_running

    return use_if_running(Path(home))  # the workspace's persistent server's API URL, when it is up


def component(name: str, args: list[str], cfg_overrides: list[str]) -> int:
    from litops.flows.config import load_config

    return component_result(name, args, load_config(cfg_overrides))[0]


def component_result(name: str, args: list[str], cfg, log=print) -> tuple[int, StepResult | None]:
    """Run one component as a child process; (exit code, typed result). Its output goes to `log` (stdout),
    its one-line error and progress to stderr."""
    from litops.core.workspace import Workspace
    from litops.flows.config import write_config
    from litops.flows.launcher import ComponentFailed, JobSpec, LocalProcessLauncher

    ws = Workspace(Path(cfg.home)).create()
    cfg_path = write_config(cfg, ws.runs / "cli" / "config.yaml")
    try:
        # one step: a warm server would import torch and MLflow before it, for nothing (`data add` of 300 pairs:
        # 19 s instead of 56 s on a busy 2-core box)
        job = LocalProcessLauncher(warm=False).run(JobSpec(name, name, [*args, "--config", str(cfg_path)]), log=log,
                                                   diagnostics=to_stderr)
    except ComponentFailed as e:
        if e.error is None:  # a crash, not a reported error: show its last lines
            to_stderr(f"litops: {e}")
        return e.exit_code, None
    return 0, job.result


def models(output_format: str, overrides: list[str]) -> int:
    """The registered versions: the component's table, or its rows as one JSON document."""
    from litops.flows.config import load_config

    if output_format == "table":
        return component("register", ["models"], overrides)
    code, result = component_result("register", ["models"], load_config(overrides), log=lambda line: None)
    if code == 0:
        listing = expect(result, ModelsResult)
        print(json.dumps({"model_name": listing.model_name, "versions": listing.rows}, indent=2))
    return code


def rollback(overrides: list[str]) -> int:
    """Give the champion alias back, then announce it on the webhook (flows/announce.py)."""
    from litops.flows.announce import rolled_back
    from litops.flows.config import load_config

    cfg = load_config(overrides)
    code, result = component_result("register", ["rollback"], cfg)
    if code != 0 or not result:
        return code
    if cfg.notify.webhook_url.startswith("block:") and prepare_env(cfg.home) is None:
        to_stderr("litops: notify: no Prefect server is running for this workspace to read the Secret block "
                  f"{cfg.notify.webhook_url[len('block:'):]!r} from; no message sent")
        return code
    rolled_back(cfg, expect(result, RollbackResult), lambda line: to_stderr(f"litops: {line}"))
    return code


def local_source(path: str) -> str | None:
    """A local path checked before the workspace is created (S3 URLs and brace lists go to the
    data component as they are; it checks the rest); None after a one-line error."""
    if "://" in path or "{" in path:
        return path
    source = Path(path).expanduser()
    if source.is_dir() or (source.is_file() and source.name.lower().endswith((".tar", ".tar.gz", ".tgz"))):
        return str(source.resolve())
    what = "is not a .tar shard or a folder" if source.exists() else "does not exist"
    to_stderr(f"litops: data add: {source} {what}")
    return None


def data_add(path: str, overrides: list[str], in_place: bool = False) -> int:
    """Ingest, then tell the deployment's data trigger when a new data version was committed."""
    from litops.core.component_cli import EXIT_BAD_INPUT
    from litops.flows.config import load_config
    from litops.flows.events import emit_data_committed

    source = local_source(path)
    if source is None:
        return EXIT_BAD_INPUT
    cfg = load_config(overrides)
    code, result = component_result("data", ["add", source] + (["--in-place"] if in_place else []), cfg)
    if code != 0 or not result or not expect(result, DataVersionResult).committed:
        return code
    url = prepare_env(cfg.home)
    if url is None:
        print("no Prefect server is running for this workspace: no deployment was told about the new data "
              "(`litops server start` and `litops deploy` retrain when data lands)")
        return 0
    event_id = emit_data_committed(url, cfg.home, result)
    print(f"event litops.data.committed ({event_id}) sent to {url}: deployments with a data trigger will retrain")
    return 0


def server(action: str, overrides: list[str]) -> int:
    from litops.flows import server as prefect_server
    from litops.flows.config import load_config

    home = Path(load_config(overrides).home)
    if action == "start":
        state, started = prefect_server.start(home)
        print(f"Prefect server {'started' if started else 'already running'} for {home}: {state.api_url} "
              f"(pid {state.pid}, log {state.log})")
        print(f"  point Prefect's CLI at it: export PREFECT_API_URL={state.api_url}")
    elif action == "stop":
        state = prefect_server.stop(home)
        print(f"Prefect server stopped (pid {state.pid})" if state else f"no Prefect server was running for {home}")
    else:
        state = prefect_server.running(home)
        if state is None:
            print(f"no Prefect server is running for {home} (`litops server start`)")
            return 3
        print(f"Prefect server running for {home}: {state.api_url} (pid {state.pid}, database {state.database})")
    return 0


def deploy(overrides: list[str], apply_only: bool) -> int:
    from litops.flows.config import load_config

    cfg = load_config(overrides)
    prepare_env(cfg.home)
    from litops.flows.deploy import deploy as serve_deployment

    serve_deployment(cfg, apply_only=apply_only)
    return 0


def render_job(overrides: list[str]) -> int:
    import yaml

    from litops.flows.config import load_config
    from litops.flows.k8s_render import example_train_spec, render

    cfg = load_config(["backend=kubernetes", *overrides])  # later overrides win, e.g. backend=... again
    print(yaml.safe_dump_all(render(example_train_spec(cfg), cfg, name="litops-train-example"), sort_keys=False), end="")
    return 0


def render_infra(overlay: str) -> int:
    from litops.core.config import ConfigError
    from litops.flows.infra import InfraError, render, to_yaml

    try:
        print(to_yaml(render(overlay)), end="")
    except InfraError as e:
        raise ConfigError(str(e)) from None
    return 0
