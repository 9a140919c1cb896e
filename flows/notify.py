"""One webhook message per event: its fields, its JSON or Slack form, and its delivery.

The URL comes from the environment or a Prefect Secret block (`notify.webhook_url` names which),
and is never logged. Delivery is best effort: a message that cannot be delivered costs one
warning line, never the run.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from litops.core.config import NotifyConfig

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 2  # one retry: a webhook that is down for longer is reported, not waited for
RETRY_STATUSES = (429, 500, 502, 503, 504)

Warn = Callable[[str], None]


@dataclass
class Message:
    """What happened to which model version; `metrics` maps each gate metric to its values by role."""

    event: str  # champion_promoted | challenger_rejected | retrain_failed | rollback
    model: str | None
    version: int | None
    data_version: str | None
    decision: str  # promoted | rejected | failed | crashed | rolled_back
    reason: str
    champion_version: int | None = None
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    flow_run_id: str | None = None
    mlflow_run_id: str | None = None
    links: dict[str, str | None] = field(default_factory=dict)  # prefect_flow_run, mlflow_run

    @property
    def run_url(self) -> str | None:
        return self.links.get("prefect_flow_run") or self.links.get("mlflow_run")

    def title(self) -> str:
        model, v = self.model or "litops", f"v{self.version}" if self.version is not None else ""
        if self.event == "champion_promoted":
            return f"{model} {v} is the new champion"
        if self.event == "challenger_rejected":
            stays = f" (champion stays v{self.champion_version})" if self.champion_version is not None else ""
            return f"{model} {v} was not promoted{stays}"
        if self.event == "rollback":
            return f"{model}: champion rolled back to {v}"
        return f"retrain of {model} {self.decision}" + (f" (at {v})" if v else "")


def payload(message: Message, fmt: str) -> dict[str, Any]:
    return slack_payload(message) if fmt == "slack" else json_payload(message)


def json_payload(message: Message) -> dict[str, Any]:
    """litops's own fields, plus `text`: the one line a generic chat webhook shows."""
    return {"text": f"litops: {message.title()}", "source": "litops", **asdict(message),
            "run_url": message.run_url, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def slack_payload(message: Message) -> dict[str, Any]:
    """A Slack incoming-webhook body: `text` (the notification's fallback) and Block Kit `blocks`."""
    facts = {"Model": message.model, "Version": message.version, "Data version": message.data_version,
             "Decision": message.decision, "Champion": message.champion_version}
    blocks = [_section(f"*{_escape(message.title())}*\n{_escape(message.reason)}"),
              {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_escape(str(value))}"}
                                             for name, value in facts.items() if value is not None]}]
    if message.metrics:
        blocks.append(_section("\n".join(f"`{_escape(name)}`  " + "  ".join(
            f"{role} {value:.4f}" for role, value in values.items() if value is not None)
            for name, values in message.metrics.items())))
    links = [f"<{url}|{label}>" for label, url in (("Prefect flow run", message.links.get("prefect_flow_run")),
                                                   ("MLflow run", message.links.get("mlflow_run"))) if url]
    ids = [f"{name} `{value}`" for name, value in (("flow run", message.flow_run_id),
                                                   ("MLflow run", message.mlflow_run_id)) if value]
    if links or ids:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links or ids)}]})
    return {"text": f"litops: {message.title()}", "blocks": blocks}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}  # Slack's limit per section


def _escape(text: str) -> str:
    """Slack reads &, < and > as markup (`<!channel>` would ping everyone)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mlflow_run_url(tracking_uri: str, run_id: str | None) -> str | None:
    """The MLflow UI's page of a run, for a tracking server (a SQLite store has no UI address)."""
    parts = urlsplit(tracking_uri)
    if not run_id or parts.scheme not in ("http", "https"):
        return None
    host = parts.netloc.rsplit("@", 1)[-1]  # credentials in the URI stay out of the message
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", "")) + f"/#/runs/{run_id}"


def webhook_url(cfg: NotifyConfig, warn: Warn) -> str | None:
    """The URL `notify.webhook_url` points at; None when notifications are off or it cannot be read."""
    kind, _, name = cfg.webhook_url.partition(":")
    if kind == "env":
        return os.environ.get(name) or None  # unset: notifications are off
    if kind == "block":
        try:
            from prefect.blocks.system import Secret

            return str(Secret.load(name).get()) or None
        except Exception as e:  # a missing block or an unreachable server: the run goes on
            warn(f"notify: cannot read Prefect Secret block '{name}' ({type(e).__name__}); no message sent")
    return None


def send(message: Message, cfg: NotifyConfig, warn: Warn) -> bool:
    """POST the message; True when the webhook took it. Never raises."""
    try:
        url = webhook_url(cfg, warn)
        if url is None:
            return False
        if urlsplit(url).scheme not in ("http", "https"):
            warn(f"notify: the webhook URL from {cfg.webhook_url} is not an http(s) URL; no message sent")
            return False
        problem = post(url, payload(message, cfg.format))
    except Exception as e:  # notifying must never fail the run it reports on
        problem = type(e).__name__
    if problem:
        warn(f"notify: the {message.event} message for {message.model} was not delivered ({problem}); "
             "the run goes on")
    return not problem


def post(url: str, body: dict[str, Any]) -> str:
    """POST JSON, one retry on a connection error or a 429/5xx; '' on success, else what went wrong.

    urllib, not httpx or urllib3: those log the request URL (the secret) at INFO or WARNING."""
    data = json.dumps(body).encode()
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(1.0)
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "litops"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):
                return ""
        except urllib.error.HTTPError as e:
            problem = f"HTTP {e.code}"
            if e.code not in RETRY_STATUSES:
                break
        except (urllib.error.URLError, OSError) as e:  # refused, reset, timed out; its text holds no URL
            problem = str(getattr(e, "reason", e)) or type(e).__name__
    return f"{problem} after {attempt + 1} attempt{'s' if attempt else ''}"
