"""Typed step results and error records: what a component prints is what the flow reads back."""

from __future__ import annotations

import json

import pytest

from litops.core import step_results as sr
from litops.core.component_cli import UserError, run_main
from litops.core.s3_retries import S3Unavailable
from litops.core.step_errors import (ERRORS_ENV, EXIT_BAD_INPUT, EXIT_CONFIG_ERROR, EXIT_UNAVAILABLE, ErrorRecord,
                                     kind_of_exit, retried)
from litops.core.step_results import RESULT_KINDS, UnreadableRecord, parse_line, parse_result

EXAMPLES: list[sr.StepResult] = [
    sr.DataVersionResult(command="add", name="embedded", data_version="0" * 32 + ".dir", dataset_dir="/h/ds",
                         git_sha="abc", splits={"train": 48, "val": 12}, committed=True, seconds=1.5,
                         details={"by_reason": {"truncated": 2}, "already_ingested": False}),
    sr.DataVersionResult(command="pull", name="embedded", data_version="1" * 32 + ".dir", dataset_dir="/h/ds",
                         git_sha="abc", splits={}, committed=None, seconds=0.1),
    sr.CheckoutResult(name="embedded", ref="lit-embedded@champion", data_version="2" * 32 + ".dir",
                      dataset_dir="/h/co", splits={"val": 12}, fetched=3, verified_shards=0, seconds=0.2,
                      model="lit-embedded", model_version=4, run_id="r1"),
    sr.IndexResult(source="s3://b/laion", manifest="s3://b/laion/manifest.json", digest="d" * 64,
                   splits={"train": {"shards": 2, "samples": 10, "bytes": 999}}, indexed=2, reused=0, written=True,
                   seconds=0.3),
    sr.TrainResult(model_path="/ck/model.pt", steps=12, resumed_from=None, final_loss=1.25, samples_per_s=80.5,
                   run_id="r1", config_hash="c0ffee"),
    sr.EvaluateResult(metrics={"challenger": {"zeroshot_top1": 0.5, "colours/top1": 0.25}},
                      models={"challenger": "/ck/model.pt"}, splits={"val": {"samples": 50}},
                      suites={"colours": {"kind": "zeroshot", "images": 30}}, plots=["/o/recall_at_k.png"],
                      artifacts=["eval/recall_at_k.png"], logged_model="challenger", run_id="r1",
                      skipped=["loss curve skipped"], seconds=2.0),
    sr.GateMetricsResult(primary="zeroshot_top1", guards=["retrieval_i2t_r1"], reported=["zeroshot_top1",
                                                                                          "retrieval_i2t_r1"]),
    sr.LookupResult(version=3, model_uri="models:/m/3", state="registered", decided=False, train_run_id="r1",
                    champion_version=2, champion_uri="models:/m@champion"),
    sr.RegisterResult(version=3, created=True, model_uri="models:/m/3", model_id="m-1", run_id="r1",
                      log_seconds=0.5, total_seconds=0.75),
    sr.GateDecision(promoted=True, reason="beats v2", markdown="| metric |", version=3, champion_version=3,
                    resumed=True),
    sr.ChampionResult(version=None, model_uri=None),
    sr.PromoteResult(version=3, previous_champion=None, model_uri="models:/m@champion"),
    sr.RollbackResult(version=2, rolled_back_from=3, model_uri="models:/m@champion", data_version="x.dir",
                      run_id="r0", metrics={"zeroshot_top1": 0.4}, rolled_back_metrics={"zeroshot_top1": 0.3}),
    sr.ModelsResult(model_name="m", rows=[{"version": 3, "aliases": ["champion"], "metrics": {"zeroshot_top1": 0.5}}]),
]


def test_every_kind_has_an_example():
    assert {type(r) for r in EXAMPLES} == set(RESULT_KINDS.values())
    assert len(RESULT_KINDS) == len({cls.KIND for cls in RESULT_KINDS.values()})


@pytest.mark.parametrize("result", EXAMPLES, ids=lambda r: r.KIND)
def test_each_result_round_trips_through_its_line(result):
    line = result.to_line()
    assert line.startswith("LITOPS_RESULT ") and "\n" not in line
    payload = json.loads(line[len("LITOPS_RESULT "):])
    assert payload["kind"] == result.KIND and payload["schema"] == result.SCHEMA
    back = parse_line(line)
    assert type(back) is type(result) and back == result


def test_the_last_result_line_wins_and_none_is_none():
    first, last = EXAMPLES[4], EXAMPLES[5]
    assert parse_result(["log", first.to_line(), "more log", "  " + last.to_line() + "  "]) == last
    assert parse_result(["log", "LITOPS_PROGRESS {}"]) is None


def test_an_unknown_kind_or_schema_is_refused_in_one_line():
    payload = EXAMPLES[4].to_json()
    with pytest.raises(UnreadableRecord, match="unknown result kind 'trian'"):
        sr.from_json({**payload, "kind": "trian"})
    with pytest.raises(UnreadableRecord, match="unknown result kind None"):
        sr.from_json({k: v for k, v in payload.items() if k != "kind"})
    with pytest.raises(UnreadableRecord, match="'train' result of schema 2: this side reads schema 1"):
        sr.from_json({**payload, "schema": 2})
    with pytest.raises(UnreadableRecord, match="'train' result of schema None"):
        sr.from_json({k: v for k, v in payload.items() if k != "schema"})
    with pytest.raises(UnreadableRecord, match="not JSON"):
        parse_line("LITOPS_RESULT {torn")
    with pytest.raises(UnreadableRecord, match="JSON object, not list"):
        parse_line("LITOPS_RESULT [1]")


def test_fields_must_match_the_schema_exactly():
    payload = EXAMPLES[4].to_json()
    with pytest.raises(UnreadableRecord, match=r"unknown fields \['epochs'\]"):
        sr.from_json({**payload, "epochs": 3})
    with pytest.raises(UnreadableRecord, match=r"missing fields \['config_hash', 'steps'\]"):
        sr.from_json({k: v for k, v in payload.items() if k not in ("steps", "config_hash")})
    without_optional = {k: v for k, v in EXAMPLES[8].to_json().items() if k not in ("log_seconds", "total_seconds")}
    assert sr.from_json(without_optional).log_seconds is None  # a field with a default may be left out


def test_expect_names_the_kind_asked_for():
    assert sr.expect(EXAMPLES[4], sr.TrainResult) is EXAMPLES[4]
    with pytest.raises(UnreadableRecord, match="expected a 'lookup' result, got a 'train' result"):
        sr.expect(EXAMPLES[4], sr.LookupResult)
    with pytest.raises(UnreadableRecord, match="expected a 'train' result, got no result"):
        sr.expect(None, sr.TrainResult)


@pytest.mark.parametrize(("kind", "code", "again", "line"), [
    ("config", EXIT_CONFIG_ERROR, False, "litops train: config error: bad key"),
    ("input", EXIT_BAD_INPUT, False, "litops train: error: bad key"),
    ("diverged", EXIT_BAD_INPUT, False, "litops train: error: bad key"),
    ("unavailable", EXIT_UNAVAILABLE, True, "litops train: error: bad key"),
    ("interrupted", 130, True, "litops train: interrupted: bad key"),
])
def test_an_error_kind_gives_its_exit_code_retry_and_line(kind, code, again, line):
    record = ErrorRecord("train", kind, "bad key")
    assert record.exit_code == code and record.error_kind.retried is again and record.line() == line
    assert retried(code, record) is again
    assert ErrorRecord.parse_line(record.to_line()) == record


def test_without_a_record_the_exit_code_decides():
    assert kind_of_exit(EXIT_CONFIG_ERROR).name == "config" and kind_of_exit(EXIT_BAD_INPUT).name == "input"
    assert kind_of_exit(1) is None and kind_of_exit(-9) is None
    assert not retried(EXIT_CONFIG_ERROR, None) and not retried(EXIT_BAD_INPUT, None)
    assert retried(EXIT_UNAVAILABLE, None) and retried(1, None) and retried(-9, None)


def test_unreadable_error_records_are_refused():
    with pytest.raises(UnreadableRecord, match="unknown error kind 'oops'"):
        ErrorRecord("data", "oops")
    with pytest.raises(UnreadableRecord, match="schema 2"):
        ErrorRecord.parse_line('LITOPS_ERROR {"schema": 2, "component": "data", "kind": "input", "message": ""}')
    with pytest.raises(UnreadableRecord, match="as strings"):
        ErrorRecord.parse_line('LITOPS_ERROR {"schema": 1, "component": "data", "kind": "input", "message": 3}')


def test_user_errors_carry_their_kinds_exit_code():
    from litops.train.divergence import TrainingDiverged

    assert UserError("x").exit_code == EXIT_BAD_INPUT
    assert (S3Unavailable("s3://b/k is unavailable").kind, S3Unavailable("x").exit_code) == ("unavailable", 69)
    assert (TrainingDiverged("nan").kind, TrainingDiverged("nan").exit_code) == ("diverged", EXIT_BAD_INPUT)


def _failing_main(error: BaseException):
    def main(argv):
        raise error
    return main


@pytest.mark.parametrize(("error", "kind"), [(UserError("no such folder: /x"), "input"),
                                             (S3Unavailable("s3://b/k still failing"), "unavailable"),
                                             (KeyboardInterrupt(), "interrupted")])
def test_run_main_prints_a_line_by_hand_and_a_record_under_a_launcher(error, kind, monkeypatch, capsys):
    monkeypatch.delenv(ERRORS_ENV, raising=False)
    with pytest.raises(SystemExit) as by_hand:
        run_main(_failing_main(error), "data", [])
    record = ErrorRecord("data", kind, str(error) if kind != "interrupted" else "")
    assert by_hand.value.code == record.exit_code
    assert capsys.readouterr().err.splitlines() == [record.line()]

    monkeypatch.setenv(ERRORS_ENV, "records")
    with pytest.raises(SystemExit) as launched:
        run_main(_failing_main(error), "data", [])
    assert launched.value.code == record.exit_code
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and ErrorRecord.parse_line(err[0]) == record


def test_run_main_reports_a_config_error_as_its_kind(monkeypatch, capsys):
    from litops.core.config import ConfigError

    monkeypatch.setenv(ERRORS_ENV, "records")
    with pytest.raises(SystemExit) as done:
        run_main(_failing_main(ConfigError("unknown config key 'data.n_trian'")), "train", [])
    assert done.value.code == EXIT_CONFIG_ERROR
    assert ErrorRecord.parse_line(capsys.readouterr().err) == ErrorRecord("train", "config",
                                                                          "unknown config key 'data.n_trian'")
