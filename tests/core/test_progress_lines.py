"""litops.core.progress: protocol lines under a launcher (rate-limited), a tqdm bar on a terminal."""

from __future__ import annotations

import io

import pytest

from litops.core import progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_rate_limited_but_the_first_and_last_always_go_out():
    clock, sent = FakeClock(), []
    bar = progress.LineProgress("train", 1000, "step", clock=clock, write=sent.append)
    for _ in range(1000):
        clock.now += 0.01  # 100 updates a second for 10 s
        bar.update(1, loss="0.5")
    bar.close()
    events = [progress.parse(line) for line in sent]
    assert all(e is not None for e in events)
    assert events[0]["done"] == 0 and events[-1]["done"] == 1000
    assert len(sent) <= 10 / progress.MIN_INTERVAL_S + 2, len(sent)
    assert events[-1] == {"task": "train", "done": 1000, "total": 1000, "unit": "step", "postfix": {"loss": "0.5"}}


def test_close_reports_a_loop_that_stopped_early():
    clock, sent = FakeClock(), []
    with progress.LineProgress("evaluate", 100, "item", clock=clock, write=sent.append) as bar:
        clock.now = 1.0
        bar.update(30)
        bar.update(10)  # same instant: held back by the rate limit until close
    assert [progress.parse(line)["done"] for line in sent] == [0, 30, 40]


def test_a_resumed_run_starts_at_its_initial_count():
    sent: list[str] = []
    progress.LineProgress("train", 300, "step", initial=150, write=sent.append)
    assert progress.parse(sent[0])["done"] == 150


@pytest.mark.parametrize("line", ["LITOPS_PROGRESS {\"task\": \"tr", "LITOPS_PROGRESS [1, 2]", "LITOPS_PROGRESS {}",
                                  "train: 10%", "LITOPS_RESULT {}"])
def test_parse_rejects_torn_and_foreign_lines(line):
    assert progress.parse(line) is None


def test_mode_follows_the_environment_then_the_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress.mode() == "lines"
    monkeypatch.setattr("sys.stderr", Tty())
    assert progress.mode() == "bar"
    assert isinstance(progress.start("train", 3), progress.BarProgress)
    monkeypatch.setenv(progress.MODE_ENV, "lines")
    assert isinstance(progress.start("train", 3), progress.LineProgress)


def test_bar_mode_draws_a_tqdm_bar(monkeypatch, capsys):
    monkeypatch.setenv(progress.MODE_ENV, "bar")
    with progress.start("train", 4, unit="step") as bar:
        for _ in range(4):
            bar.update(1, loss="0.25")
    err = capsys.readouterr().err
    assert "train: 100%" in err and "4/4" in err and "loss=0.25" in err
    assert progress.PREFIX not in err


def test_silent_progress_writes_nothing(capsys):
    with progress.start("train", 10, silent=True) as bar:
        bar.update(10)
    assert capsys.readouterr() == ("", "")
