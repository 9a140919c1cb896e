"""The argparse subcommands: described help pages, their own usage on errors, results on stdout, errors on stderr."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from litops.core.component_cli import EXIT_BAD_INPUT
from litops.core.step_errors import ErrorRecord
from litops.flows.cli import build_parser
from litops.flows.launcher import OutputRelay
from litops.flows.progress import ProgressRenderer

CONFIG_READERS = {"data synth", "data add", "data index", "data checkout", "models", "promote", "rollback", "server", "deploy",
                  "k8s render-job"}
GROUPS = {"data", "k8s", "infra"}  # only name their subcommands


def litops(args: list[str], home: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"LITOPS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "litops.flows", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def own_parsers() -> dict[str, argparse.ArgumentParser]:
    return {name: parser for name, parser in build_parser()[1].items() if name != "eval"}  # eval: its own module


def test_every_subcommand_has_a_description_examples_and_help_for_each_argument():
    parsers = own_parsers()
    assert CONFIG_READERS | GROUPS | {"infra render"} <= parsers.keys()
    for name, parser in parsers.items():
        assert parser.description and parser.epilog.startswith("examples:\n  litops " + name), name
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_only_subcommands_that_read_the_config_take_overrides_and_their_examples_fit():
    for name, parser in own_parsers().items():
        overrides = [a for a in parser._actions if a.dest == "overrides"]
        assert bool(overrides) == (name in CONFIG_READERS), name
        if name in ("models", "promote", "rollback"):
            assert "train.steps" not in overrides[0].help and "registry.model_name" in overrides[0].help


def test_promote_help_has_a_description_and_explains_version(tmp_path):
    out = litops(["promote", "--help"], tmp_path / "home", timeout=60)
    assert out.returncode == 0
    assert out.stdout.startswith("usage: litops promote")
    assert "Move the champion alias" in out.stdout and "the registered version to make champion" in out.stdout
    assert "examples:\n  litops promote --version 3" in out.stdout


def test_a_subcommand_error_prints_that_subcommands_usage(tmp_path):
    out = litops(["models", "--format", "json", "--colour"], tmp_path / "home", timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("usage: litops models") and "unrecognized arguments: --colour" in out.stderr
    nested = litops(["data", "checkout", "--version", "x", "--bogus"], tmp_path / "home", timeout=60)
    assert nested.returncode == 2 and nested.stderr.startswith("usage: litops data checkout")


def test_models_json_is_a_document_and_a_component_error_goes_to_stderr(tmp_path):
    """An empty registry: `models --format json` lists no versions; `promote` fails in one line on stderr."""
    home = tmp_path / "home"
    listed = litops(["models", "--format", "json"], home)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"model_name": "lit-embedded", "versions": []}
    promoted = litops(["promote", "--version", "9"], home)
    assert promoted.returncode == EXIT_BAD_INPUT
    assert promoted.stdout == ""
    errors = [line for line in promoted.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("litops register: error:"), promoted.stderr


def test_the_relay_sends_a_components_error_record_to_its_error_stream_as_one_line():
    out, err = [], []
    relay = OutputRelay(ProgressRenderer(err.append, live=False), error=err.append, log=out.append)
    record = ErrorRecord("register", "input", "no version 9")
    for line in ("loading", record.to_line(), "litops register: error: a line of the log"):
        relay.feed(line.encode())
    assert out == ["loading", "litops register: error: a line of the log"]
    assert err == ["litops register: error: no version 9"] and relay.errors == [record]
    assert ErrorRecord("data", "config", "bad key").line() == "litops data: config error: bad key"
    assert ErrorRecord("x", "interrupted").line() == "litops x: interrupted"


@pytest.mark.parametrize("repeat_last", [1, 3])
def test_a_log_gets_at_most_one_progress_line_per_tenth_and_100_percent_once(repeat_last):
    """Events 0..100 (and a 100% repeated, as a closing bar sends it) relayed to a log, not a terminal."""
    lines: list[str] = []
    relay = OutputRelay(ProgressRenderer(lines.append, live=False))
    events = [*range(0, 101), *[100] * repeat_last]
    for done in events:
        relay.feed(f'LITOPS_PROGRESS {{"task": "evaluate challenger", "done": {done}, "total": 100, '
                   f'"unit": "item", "postfix": {{}}}}'.encode())
    relay.close()
    assert len(lines) <= 11, lines
    assert [line.split("%")[0].split(":")[-1].strip() for line in lines] == [str(p) for p in range(0, 101, 10)]
    assert sum("100%" in line for line in lines) == 1
