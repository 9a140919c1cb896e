"""`litops eval`: evaluate any model on demand on the configured suites or the built-in benchmark.

    litops eval --model models:/lit-embedded@champion [SUITE ...] [KEY=VALUE ...] [--out DIR]

`--model` is a registered version (`models:/NAME@ALIAS`, `models:/NAME/VERSION`) or a model file.
Each SUITE names an entry of `eval.suites` (default: all of them); `benchmark` names the built-in
benchmark on the workspace's dataset (<home>/data/datasets/<data.name>), and is the default when
no suite is configured. Arguments with `=` are Hydra overrides, as for `litops run`.

The evaluate component does the work, launched the way the flow's evaluate step is, with the
resolved config (kept as config.yaml in the output folder). The metrics are printed as a table
on stdout; metrics.json and the plots stay in `--out` (default
<home>/evals/<name>-<alias or version>-<UTC time>). An error is one line on stderr; the exit
code is 2 for a bad command line or config, 1 when the evaluation fails.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

EXIT_FAILED = 1
EXIT_USAGE = 2
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # as the evaluate component tells a URI from a file
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class EvalUsageError(Exception):
    """The command line or config cannot be evaluated as asked; the message is one line."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The `eval` subcommand on `litops`'s subparsers."""
    p = subparsers.add_parser("eval", help="evaluate a registered version or a model file on the configured suites")
    p.add_argument("--model", required=True, metavar="REF",
                   help="models:/NAME@ALIAS, models:/NAME/VERSION or a model file")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="metrics.json and plots (default: <home>/evals/<name>-<alias or version>-<UTC time>)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the evaluate component's log on stderr")
    p.add_argument("items", nargs="*", default=[], metavar="SUITE|KEY=VALUE",
                   help="suites of eval.suites (default: all; 'benchmark': the built-in one) and Hydra overrides")
    return p


def main(args: argparse.Namespace) -> int:
    from litops.core.config import ConfigError

    suites = [item for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    try:
        from litops.flows.config import load_config

        cfg = load_config(overrides)
        dataset_dir, suite_names = plan(cfg, suites)
        out = Path(args.out).expanduser().resolve() if args.out else default_out(Path(cfg.home), args.model)
        model = model_ref(args.model)
    except (ConfigError, EvalUsageError) as e:
        print(f"litops eval: {e}", file=sys.stderr)
        return EXIT_USAGE
    return evaluate(cfg, model, dataset_dir, suite_names, out, args.model, args.verbose)


def plan(cfg, names: list[str]) -> tuple[Path | None, list[str]]:
    """(the built-in benchmark's dataset, or None; the configured suites to run) for the suites named."""
    from litops.core.config import BUILTIN_SUITE
    from litops.core.workspace import Workspace

    configured = [s.name for s in cfg.eval.suites]
    dataset = Workspace(Path(cfg.home)).dataset_dir(cfg.data.name)
    if not names:
        names = configured or [BUILTIN_SUITE]
    unknown = [n for n in names if n != BUILTIN_SUITE and n not in configured]
    if unknown:
        raise EvalUsageError(f"unknown suite {unknown[0]!r} (configured: {', '.join(configured) or 'none'}; "
                             f"'{BUILTIN_SUITE}': the built-in one)")
    if BUILTIN_SUITE in names and not (dataset / "val").is_dir():
        raise EvalUsageError(f"suite '{BUILTIN_SUITE}': no dataset at {dataset} (`litops data synth` makes it)")
    return (dataset if BUILTIN_SUITE in names else None), [n for n in dict.fromkeys(names) if n != BUILTIN_SUITE]


def model_ref(ref: str) -> str:
    """A models:/ URI as it is, a model file as its absolute path."""
    if _URI.match(ref):
        return ref
    path = Path(ref).expanduser()
    if not path.is_file():
        raise EvalUsageError(f"--model {ref}: not a models:/ URI and no such file")
    return str(path.resolve())


def model_slug(ref: str) -> str:
    """`<name>-<alias>` / `<name>-v<version>` of a registry URI, a model file's stem otherwise."""
    m = _MODEL_URI.match(ref)
    if m:
        tail = m["alias"] if m["alias"] else f"v{m['version']}"
        slug = f"{m['name']}-{tail}"
    else:
        slug = Path(ref.rstrip("/")).stem or "model"
    return _UNSAFE.sub("_", slug).strip("_") or "model"


def default_out(home: Path, ref: str) -> Path:
    return home / "evals" / f"{model_slug(ref)}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def evaluate(cfg, model: str, dataset_dir: Path | None, suites: list[str], out: Path, shown_ref: str,
             verbose: bool) -> int:
    """Run the evaluate component on one model; print its metrics table or its one-line error."""
    from litops.core.step_results import EvaluateResult, expect
    from litops.core.workspace import Workspace
    from litops.flows.config import write_config
    from litops.flows.launcher import ComponentFailed, JobSpec, make_launcher

    Workspace(Path(cfg.home)).create()
    out.mkdir(parents=True, exist_ok=True)
    label = model_slug(shown_ref)
    args = ["--config", str(write_config(cfg, out / "config.yaml")), "--out", str(out),
            "--model", f"{label}={model}", "--suites", ",".join(suites)]
    if dataset_dir is not None:
        args += ["--dataset-dir", str(dataset_dir)]
    log = (lambda line: print(line, file=sys.stderr)) if verbose else (lambda line: None)
    try:
        job = make_launcher(cfg.launcher.kind, cfg=cfg).run(JobSpec("eval", "evaluate", args), log=log)
    except ComponentFailed as e:
        print(f"litops eval: {component_error(e)}", file=sys.stderr)
        return EXIT_USAGE if e.kind == "config" else EXIT_FAILED
    if job.result is None:
        print("litops eval: the evaluate component reported no result", file=sys.stderr)
        return EXIT_FAILED
    result = expect(job.result, EvaluateResult)
    print(metrics_table(shown_ref, result.metrics[label], suites))
    for note in result.skipped:
        print(f"note: {note}")
    print(f"metrics.json and plots: {out}")
    return 0


def component_error(e) -> str:
    """The component's own error message, else its exit code and last line."""
    if e.error is not None and e.error.message:
        return e.error.message
    last = e.tail[-1] if e.tail else "no output"
    return f"evaluate failed with exit code {e.exit_code}: {last}"


def metrics_table(ref: str, metrics: dict[str, float], suites: list[str]) -> str:
    """Built-in metrics first, then each suite's in the order asked for."""
    def order(name: str) -> tuple[int, str]:
        suite = name.split("/", 1)[0] if "/" in name else None
        return (suites.index(suite) + 1 if suite in suites else 0, name)

    names = sorted(metrics, key=order)
    width = max([len("metric"), *map(len, names)])
    lines = [f"model {ref}", f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {metrics[name]:.4f}" for name in names]
    return "\n".join(lines)
