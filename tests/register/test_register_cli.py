"""`python -m litops.register`: result lines, and one clear line for an unusable store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from litops.core.component_cli import run_main
from litops.core.step_results import ChampionResult, LookupResult, parse_result
from litops.register.cli import main


def _run_in_process(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run_main(main, "register", argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_cli_in_process_lookup_champion_gate(store, tmp_path, capsys):
    code, out, _ = _run_in_process(["lookup", "--tracking-uri", store.uri, "--data-version", "x",
                                    "--config-hash", "y", "--model-name", "cli-none"], capsys)
    assert code == 0 and parse_result(out.splitlines()) == LookupResult(version=None, model_uri=None, state=None,
                                                                        decided=None, train_run_id=None,
                                                                        champion_version=None, champion_uri=None)

    code, out, _ = _run_in_process(["champion", "--tracking-uri", store.uri, "--model-name", "cli-none"], capsys)
    assert code == 0 and parse_result(out.splitlines()) == ChampionResult(version=None, model_uri=None)

    name = "cli-gate"
    (v1,) = store.fake_versions(name, 1)
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"metrics": {"zeroshot_top1": 0.9, "retrieval_i2t_r1": 0.5,
                                               "retrieval_t2i_r1": 0.5, "compositional_acc": 0.5}}))
    code, out, _ = _run_in_process(["gate", "--tracking-uri", store.uri, "--model-name", name, "--version", str(v1),
                                    "--challenger-metrics", str(metrics)], capsys)
    res = parse_result(out.splitlines())
    assert code == 0 and res.promoted and res.champion_version == v1 and "| zeroshot_top1 |" in res.markdown

    code, out, _ = _run_in_process(["champion", "--tracking-uri", store.uri, "--model-name", name], capsys)
    assert parse_result(out.splitlines()) == ChampionResult(version=v1, model_uri=f"models:/{name}@champion")

    code, _, err = _run_in_process(["rollback", "--tracking-uri", store.uri, "--model-name", name], capsys)
    assert code != 0 and err.strip().count("\n") == 0 and "no previous champion" in err


@pytest.mark.parametrize("uri_kind", ["missing-folder", "http"])
def test_unusable_store_is_one_clear_line(uri_kind, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    uri = (f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}" if uri_kind == "missing-folder"
           else "http://127.0.0.1:9")
    code, out, err = _run_in_process(["models", "--tracking-uri", uri], capsys)
    assert code not in (0, None)
    assert err.strip().count("\n") == 0 and uri in err and "Traceback" not in err
    assert "LITOPS_RESULT" not in out
    assert not (tmp_path / "no").exists()
    assert Path(tmp_path).is_dir()


def test_cli_models_and_lookup_in_subprocesses(store):
    """`python -m litops.register models` and `lookup` in fresh interpreters (started by the fixture)."""
    out = {}
    for name in ("models", "lookup"):
        rc, stdout, stderr = store.finish(name)
        assert rc == 0, stderr[-2000:]
        out[name] = (stdout, parse_result(stdout.splitlines()))
    stdout, models = out["models"]
    assert "v1" in stdout and "data_version" in stdout  # the table
    assert models.model_name == "lit-embedded"
    assert [r["version"] for r in models.rows] == [1]
    assert models.rows[0]["data_version"] == "0123456789abcdef.dir"
    lookup = out["lookup"][1]
    assert (lookup.version, lookup.model_uri) == (1, "models:/lit-embedded/1")
    assert isinstance(lookup, LookupResult) and lookup.train_run_id == store.run_id
