"""`litops`: the command line. Subcommands run flows or components; errors are one line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EPILOG = """examples:
  litops run                          retrain on the embedded default
  litops run train.steps=600 loss=softmax
  litops data synth                   generate + version the embedded benchmark
  litops data add ./my-shards         ingest user shards (bad samples are quarantined)
  litops data checkout --version lit-embedded@champion
                                      restore the data the champion was trained on
  litops models                       versions, aliases, metrics, data versions
  litops promote --version 3          move the champion alias by hand
  litops rollback                     give the alias back to the previous champion
  litops server start                 a persistent Prefect server for this workspace
  litops deploy                       serve the retrain deployment: cron + new-data trigger
  litops k8s render-job train.nodes=2 train.gpus_per_node=8
                                      print the Job (+ Service) a Kubernetes run would submit
  litops infra render --overlay gpu   print the platform manifests (infra/, kustomize layout)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="litops", description="Train, evaluate and promote image-text models.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    over = dict(nargs="*", default=[], metavar="KEY=VALUE", help="Hydra overrides, e.g. train.steps=300 loss=softmax")

    sub.add_parser("run", help="run the retrain flow once").add_argument("overrides", **over)
    data = sub.add_parser("data", help="data commands").add_subparsers(dest="data_command", required=True, metavar="SUB")
    data.add_parser("synth", help="generate and version the embedded benchmark").add_argument("overrides", **over)
    add = data.add_parser("add", help="ingest user shards or an image+caption folder")
    add.add_argument("path")
    add.add_argument("overrides", **over)
    checkout = data.add_parser("checkout", help="restore a data version, or a model's training data, into its own "
                                                "folder (the data repo's branch does not move)")
    checkout.add_argument("--version", required=True, metavar="REF", help="<md5>.dir | MODEL@ALIAS | MODEL/N")
    checkout.add_argument("overrides", **over)
    promote = sub.add_parser("promote", help="move the champion alias to a version")
    promote.add_argument("--version", type=int, required=True)
    promote.add_argument("overrides", **over)
    sub.add_parser("rollback", help="move the champion alias back to the previous champion").add_argument("overrides", **over)
    sub.add_parser("models", help="list registered versions").add_argument("overrides", **over)
    srv = sub.add_parser("server", help="the workspace's persistent Prefect server")
    srv.add_argument("action", choices=("start", "stop", "status"))
    srv.add_argument("overrides", **over)
    deploy = sub.add_parser("deploy", help="serve the retrain flow on its cron schedule and on new data")
    deploy.add_argument("--apply-only", action="store_true", help="register the deployment and exit (no runner)")
    deploy.add_argument("overrides", **over)
    k8s = sub.add_parser("k8s", help="Kubernetes commands").add_subparsers(dest="k8s_command", required=True, metavar="SUB")
    k8s.add_parser("render-job", help="print the YAML of the train Job (and Service) a run would submit, "
                                      "without a cluster").add_argument("overrides", **over)
    infra = sub.add_parser("infra", help="infrastructure commands").add_subparsers(dest="infra_command", required=True,
                                                                                  metavar="SUB")
    render = infra.add_parser("render", help="print the manifests of infra/ (base or an overlay)")
    render.add_argument("--overlay", default="base", help="base | dev | gpu (default: base)")
    return p


def _prepare_env(home: str) -> str | None:
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


def _component(component: str, args: list[str], cfg_overrides: list[str]) -> int:
    from litops.flows.config import load_config

    return _component_result(component, args, load_config(cfg_overrides))[0]


def _component_result(component: str, args: list[str], cfg) -> tuple[int, dict | None]:
    """Run one component as a child process, its output straight to the terminal; (exit code, result)."""
    from litops.flows.config import write_config
    from litops.core.workspace import Workspace
    from litops.flows.launcher import ComponentFailed, JobSpec, LocalProcessLauncher

    ws = Workspace(Path(cfg.home)).create()
    cfg_path = write_config(cfg, ws.runs / "cli" / "config.json")
    try:
        job = LocalProcessLauncher().run(JobSpec(component, component, [*args, "--config", str(cfg_path)]), log=print)
    except ComponentFailed as e:  # the component already printed its one-line error
        return e.exit_code, None
    return 0, job.result


def _local_source(path: str) -> str | None:
    """A local path checked before the workspace is created (S3 URLs and brace lists go to the
    data component as they are; it checks the rest); None after a one-line error."""
    if "://" in path or "{" in path:
        return path
    source = Path(path).expanduser()
    if source.is_dir() or (source.is_file() and source.name.lower().endswith((".tar", ".tar.gz", ".tgz"))):
        return str(source.resolve())
    what = "is not a .tar shard or a folder" if source.exists() else "does not exist"
    print(f"litops: data add: {source} {what}", file=sys.stderr)
    return None


def _data_add(path: str, overrides: list[str]) -> int:
    """Ingest, then tell the deployment's data trigger when a new data version was committed."""
    from litops.flows.config import load_config
    from litops.flows.events import emit_data_committed
    from litops.core.component_cli import EXIT_BAD_INPUT

    source = _local_source(path)
    if source is None:
        return EXIT_BAD_INPUT
    cfg = load_config(overrides)
    code, result = _component_result("data", ["add", source], cfg)
    if code != 0 or not result or not result.get("committed"):
        return code
    url = _prepare_env(cfg.home)
    if url is None:
        print("no Prefect server is running for this workspace: no deployment was told about the new data "
              "(`litops server start` and `litops deploy` retrain when data lands)")
        return 0
    event_id = emit_data_committed(url, cfg.home, result)
    print(f"event litops.data.committed ({event_id}) sent to {url}: deployments with a data trigger will retrain")
    return 0


def _server(action: str, overrides: list[str]) -> int:
    from litops.flows import server
    from litops.flows.config import load_config

    home = Path(load_config(overrides).home)
    if action == "start":
        state, started = server.start(home)
        print(f"Prefect server {'started' if started else 'already running'} for {home}: {state.api_url} "
              f"(pid {state.pid}, log {state.log})")
        print(f"  point Prefect's CLI at it: export PREFECT_API_URL={state.api_url}")
    elif action == "stop":
        state = server.stop(home)
        print(f"Prefect server stopped (pid {state.pid})" if state else f"no Prefect server was running for {home}")
    else:
        state = server.running(home)
        if state is None:
            print(f"no Prefect server is running for {home} (`litops server start`)")
            return 3
        print(f"Prefect server running for {home}: {state.api_url} (pid {state.pid}, database {state.database})")
    return 0


def _run(overrides: list[str]) -> int:
    from litops.flows.config import load_config
    from litops.flows.run_lock import model_lock

    cfg = load_config(overrides)  # fail fast, before Prefect starts
    with model_lock(Path(cfg.home), cfg.registry.model_name):  # a refused run never starts Prefect
        _prepare_env(cfg.home)
        from litops.flows.launcher import quiet_component_failures
        from litops.flows.retrain import retrain

        quiet_component_failures()
        summary = retrain(overrides=overrides)
    _print_run_summary(summary)
    return 0


def _print_run_summary(summary: dict) -> None:
    status = summary["status"]
    if status == "up_to_date":
        print(f"\nup to date: version {summary['version']} already trained on data {summary['data_version']}")
        return
    resumed = " (gate resumed: an interrupted run had registered it)" if summary.get("resumed") else ""
    m = summary.get("metrics", {})
    print(f"\nversion {summary['version']}: {status.upper()} ({summary.get('reason', '')}){resumed}")
    print("  " + "  ".join(f"{k}={m[k]:.3f}" for k in ("zeroshot_top1", "retrieval_i2t_r1", "retrieval_t2i_r1",
                                                       "compositional_acc") if k in m))


def _deploy(overrides: list[str], apply_only: bool) -> int:
    from litops.flows.config import load_config

    cfg = load_config(overrides)
    _prepare_env(cfg.home)
    from litops.flows.deploy import deploy

    deploy(cfg, overrides, apply_only=apply_only)
    return 0


def _render_job(overrides: list[str]) -> int:
    import yaml

    from litops.flows.config import load_config
    from litops.flows.k8s_render import example_train_spec, render

    cfg = load_config(["backend=kubernetes", *overrides])  # later overrides win, e.g. backend=... again
    print(yaml.safe_dump_all(render(example_train_spec(cfg), cfg, name="litops-train-example"), sort_keys=False), end="")
    return 0


def _render_infra(overlay: str) -> int:
    from litops.core.config import ConfigError
    from litops.flows.infra import InfraError, render, to_yaml

    try:
        print(to_yaml(render(overlay)), end="")
    except InfraError as e:
        raise ConfigError(str(e)) from None
    return 0


def main(argv: list[str] | None = None) -> None:
    from litops.core.component_cli import EXIT_CONFIG_ERROR
    from litops.core.config import ConfigError

    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            code = _run(args.overrides)
        elif args.command == "data" and args.data_command == "synth":
            code = _component("data", ["synth"], args.overrides)
        elif args.command == "data" and args.data_command == "checkout":
            code = _component("data", ["checkout", "--version", args.version], args.overrides)
        elif args.command == "data":
            code = _data_add(args.path, args.overrides)
        elif args.command == "server":
            code = _server(args.action, args.overrides)
        elif args.command == "promote":
            code = _component("register", ["promote", "--version", str(args.version)], args.overrides)
        elif args.command in ("rollback", "models"):
            code = _component("register", [args.command], args.overrides)
        elif args.command == "k8s":
            code = _render_job(args.overrides)
        elif args.command == "infra":
            code = _render_infra(args.overlay)
        else:
            code = _deploy(args.overrides, args.apply_only)
    except ConfigError as e:
        print(f"litops: config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except KeyboardInterrupt:
        print("litops: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:  # one readable failure, not a traceback wall
        from litops.flows.launcher import ComponentFailed
        from litops.flows.run_lock import RunInProgress
        from litops.flows.server import ServerError

        if os.environ.get("LITOPS_DEBUG") or not isinstance(e, Exception):
            raise
        if isinstance(e, (ComponentFailed, RunInProgress, ServerError)):
            print(f"litops: {e}", file=sys.stderr)
        else:
            print(f"litops: {type(e).__name__}: {e} (set LITOPS_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(getattr(e, "exit_code", 1) or 1) from None
    raise SystemExit(code)
