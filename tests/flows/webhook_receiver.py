"""A webhook on 127.0.0.1 that keeps what litops posts, and the checks of a message that the flow
tests share (test_e2e.py: promotion and rejection; test_notifications.py: failed run and rollback).

Stand-in: an http.server in a thread, instead of Slack. Its URL carries TOKEN in the path, as a
Slack URL carries its secret, so a test can look for the token where it must never be.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

TOKEN = "T0-not-a-real-secret-9f3c"  # in the webhook's path, as in a Slack URL: it must appear nowhere else
FIELDS = ("event", "model", "version", "data_version", "decision", "reason", "metrics", "run_url", "links",
          "flow_run_id", "mlflow_run_id", "text")
GUARDS = {"retrieval_i2t_r1", "retrieval_t2i_r1", "compositional_acc"}  # the embedded benchmark's


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body it is sent; `status` is what it answers."""

    def __init__(self, status: int = 200):
        self.messages: list[dict] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.messages.append({"path": self.path, "content_type": self.headers["Content-Type"],
                                          **json.loads(body)})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):  # the test's output stays readable
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def only_new(receiver: Receiver, seen: int) -> dict:
    """The one message that arrived since `seen` were counted."""
    assert len(receiver.messages) == seen + 1, [m["event"] for m in receiver.messages]
    message = receiver.messages[-1]
    assert message["path"] == f"/hooks/{TOKEN}" and message["content_type"] == "application/json"
    assert set(FIELDS) <= message.keys() and message["model"] == "lit-embedded"
    return message


def read_flow_run(flow_run_id: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id))


def assert_links_to(message: dict, state: str) -> None:
    """run_url is the Prefect UI's page of the flow run that sent it, and that run ended in `state`."""
    flow_run = read_flow_run(message["flow_run_id"])
    assert flow_run.state.type.value == state
    assert message["run_url"] == message["links"]["prefect_flow_run"]
    assert message["run_url"].startswith("http://127.0.0.1:")
    assert message["run_url"].endswith(f"/runs/flow-run/{flow_run.id}")


def assert_promotion(message: dict, run: dict[str, Any]) -> None:
    """The message of a flow run (its summary `run`) that promoted the first champion."""
    assert (message["event"], message["decision"], message["version"]) == ("champion_promoted", "promoted",
                                                                           run["version"])
    assert message["data_version"] == run["data_version"] and message["reason"] == run["reason"]
    assert message["mlflow_run_id"] == run["run_id"]
    assert message["metrics"]["zeroshot_top1"] == {"challenger": pytest.approx(run["metrics"]["zeroshot_top1"]),
                                                   "champion": None}
    assert GUARDS <= message["metrics"].keys()
    assert_links_to(message, "COMPLETED")


def assert_rejection(message: dict, run: dict[str, Any], champion_run: dict[str, Any]) -> None:
    """The message of a flow run whose challenger lost to the champion that `champion_run` promoted."""
    assert (message["event"], message["decision"], message["version"]) == ("challenger_rejected", "rejected",
                                                                           run["version"])
    assert message["champion_version"] == champion_run["version"] and message["reason"] == run["reason"]
    assert message["data_version"] == champion_run["data_version"]
    top1 = message["metrics"]["zeroshot_top1"]  # the champion re-evaluated beside the challenger
    assert top1["challenger"] == pytest.approx(run["metrics"]["zeroshot_top1"]) and top1["champion"] is not None
    assert_links_to(message, "COMPLETED")


def flow_run_logs(flow_run_ids: list[str]) -> list[str]:
    """Every line these flow runs (and their steps' output) logged to the Prefect server."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # the last lines reach the server before they are read
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(i) for i in flow_run_ids]))
    lines: list[str] = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(log_filter, limit=200, offset=len(lines)):
            lines += [log.message for log in page]
    return lines


def files_holding_token(home: Path) -> list[str]:
    """Files under a litops home that the webhook URL was written to (there must be none)."""
    return [str(p) for p in Path(home).rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
