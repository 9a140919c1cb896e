"""`litops`: the command line. Subcommands run flows or components; errors are one line on stderr.

`litops run` is a Hydra application (flows/cli_run.py); the other subcommands are argparse
(this file) and do their work in flows/cli_commands.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

from litops.flows import cli_commands as do

Handler = Callable[[argparse.Namespace], int]

EPILOG = """examples:
  litops run                          retrain on the embedded default
  litops run train.steps=600 loss=softmax
  litops run -m loss=sigmoid,softmax  one run per sweep point, then a table (`litops run --help`)
  litops data synth                   generate + version the embedded benchmark
  litops data add ./my-shards         ingest user shards (bad samples are quarantined)
  litops data index s3://bucket/laion write the shard manifest + offset indexes of shards in place
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
RUN_HELP = "run the retrain flow once, or a sweep (a Hydra app: `litops run --help`)"
REGISTRY_OVERRIDES = "registry.model_name=my-model mlflow.tracking_uri=http://mlflow:5000"


class Commands:
    """Adds subcommands with a description, examples and help for every argument; binds each to its
    handler and keeps its parser, so an error names the subcommand's usage."""

    def __init__(self, subparsers, words: str = "", parsers: dict[str, argparse.ArgumentParser] | None = None):
        self.subparsers, self.words = subparsers, words
        self.parsers = parsers if parsers is not None else {}  # by the subcommand's words, e.g. "data add"

    def nested(self, parser: argparse.ArgumentParser, dest: str) -> "Commands":
        """The subcommands of a subcommand (`litops data add`), kept in the same table."""
        words = f"{self.words} {parser.prog.split()[-1]}".strip()
        subparsers = parser.add_subparsers(dest=dest, required=True, metavar="SUB", help=f"the {words} command to run")
        return Commands(subparsers, words, self.parsers)

    def add(self, name: str, summary: str, description: str, examples: list[str],
            handler: Handler | None = None) -> argparse.ArgumentParser:
        """A subcommand; `handler` runs it (none: a group of subcommands, or one main() hands on)."""
        words = f"{self.words} {name}".strip()
        epilog = "examples:\n" + "\n".join(f"  litops {words} {example}".rstrip() for example in examples)
        parser = self.subparsers.add_parser(name, help=summary, description=description, epilog=epilog,
                                            formatter_class=argparse.RawDescriptionHelpFormatter)
        bind(parser, handler)
        self.parsers[words] = parser
        return parser


def bind(parser: argparse.ArgumentParser, handler: Handler | None) -> None:
    """The innermost subcommand's defaults win: `args.handler` runs it, `args.parser` reports its errors."""
    parser.set_defaults(parser=parser)
    if handler is not None:
        parser.set_defaults(handler=handler)


def add_overrides(parser: argparse.ArgumentParser, example: str) -> argparse.ArgumentParser:
    """The Hydra overrides of a subcommand that reads the config; added last, after its other positionals."""
    parser.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help=f"Hydra overrides of the config, e.g. {example}")
    return parser


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each subcommand's parser by its words, e.g. "data add"."""
    top = argparse.ArgumentParser(prog="litops", description="Train, evaluate and promote image-text models.",
                                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", help="`litops COMMAND --help` tells more")
    sub.add_parser("run", help=RUN_HELP, add_help=False)  # listed only: main() hands `run` to Hydra
    commands = Commands(sub)
    _add_data(commands.nested(commands.add("data", "data commands: synth, add, index, checkout",
                                           "Generate, ingest, index and restore versioned datasets (DVC under <home>/data).",
                                           ["synth", "add ./my-shards", "index s3://bucket/laion",
                                            "checkout --version lit-embedded@champion"]),
                              "data_command"))
    _add_registry(commands)
    _add_service(commands)
    _add_platform(commands)
    # `litops eval` comes from its own module (flows/eval_command.py), wired when it is there.
    if importlib.util.find_spec("litops.flows.eval_command") is not None:
        from litops.flows import eval_command

        commands.parsers["eval"] = eval_command.add_parser(sub)
        bind(commands.parsers["eval"], eval_command.main)
    return top, commands.parsers


def _add_data(commands: Commands) -> None:
    synth = commands.add("synth", "generate and version the embedded benchmark",
                         "Generate the embedded image-text benchmark (deterministic for data.seed) and commit it\n"
                         "as a data version.", ["", "data.n_train=4000 data.seed=1"],
                         lambda args: do.component("data", ["synth"], args.overrides))
    add_overrides(synth, "data.n_train=4000 data.seed=1")
    add = commands.add("add", "ingest user shards or an image+caption folder",
                       "Ingest a .tar shard, a folder (shards or image+caption pairs), a brace-expanded shard list\n"
                       "or s3://...; bad samples are quarantined with counts by reason. Re-adding the same content\n"
                       "is a no-op. A new data version tells a running `litops deploy` to retrain.",
                       ["./my-shards", "'./shards/part-{000..015}.tar' data.workers=4",
                        "s3://bucket/shards/ data.max_bad_fraction=0.05"],
                       lambda args: do.data_add(args.path, args.overrides, in_place=args.in_place))
    add.add_argument("path", metavar="SOURCE", help="a .tar shard, a folder, a brace list of shards or an s3:// URL")
    add.add_argument("--in-place", action="store_true", help="s3:// only: check and index the shards where they are "
                     "(bad samples excluded, nothing rewritten) and version only their manifest")
    add_overrides(add, "data.workers=4 data.max_bad_fraction=0.05")
    index = commands.add("index", "write the shard manifest and offset indexes of shards in place",
                         "Read every shard of a folder or an s3:// prefix once and write <SOURCE>/manifest.json\n"
                         "(per split: shards, complete samples, bytes, sha256, the ETag on S3) and one\n"
                         "<shard>.tar.idx of sample offsets beside each shard: a reader then needs neither a\n"
                         "listing nor a tar header. Layout:\n"
                         "<SOURCE>/<split>/*.tar, or a flat img2dataset folder (00000.tar, ...) that becomes one\n"
                         "split. Where img2dataset's <shard>_stats.json exists, its `successes` must equal the\n"
                         "tar's complete samples (image + .txt). The endpoint and region come from storage.*,\n"
                         "credentials from the environment.",
                         ["./laion-out", "./laion-out --split val",
                          "s3://bucket/laion storage.endpoint_url=http://minio:9000"], data_index)
    index.add_argument("source", metavar="SOURCE", help="a folder or s3://bucket/prefix holding the shards")
    index.add_argument("--split", default=None, metavar="NAME",
                       help="the split a flat folder's shards form (default: train)")
    add_overrides(index, "storage.endpoint_url=http://minio:9000 storage.region=eu-west-1")
    checkout = commands.add("checkout", "restore a data version, or a model's training data",
                            "Restore a data version, or the data a model version was trained on, into\n"
                            "<home>/data-checkouts/<md5>/ (the data repo's branch does not move).",
                            ["--version lit-embedded@champion", "--version lit-embedded/3",
                             "--version 0123456789abcdef0123456789abcdef.dir"],
                            lambda args: do.component("data", ["checkout", "--version", args.version], args.overrides))
    checkout.add_argument("--version", required=True, metavar="REF", help="<md5>.dir | MODEL@ALIAS | MODEL/N")
    add_overrides(checkout, "home=/srv/litops")
    # Listed only: main() hands `data plan` to litops.data.plan_cli (no config, no launcher), whose
    # `litops data plan --help` describes the arguments.
    commands.add("plan", "capacity plan: S3 egress, GET/s, cache disk, first batch per cluster shape",
                 "Plan what streaming a sharded dataset from S3 asks of S3 and of each node, per cluster shape\n"
                 "(`litops data plan --help` lists the arguments).",
                 ["--samples 1e9 --shards 100000 --shard-mb 500 --nodes 4 32 128 --gpus-per-node 8 --readers 4 "
                  "--batch 32768 --step-seconds 0.5"])


def _add_registry(commands: Commands) -> None:
    models = commands.add("models", "list registered versions",
                          "List the model's registered versions, newest first: aliases, key metrics, data version,\n"
                          "gate decision. --format json prints them as one JSON document for scripts.",
                          ["", "--format json", REGISTRY_OVERRIDES],
                          lambda args: do.models(args.format, args.overrides))
    models.add_argument("--format", choices=("table", "json"), default="table",
                        help="table (default) or json: {model_name, versions: [{version, aliases, metrics, "
                             "data_version, decision, run_id, ...}]}")
    add_overrides(models, REGISTRY_OVERRIDES)
    promote = commands.add("promote", "move the champion alias to a version",
                           "Move the champion alias to a registered version by hand (a human override of the gate).",
                           ["--version 3"],
                           lambda args: do.component("register", ["promote", "--version", str(args.version)],
                                                     args.overrides))
    promote.add_argument("--version", type=int, required=True, metavar="N",
                         help="the registered version to make champion (see `litops models`)")
    add_overrides(promote, REGISTRY_OVERRIDES)
    add_overrides(commands.add("rollback", "move the champion alias back to the previous champion",
                               "Give the champion alias back to the version that held it before; the current one\n"
                               "is tagged rolled back.", [""], lambda args: do.rollback(args.overrides)),
                  REGISTRY_OVERRIDES)


def _add_service(commands: Commands) -> None:
    server = commands.add("server", "the workspace's persistent Prefect server",
                          "Start, stop or check one persistent Prefect server for the workspace (SQLite under\n"
                          "<home>/prefect, 127.0.0.1). `litops run`, `deploy` and `data add` use it when it is up.",
                          ["start", "status", "stop home=/srv/litops"],
                          lambda args: do.server(args.action, args.overrides))
    server.add_argument("action", choices=("start", "stop", "status"), help="start | stop | status")
    add_overrides(server, "home=/srv/litops")
    deploy = commands.add("deploy", "serve the retrain flow on its cron schedule and on new data",
                          "Serve the retrain deployment: its cron schedule (schedule.cron) plus a run whenever\n"
                          "`litops data add` commits new data; one run at a time. The config, composed once with\n"
                          "the overrides, becomes the deployment's parameter (a form in Prefect's UI).", ["", "--apply-only", "train.steps=600 'schedule.cron=0 4 * * *'"],
                          lambda args: do.deploy(args.overrides, args.apply_only))
    deploy.add_argument("--apply-only", action="store_true", help="register the deployment and exit (no runner)")
    add_overrides(deploy, "train.steps=600 'schedule.cron=0 4 * * *'")


def _add_platform(commands: Commands) -> None:
    k8s = commands.add("k8s", "Kubernetes commands: render-job", "Kubernetes helpers that need no cluster.",
                       ["render-job train.nodes=2 train.gpus_per_node=8"])
    render_job = commands.nested(k8s, "k8s_command").add(
        "render-job", "print the train Job (and Service) a run would submit",
        "Print the YAML of the train Job (and the headless Service of a multi-node run) that a\n"
        "Kubernetes run would submit, without a cluster.", ["", "train.nodes=2 train.gpus_per_node=8"],
        lambda args: do.render_job(args.overrides))
    add_overrides(render_job, "train.nodes=2 train.gpus_per_node=8")
    infra = commands.add("infra", "infrastructure commands: render", "The platform manifests of infra/.",
                         ["render --overlay gpu"])
    render = commands.nested(infra, "infra_command").add(
        "render", "print the manifests of infra/ (base or an overlay)",
        "Print the platform manifests (kustomize layout under infra/), base or an overlay.", ["", "--overlay gpu"],
        lambda args: do.render_infra(args.overlay))
    render.add_argument("--overlay", default="base", help="base | dev | gpu (default: base)")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse a non-`run` command line; an unknown argument is reported with its subcommand's usage."""
    top, _ = build_parser()
    args, unknown = top.parse_known_args(argv)
    if unknown and hasattr(args, "overrides") and not any(a.startswith("-") for a in unknown):
        # argparse matches every positional at the first one: `data index SRC --split val KEY=VALUE`
        # leaves the overrides after the option unclaimed; they are overrides all the same.
        args.overrides, unknown = [*args.overrides, *unknown], []
    if unknown:
        getattr(args, "parser", top).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def data_index(args: argparse.Namespace) -> int:
    """`litops data index`: a local source as an absolute path (the component may run elsewhere)."""
    source = args.source if "://" in args.source else str(Path(args.source).expanduser().resolve())
    return do.component("data", ["index", source, *(["--split", args.split] if args.split else [])], args.overrides)


def dispatch(args: argparse.Namespace) -> int:
    return args.handler(args)


def error_message(e: BaseException) -> str:
    """An exception as the one line litops prints for it."""
    from litops.core.config import ConfigError
    from litops.core.step_results import UnreadableRecord
    from litops.flows.launcher import ComponentFailed
    from litops.flows.run_lock import RunInProgress
    from litops.flows.server import ServerError

    if isinstance(e, ConfigError):
        return f"config error: {e}"
    if isinstance(e, (ComponentFailed, RunInProgress, ServerError, UnreadableRecord)):
        return str(e)
    return f"{type(e).__name__}: {e} (set LITOPS_DEBUG=1 for the traceback)"


def main(argv: list[str] | None = None) -> None:
    from litops.core import faults
    from litops.core.component_cli import EXIT_CONFIG_ERROR
    from litops.core.config import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        faults.armed()  # a misspelt test fault point fails here, before any server starts
        if argv[:1] == ["run"]:
            from litops.flows import cli_run

            code = cli_run.main(argv[1:])
        elif argv[:2] == ["data", "plan"]:
            from litops.data import plan_cli

            code = plan_cli.main(argv[2:])
        else:
            code = dispatch(parse(argv))
    except ConfigError as e:
        print(f"litops: {error_message(e)}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except KeyboardInterrupt:
        print("litops: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:  # one readable failure, not a traceback wall
        if os.environ.get("LITOPS_DEBUG"):
            raise
        print(f"litops: {error_message(e)}", file=sys.stderr)
        raise SystemExit(getattr(e, "exit_code", 1) or 1) from None
    raise SystemExit(code)
