"""`litops run`: the retrain flow, its config composed once.

The flags and override grammar are Hydra's (`+key=v`, `~key`, `key=null`, sweeps). A run composes
its config once (flows/config.py), checks it against the schema, and hands the typed config to the
flow, which writes it as the run's config.yaml for every step. `--cfg` prints that composition.
`-m`, `--info` and `--hydra-help` are Hydra's own app (`hydra.main`): a sweep composes once per
job and runs one flow per job, one after the other. Hydra writes nothing into the current folder
and configures no logging, so Prefect's log and the progress bars stay as they are.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litops.core.config import LitopsConfig
from litops.flows.config import (CONFIG_NAME, ConfigSource, compose_config, load_config, one_line, to_litops_config)

DESCRIPTION = """\
Run the retrain flow once: version data -> train -> evaluate -> register -> gate.

The config is a Hydra tree (configs/) checked by a typed schema; change it with overrides:
KEY=VALUE sets a key, GROUP=OPTION picks a config group option, +KEY=VALUE adds a key, ~KEY deletes
one, KEY=null nulls one (the schema refuses unknown keys, bad types and nulls where none is allowed).
An experiment (configs/experiment/) picks a model and the training presets that go with it.
With -m, comma lists are swept: one flow run per combination, then a table of the results."""
EXAMPLES = """\
examples:
  litops run                                retrain on the embedded default (experiment=lit_embedded)
  litops run train.steps=600 loss=softmax   override a key, pick a group option
  litops run experiment=lit_effnet_minilm   another experiment: its model and training presets
  litops run --cfg job loss=softmax         print the composed config; nothing runs
  litops run --cfg job --resolve            ... with interpolations resolved
  litops run --info defaults-tree           how the config was composed (also: config, searchpath, plugins)
  litops run -m loss=sigmoid,softmax        two flow runs, then: overrides -> version, decision, metric
  litops run --config-dir ./my-configs model=my_model
                                            add config options of your own (here: my-configs/model/my_model.yaml)
  litops run --config-dir ./my-configs --config-name my_profile
                                            start from your own primary config"""
INFO_TOPICS = ["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"]


def build_parser() -> argparse.ArgumentParser:
    """Hydra's app flags, named and described as `litops run`."""
    p = argparse.ArgumentParser(prog="litops run", description=DESCRIPTION, epilog=EXAMPLES, add_help=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--help", "-h", action="store_true", help="this help")
    p.add_argument("--hydra-help", action="store_true", help="Hydra's help")
    p.add_argument("--cfg", "-c", choices=["job", "hydra", "all"], help="print the composed config instead of running")
    p.add_argument("--resolve", action="store_true", help="with --cfg: resolve interpolations before printing")
    p.add_argument("--package", "-p", help="with --cfg: the config package to print")
    p.add_argument("--run", "-r", action="store_true", help="run one flow (the default)")
    p.add_argument("--multirun", "-m", action="store_true",
                   help="one flow run per sweep point (comma lists), one after the other; then a table of results")
    p.add_argument("--config-path", "-cp", help="the config tree to use instead of litops's configs/ (a folder)")
    p.add_argument("--config-name", "-cn", help=f"the primary config in the tree (default: {CONFIG_NAME})")
    p.add_argument("--config-dir", "-cd", help="a folder of extra config options, searched after the config tree")
    p.add_argument("--info", "-i", nargs="?", const="all", choices=INFO_TOPICS, help="print Hydra information")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="KEY=VALUE, GROUP=OPTION, +KEY=VALUE, ~KEY, KEY=null; with -m, KEY=A,B sweeps")
    return p


@dataclass
class Outcome:
    """One flow run: its overrides and summary, or the exception it ended with."""

    overrides: list[str]
    primary_metric: str
    summary: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if sum([args.run, args.multirun, args.cfg is not None, args.info is not None]) > 1:
        parser.error("only one of --run, --multirun, --cfg and --info can be given")
    if args.resolve and args.cfg is None and not args.help:
        parser.error("--resolve goes with --cfg")
    source = _config_source(parser, args)
    if args.help:
        print(app_help(parser, source))
    elif args.multirun or args.info is not None or args.hydra_help:
        return hydra_app(_absolute_folders(argv, source))
    elif args.cfg is not None:
        print_config(args, source)
    else:
        cfg = load_config(args.overrides, source)  # the run's one composition; a bad config fails here
        return _report_run(flow_run(cfg, args.overrides))
    return 0


def _config_source(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ConfigSource:
    """Relative folders are the user's, from the current one (Hydra would take them from the app's module)."""
    for flag, folder in (("--config-path", args.config_path), ("--config-dir", args.config_dir)):
        if folder and not os.path.isdir(folder):
            parser.error(f"{flag} {folder}: no such folder")
    return ConfigSource(primary_dir=os.path.abspath(args.config_path) if args.config_path else "",
                        name=args.config_name or CONFIG_NAME,
                        extra_dir=os.path.abspath(args.config_dir) if args.config_dir else "")


def _absolute_folders(argv: list[str], source: ConfigSource) -> list[str]:
    """The same command line for Hydra's app, its config folders absolute."""
    folders = {"--config-path": source.primary_dir, "-cp": source.primary_dir,
               "--config-dir": source.extra_dir, "-cd": source.extra_dir}
    out, args = [], iter(argv)
    for arg in args:
        flag, eq, _ = arg.partition("=")
        if flag in folders:
            out += [flag, folders[flag]]
            if not eq:
                next(args, None)
        else:
            out.append(arg)
    return out


def app_help(parser: argparse.ArgumentParser, source: ConfigSource) -> str:
    groups = config_groups([source.tree, *([source.extra_dir] if source.extra_dir else [])])
    return f"{parser.format_help().rstrip()}\n\nconfig groups (GROUP=OPTION):\n" + "".join(
        f"  {group}: {', '.join(options)}\n" for group, options in groups.items())


def config_groups(trees: list[str]) -> dict[str, list[str]]:
    """Each config group of the trees and its options, as Hydra lists them (its own groups left out)."""
    groups: dict[str, set[str]] = {}
    for tree in trees:
        for option in Path(tree).glob("*/*.yaml"):
            if option.parent.name != "hydra":
                groups.setdefault(option.parent.name, set()).add(option.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def print_config(args: argparse.Namespace, source: ConfigSource) -> None:
    """`--cfg job|hydra|all`, as Hydra prints it; the schema's checks are made as a run would make them."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import Container, OmegaConf, open_dict

    composed = compose_config(args.overrides, source, with_hydra_node=True)
    HydraConfig.instance().set_config(composed)  # ${hydra:...} resolves as in a run
    job = composed.copy()
    with open_dict(job):
        del job["hydra"]
    to_litops_config(job)
    shown = {"job": job, "hydra": OmegaConf.masked_copy(composed, "hydra"), "all": composed}[args.cfg]
    if args.package and args.package != "_global_":
        shown = OmegaConf.select(shown, args.package)
        if shown is None:
            raise SystemExit(f"litops run: package '{args.package}' not found in the config")
        if not isinstance(shown, Container):
            print(shown)
            return
        print(f"# @package {args.package}")
    if args.resolve:
        OmegaConf.resolve(shown)
    sys.stdout.write(OmegaConf.to_yaml(shown))


SWEEP_OUTCOMES: list[Outcome] = []  # filled by Hydra's app, one per sweep job


def hydra_app(argv: list[str]) -> int:
    """Hydra's own app for -m, --info and --hydra-help; its errors come back here as exceptions."""
    import hydra

    from litops.core.config import ConfigError
    from litops.flows.config import register_schema

    register_schema()
    app = hydra.main(version_base="1.3", config_path="pkg://litops.configs", config_name=CONFIG_NAME)(sweep_point)
    saved_argv, saved_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv, os.environ["HYDRA_FULL_ERROR"] = ["litops run", *argv], "1"  # raise instead of print a traceback
    SWEEP_OUTCOMES.clear()
    try:
        app()
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:
        raise ConfigError(one_line(e)) from None
    finally:
        sys.argv = saved_argv
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
    return _report_sweep(SWEEP_OUTCOMES) if SWEEP_OUTCOMES else 0


def sweep_point(composed) -> None:
    """One sweep job: the config Hydra composed for it, typed and run."""
    from hydra.core.hydra_config import HydraConfig

    job = HydraConfig.get().job
    overrides = list(HydraConfig.get().overrides.task)
    print(f"litops run: sweep job #{job.num}: {' '.join(overrides) or '(no overrides)'}", file=sys.stderr)
    try:
        cfg = to_litops_config(composed)
    except Exception as e:
        SWEEP_OUTCOMES.append(Outcome(overrides, str(composed.registry.primary_metric), error=e))
        return
    SWEEP_OUTCOMES.append(flow_run(cfg, overrides))


def flow_run(cfg: LitopsConfig, overrides: list[str]) -> Outcome:
    """One flow run; an exception is kept (it is reported as one line)."""
    outcome = Outcome(list(overrides), cfg.registry.primary_metric)
    try:
        outcome.summary = run_flow(cfg)
    except Exception as e:
        outcome.error = e
    gate = outcome.summary.get("gate_metrics", {})
    outcome.primary_metric = gate.get("primary", outcome.primary_metric)  # `auto` as the run resolved it
    return outcome


def run_flow(cfg: LitopsConfig) -> dict[str, Any]:
    """The retrain flow on this config, holding the model's lock; a refused run never starts Prefect."""
    from litops.flows.cli_commands import prepare_env
    from litops.flows.gate_preflight import check_gate_metrics
    from litops.flows.run_lock import model_lock

    check_gate_metrics(cfg)  # a gate metric the user's data cannot give fails before Prefect starts
    with model_lock(Path(cfg.home), cfg.registry.model_name):
        prepare_env(cfg.home)
        from litops.flows.launcher import prestart_step_server, quiet_component_failures
        from litops.flows.retrain import retrain

        quiet_component_failures()
        if cfg.launcher.kind == "local":
            prestart_step_server()
        return retrain(config=cfg)


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
