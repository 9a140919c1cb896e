"""`litops run`: the retrain flow as a Hydra application.

Hydra's own parser and override grammar (`+key=v`, `~key`, `key=null`, sweeps), and its commands:
`--cfg`, `--info`, `--hydra-help`, `-m/--multirun` (the basic launcher: one flow run after the other).
Hydra writes nothing into the current folder (configs/config.yaml, `hydra:`) and configures no
logging, so Prefect's log and the progress bars stay as they are.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from litops.flows.config import (CONFIG_NAME, ConfigSource, config_source, load_config, one_line, register_schema,
                                 search_path)

TASK_NAME = "litops_run"
HYDRA_DEFAULTS = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # a user's own choice comes later and wins
DESCRIPTION = """\
Run the retrain flow once: version data -> train -> evaluate -> register -> gate.

The config is a Hydra tree (configs/) checked by a typed schema; change it with overrides:
KEY=VALUE sets a key, GROUP=OPTION picks a config group option, +KEY=VALUE adds a key, ~KEY deletes
one, KEY=null nulls one (the schema refuses unknown keys, bad types and nulls where none is allowed).
With -m, comma lists are swept: one flow run per combination, then a table of the results."""
EXAMPLES = """\
examples:
  litops run                                retrain on the embedded default
  litops run train.steps=600 loss=softmax   override a key, pick a group option
  litops run --cfg job loss=softmax         print the composed config; nothing runs
  litops run --cfg job --resolve            ... with interpolations resolved
  litops run --info defaults-tree           how the config was composed (also: config, searchpath, plugins)
  litops run -m loss=sigmoid,softmax        two flow runs, then: overrides -> version, decision, metric
  litops run --config-dir ./my-configs model=my_model
                                            add config options of your own (here: my-configs/model/my_model.yaml)
  litops run --config-dir ./my-configs --config-name my_profile
                                            start from your own primary config"""
UNSUPPORTED = ("shell_completion", "experimental_rerun")  # completion would complete `litops`, not `litops run`
FLAG_HELP = {
    "overrides": "KEY=VALUE, GROUP=OPTION, +KEY=VALUE, ~KEY, KEY=null; with -m, KEY=A,B sweeps",
    "config_path": "the config tree to use instead of litops's configs/ (a folder)",
    "config_name": f"the primary config in the tree (default: {CONFIG_NAME})",
    "config_dir": "a folder of extra config options, searched after the config tree",
    "multirun": "one flow run per sweep point (comma lists), one after the other; then a table of results",
}


def build_parser() -> argparse.ArgumentParser:
    """Hydra's own parser, named and described as `litops run`."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.prog, parser.description, parser.epilog = "litops run", DESCRIPTION, EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:  # Hydra's wording speaks of a decorated Python file
        action.help = FLAG_HELP.get(action.dest, action.help)
        if action.dest in UNSUPPORTED:
            action.help = argparse.SUPPRESS
        if action.dest == "overrides":
            action.metavar = "KEY=VALUE"
    return parser


@dataclass
class Outcome:
    """One flow run of the app: its overrides and summary, or the exception it ended with."""

    overrides: list[str]
    primary_metric: str
    summary: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_commands(parser, args)
    from hydra import version

    version.setbase("1.3")
    register_schema()
    source = _config_source(parser, args)
    with config_source(source):
        hydra = _create_hydra(source)
        try:
            return _dispatch(hydra, parser, args, source)
        finally:
            from hydra.core.global_hydra import GlobalHydra

            GlobalHydra.instance().clear()


def _check_commands(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if any(getattr(args, dest) for dest in UNSUPPORTED):
        parser.error("--shell-completion and --experimental-rerun are not supported by litops run")
    if sum([args.run, args.multirun, args.cfg is not None, args.info is not None]) > 1:
        parser.error("only one of --run, --multirun, --cfg and --info can be given")
    if args.resolve and args.cfg is None and not args.help:
        parser.error("--resolve goes with --cfg")


def _config_source(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ConfigSource:
    """Relative folders are the user's, from the current one (Hydra would take them from the app's module)."""
    for flag, folder in (("--config-path", args.config_path), ("--config-dir", args.config_dir)):
        if folder and not os.path.isdir(folder):
            parser.error(f"{flag} {folder}: no such folder")
    return ConfigSource(primary_dir=os.path.abspath(args.config_path) if args.config_path else "",
                        name=args.config_name or CONFIG_NAME,
                        extra_dir=os.path.abspath(args.config_dir) if args.config_dir else "")


def _create_hydra(source: ConfigSource):
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name=TASK_NAME, config_search_path=search_path(source))


def _dispatch(hydra, parser: argparse.ArgumentParser, args: argparse.Namespace, source: ConfigSource) -> int:
    overrides = [*HYDRA_DEFAULTS, *args.overrides]
    if args.help:
        print(_app_help(hydra, parser))
    elif args.hydra_help:
        with_defaults = argparse.Namespace(**{**vars(args), "overrides": overrides})
        _composed(lambda: hydra.hydra_help(config_name=source.name, args_parser=parser, args=with_defaults))
    elif args.cfg is not None:
        load_config(args.overrides)  # the schema's checks too, as a run would make them
        _composed(lambda: hydra.show_cfg(config_name=source.name, overrides=overrides, cfg_type=args.cfg,
                                         package=args.package, resolve=args.resolve))
    elif args.info is not None:
        _composed(lambda: hydra.show_info(args.info, config_name=source.name, overrides=overrides))
    elif args.multirun:
        batches = _composed(lambda: hydra.multirun(config_name=source.name, task_function=_sweep_point,
                                                   overrides=[*overrides, "hydra.mode=MULTIRUN"]))
        return _report_sweep([job.return_value for batch in batches for job in batch])
    else:
        load_config(args.overrides)  # a bad config fails before Hydra makes the run's folder
        job = _composed(lambda: hydra.run(config_name=source.name, task_function=_flow_run,
                                          overrides=[*overrides, "hydra.mode=RUN"]))
        return _report_run(job.return_value)
    return 0


def _composed(call: Callable[[], Any]) -> Any:
    """Call Hydra; a config it cannot compose is a one-line ConfigError (a flow run's own errors never
    reach here: they are kept in its Outcome)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from litops.core.config import ConfigError

    try:
        return call()
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(one_line(e)) from None


def _app_help(hydra, parser: argparse.ArgumentParser) -> str:
    groups = hydra.format_config_groups(lambda group: not (group == "hydra" or group.startswith("hydra/")))
    return f"{parser.format_help().rstrip()}\n\nconfig groups (GROUP=OPTION):\n" + "".join(
        f"  {line}\n" for line in groups.splitlines())


def _sweep_point(cfg) -> Outcome:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    print(f"litops run: sweep job #{hydra_cfg.job.num}: {' '.join(hydra_cfg.overrides.task) or '(no overrides)'}",
          file=sys.stderr)
    return _flow_run(cfg)


def _flow_run(cfg) -> Outcome:
    """One flow run with this job's overrides; an exception is kept (Hydra would print it as a traceback)."""
    from hydra.core.hydra_config import HydraConfig

    outcome = Outcome(list(HydraConfig.get().overrides.task), str(cfg.registry.primary_metric))
    try:
        outcome.summary = run_flow(outcome.overrides)
    except Exception as e:
        outcome.error = e
    gate = outcome.summary.get("gate_metrics", {})
    outcome.primary_metric = gate.get("primary", outcome.primary_metric)  # `auto` as the run resolved it
    return outcome


def run_flow(overrides: list[str]) -> dict[str, Any]:
    """The retrain flow, holding the model's lock; a refused run never starts Prefect."""
    from pathlib import Path

    from litops.flows.cli_commands import prepare_env
    from litops.flows.gate_preflight import check_gate_metrics
    from litops.flows.run_lock import model_lock

    cfg = load_config(overrides)  # fail fast, before Prefect starts
    check_gate_metrics(cfg)  # a gate metric the user's data cannot give, too
    with model_lock(Path(cfg.home), cfg.registry.model_name):
        prepare_env(cfg.home)
        from litops.flows.launcher import prestart_step_server, quiet_component_failures
        from litops.flows.retrain import retrain

        quiet_component_failures()
        if cfg.launcher.kind == "local":
            prestart_step_server()
        return retrain(overrides=overrides)


def _report_run(outcome: Outcome) -> int:
    if outcome.error is not None:
        raise outcome.error  # litops's one-line error handling (flows/cli.py)
    print_run_summary(outcome.summary)
    return 0


def print_run_summary(summary: dict) -> None:
    status = summary["status"]
    if status == "up_to_date":
        print(f"\nup to date: version {summary['version']} already trained on data {summary['data_version']}")
        return
    resumed = " (gate resumed: an interrupted run had registered it)" if summary.get("resumed") else ""
    m = summary.get("metrics", {})
    gate = summary["gate_metrics"]
    print(f"\nversion {summary['version']}: {status.upper()} ({summary.get('reason', '')}){resumed}")
    print("  " + "  ".join(f"{k}={m[k]:.3f}" for k in [gate["primary"], *gate["guards"]] if k in m))


def _report_sweep(outcomes: list[Outcome]) -> int:
    """The sweep's table on stdout, each failed job's one line on stderr; exit 1 when any job failed."""
    from litops.flows.cli import error_message

    for outcome in outcomes:
        if outcome.error is not None:
            print(f"litops run: failed: {' '.join(outcome.overrides)}: {error_message(outcome.error)}", file=sys.stderr)
    print("\n" + sweep_table(outcomes))
    return 1 if any(o.error is not None for o in outcomes) else 0


def sweep_table(outcomes: list[Outcome]) -> str:
    """One row per job: the overrides that vary across the sweep, then version, decision, primary metric."""
    shared = [o for o in outcomes[0].overrides if all(o in other.overrides for other in outcomes)] if outcomes else []
    header = ["overrides", "version", "decision", *dict.fromkeys(o.primary_metric for o in outcomes)]
    rows = [[" ".join(o for o in outcome.overrides if o not in shared) or "-", *_row(outcome, header[3:])]
            for outcome in outcomes]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    table = [line.format(*cells).rstrip() for cells in (header, ["-" * w for w in widths], *rows)]
    if shared:
        table.insert(0, f"sweep of {len(outcomes)} runs, all with: {' '.join(shared)}")
    return "\n".join(table)


def _row(outcome: Outcome, metric_names: list[str]) -> list[str]:
    summary = outcome.summary
    if outcome.error is not None:
        return ["-", "failed", *("-" for _ in metric_names)]
    decision = "up to date" if summary["status"] == "up_to_date" else summary["status"]
    metrics = summary.get("metrics", {})
    values = [f"{metrics[name]:.4f}" if name == outcome.primary_metric and name in metrics else "-"
              for name in metric_names]
    return [f"v{summary['version']}", decision, *values]
