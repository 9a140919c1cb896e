"""A stand-in Kubernetes API server for the launcher tests (there is no control plane here).

It is a real HTTP server on 127.0.0.1 that answers the REST paths the official `kubernetes`
client calls, with the JSON the real API server returns:

    POST   /apis/batch/v1/namespaces/{ns}/jobs                 create a Job
    GET    /apis/batch/v1/namespaces/{ns}/jobs/{name}/status   read its status
    DELETE /apis/batch/v1/namespaces/{ns}/jobs/{name}          (propagationPolicy in query and body)
    POST   /api/v1/namespaces/{ns}/services, DELETE .../services/{name}
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=k=v       list a Job's pods
    GET    /api/v1/namespaces/{ns}/pods/{pod}/status
    GET    /api/v1/namespaces/{ns}/pods/{pod}/log?container=&follow=true   chunked log stream

Behind it, a tiny Job controller applies the submitted Job's own `backoffLimit` and
`podFailurePolicy` rules (FailJob on exit codes, Ignore on the DisruptionTarget condition),
and a "kubelet" runs each pod: either a scripted pod (log lines + exit code, or preemption),
or a real process that executes the container's `command` with its `env` (and the values of
the Secrets/ConfigMaps named in `envFrom`), so a real trainer runs as the pod.
Every request is recorded in `server.requests` for the tests' assertions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Scripted:
    """A pod that prints `lines` (one every `delay` s) then exits with `exit_code`, or, with
    `preempt`, gets a DisruptionTarget condition after its lines and is killed."""

    lines: list[str]
    exit_code: int = 0
    preempt: bool = False
    delay: float = 0.01
    forever: bool = False  # keeps printing until the Job is deleted


@dataclass
class Process:
    """A pod whose container runs for real: `command` with sys.executable for `python`, the
    container's env, Secret/ConfigMap values from `env_from`, and a fresh TMPDIR (its emptyDir).
    With `preempt_when`, the pod is preempted (SIGTERM, DisruptionTarget) at the first log line
    matching that regex."""

    env_from: dict[str, dict[str, str]] = field(default_factory=dict)
    preempt_when: str | None = None
    tmp_root: str = "/tmp"


@dataclass
class Pod:
    name: str
    job: str
    labels: dict[str, str]
    index: str = "0"
    phase: str = "Pending"
    exit_code: int | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=now)
    log: bytearray = field(default_factory=bytearray)
    done: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen | None = None
    killed: bool = False

    def to_json(self, ns: str) -> dict[str, Any]:
        status: dict[str, Any] = {"phase": self.phase, "conditions": self.conditions}
        state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        if self.phase == "Running":
            state = {"running": {"startedAt": self.created}}
        elif self.phase in ("Succeeded", "Failed"):
            state = {"terminated": {"exitCode": self.exit_code if self.exit_code is not None else 137,
                                    "reason": "Completed" if self.phase == "Succeeded" else "Error",
                                    "startedAt": self.created, "finishedAt": now()}}
        status["containerStatuses"] = [{"name": "component", "image": "litops", "imageID": "", "ready": self.phase == "Running",
                                        "restartCount": 0, "state": state}]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.name, "namespace": ns, "labels": self.labels, "creationTimestamp": self.created,
                             "annotations": {"batch.kubernetes.io/job-completion-index": self.index}},
                "spec": {"containers": [{"name": "component", "image": "litops"}]}, "status": status}


class FakeKube:
    def __init__(self, pods: list[Scripted | Process] | Callable[[int], Scripted | Process]):
        self.script = pods
        self.requests: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_status: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, Pod] = {}
        self.attempts: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeKube":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for pod in list(self.pods.values()):
            self._kill(pod)
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ controller

    def _next_behaviour(self, job: str) -> Scripted | Process:
        n = self.attempts.get(job, 0)
        self.attempts[job] = n + 1
        if callable(self.script):
            return self.script(n)
        return self.script[min(n, len(self.script) - 1)]

    def _start_pod(self, job: str) -> None:
        manifest = self.jobs[job]
        labels = dict(manifest["spec"]["template"]["metadata"]["labels"])
        pod = Pod(name=f"{job}-{uuid.uuid4().hex[:5]}", job=job, labels=labels)
        self.pods[pod.name] = pod
        self.job_status[job]["active"] = 1
        behaviour = self._next_behaviour(job)
        threading.Thread(target=self._kubelet, args=(pod, behaviour, manifest), daemon=True).start()

    def _kubelet(self, pod: Pod, how: Scripted | Process, manifest: dict[str, Any]) -> None:
        time.sleep(0.05)  # Pending -> Running: visible to a poll in between
        pod.phase = "Running"
        if isinstance(how, Scripted):
            preempted = False
            i = 0
            while not pod.killed:
                if i < len(how.lines):
                    pod.log += (how.lines[i] + "\n").encode()
                elif how.forever:
                    pod.log += f"working {i}\n".encode()
                else:
                    break
                i += 1
                time.sleep(how.delay)
            code = 143 if pod.killed else how.exit_code
            preempted = how.preempt and not pod.killed
        else:
            code, preempted = self._run_process(pod, how, manifest)
        if preempted:
            pod.conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                                   "message": "Preempted to accommodate a higher priority pod",
                                   "lastTransitionTime": now()})
            code = 143
        pod.exit_code = code
        pod.phase = "Succeeded" if code == 0 and not preempted else "Failed"
        pod.done.set()
        with self.lock:
            self._pod_ended(pod, manifest)

    def _run_process(self, pod: Pod, how: Process, manifest: dict[str, Any]) -> tuple[int, bool]:
        c = manifest["spec"]["template"]["spec"]["containers"][0]
        env = {"PATH": os.environ.get("PATH", "")}
        for src in c.get("envFrom", []):
            ref = src.get("secretRef") or src.get("configMapRef")
            env.update(how.env_from.get(ref["name"], {}))
        env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
        tmp = os.path.join(how.tmp_root, pod.name)  # the pod's emptyDir for /tmp
        os.makedirs(tmp, exist_ok=True)
        env.update(TMPDIR=tmp, HOME=tmp, MPLCONFIGDIR=os.path.join(tmp, "mpl"))
        env.update(_empty_dirs(manifest["spec"]["template"]["spec"], c, env, tmp))
        cmd = list(c["command"])
        if cmd[0] == "python":
            cmd[0] = sys.executable
        pod.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        preempted = False
        for line in iter(pod.proc.stdout.readline, b""):
            pod.log += line
            if how.preempt_when and not preempted and re.search(how.preempt_when, line.decode("utf-8", "replace")):
                preempted = True
                os.killpg(pod.proc.pid, signal.SIGTERM)
        return pod.proc.wait(), preempted

    def _pod_ended(self, pod: Pod, manifest: dict[str, Any]) -> None:
        job = pod.job
        st = self.job_status.get(job)
        if st is None or pod.killed:
            return
        st["active"] = 0
        if pod.phase == "Succeeded":
            st["succeeded"] = 1
            st["completionTime"] = now()
            st["conditions"] = [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now()},
                                {"type": "Complete", "status": "True", "lastTransitionTime": now()}]
            return
        spec = manifest["spec"]
        for rule in spec.get("podFailurePolicy", {}).get("rules", []):
            ec = rule.get("onExitCodes")
            if ec and ec["operator"] == "In" and pod.exit_code in ec["values"]:
                action = rule["action"]
                break
            if any(c["type"] == pc["type"] and c["status"] == pc.get("status", "True")
                   for pc in rule.get("onPodConditions", []) for c in pod.conditions):
                action = rule["action"]
                break
        else:
            action = "Count"
        if action == "FailJob":
            st["failed"] = st.get("failed", 0) + 1
            st["conditions"] = [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "lastTransitionTime": now(),
                                 "message": f"Container component for pod {pod.name} failed with exit code {pod.exit_code} "
                                            f"matching FailJob rule at index 0"}]
            return
        if action == "Count":
            st["failed"] = st.get("failed", 0) + 1
            if st["failed"] > spec.get("backoffLimit", 6):
                st["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                     "message": "Job has reached the specified backoff limit", "lastTransitionTime": now()}]
                return
        self._start_pod(job)  # Ignore (disruption) or a retry within backoffLimit

    def _kill(self, pod: Pod) -> None:
        pod.killed = True
        if pod.proc and pod.proc.poll() is None:
            try:
                os.killpg(pod.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ------------------------------------------------------------------ HTTP

    def _handler(self):
        kube = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _record(self) -> tuple[list[str], dict[str, list[str]], Any]:
                u = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                q = parse_qs(u.query)
                kube.requests.append({"method": self.command, "path": u.path, "query": q, "body": body})
                return u.path.strip("/").split("/"), q, body

            def _not_found(self, what: str) -> None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "message": f"{what} not found", "code": 404})

            def do_POST(self):
                parts, _, body = self._record()
                with kube.lock:
                    if parts[:2] == ["apis", "batch"] and parts[-1] == "jobs":
                        name = body["metadata"]["name"]
                        body["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion="1")
                        kube.jobs[name] = body
                        kube.job_status[name] = {"active": 0, "startTime": now()}
                        kube._start_pod(name)
                        return self._send(201, body)
                    if parts[-1] == "services":
                        kube.services[body["metadata"]["name"]] = body
                        return self._send(201, body)
                self._not_found(self.path)

            def do_DELETE(self):
                parts, q, body = self._record()
                with kube.lock:
                    if parts[-2] == "jobs" and parts[-1] in kube.jobs:
                        name = parts[-1]
                        for pod in [p for p in kube.pods.values() if p.job == name]:
                            kube._kill(pod)
                            del kube.pods[pod.name]
                        job = kube.jobs.pop(name)
                        kube.job_status.pop(name, None)
                        return self._send(200, job)
                    if parts[-2] == "services" and parts[-1] in kube.services:
                        svc = kube.services.pop(parts[-1])
                        return self._send(200, svc)
                self._not_found(self.path)

            def do_GET(self):
                parts, q, _ = self._record()
                ns = parts[3] if len(parts) > 3 else "default"
                if parts[:2] == ["apis", "batch"] and "jobs" in parts:
                    name = parts[parts.index("jobs") + 1]
                    with kube.lock:
                        if name not in kube.jobs:
                            return self._not_found(f'jobs.batch "{name}"')
                        return self._send(200, {**kube.jobs[name], "status": dict(kube.job_status[name])})
                if parts[:2] == ["api", "v1"] and parts[4:5] == ["pods"]:
                    if len(parts) == 5:
                        sel = dict(s.split("=", 1) for s in q.get("labelSelector", [""])[0].split(",") if s)
                        with kube.lock:
                            items = [p.to_json(ns) for p in kube.pods.values()
                                     if all(p.labels.get(k) == v for k, v in sel.items())]
                        return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
                                                "items": items})
                    pod = kube.pods.get(parts[5])
                    if pod is None:
                        return self._not_found(f'pods "{parts[5]}"')
                    if len(parts) == 7 and parts[6] == "log":
                        return self._stream_log(pod, q.get("follow", ["false"])[0] == "true")
                    return self._send(200, pod.to_json(ns))
                self._not_found(self.path)

            def _stream_log(self, pod: Pod, follow: bool) -> None:
                if pod.phase == "Pending":
                    return self._send(400, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
                                            "reason": "BadRequest",
                                            "message": f'container "component" in pod "{pod.name}" is waiting to start'})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                try:
                    while True:
                        data = bytes(pod.log[sent:])
                        if data:
                            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                            self.wfile.flush()
                            sent += len(data)
                        if not follow or (pod.done.is_set() and sent >= len(pod.log)):
                            break
                        time.sleep(0.02)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def _empty_dirs(pod_spec: dict[str, Any], container: dict[str, Any], env: dict[str, str], tmp: str) -> dict[str, str]:
    """The pod's other emptyDir volumes, as folders under its own: an env value naming such a
    volume's mount path (the node cache, LITOPS_SHARD_CACHE_DIR) points at that folder instead."""
    empty = {v["name"] for v in pod_spec.get("volumes", []) if "emptyDir" in v and v["name"] != "tmp"}
    mounts = {m["mountPath"]: os.path.join(tmp, "volumes", m["name"]) for m in container.get("volumeMounts", [])
              if m["name"] in empty}
    for folder in mounts.values():
        os.makedirs(folder, exist_ok=True)
    return {k: mounts[v] for k, v in env.items() if v in mounts}
