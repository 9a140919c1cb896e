"""Run a step as a Kubernetes Job, behind the same Launcher interface as the local process launcher.

Lifecycle of `run(spec, log)`:
  1. render the Job (flows/k8s_render.py) and submit it (plus a headless Service when multi-node);
  2. poll the Job's status; for each pod of index 0 (the one that prints LITOPS_RESULT), stream
     its log (`follow=true`) into `log`, keeping the last lines;
  3. a pod that ends with a `DisruptionTarget` condition (preemption, eviction) is reported and
     the Job's replacement pod is followed: the trainer resumes from the latest checkpoint on the
     object store (litops.train.remote_checkpoints). Such pods do not count against backoffLimit
     (podFailurePolicy Ignore); a pod that fails otherwise is reported and retried by the Job;
  4. Job `Complete`: the result is the LITOPS_RESULT line of the pod that completed, typed;
     Job `Failed`: ComponentFailed with the last log lines, the exit code, the Job's reason and
     the last error record a pod printed;
  5. any exception while waiting (the flow run cancelled, Ctrl-C): the Job is deleted with
     foreground propagation (its pods go first), then the exception propagates.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from litops.core.config import LitopsConfig
from litops.core.step_results import UnreadableRecord
from litops.flows import k8s_render
from litops.flows.launcher import ComponentFailed, JobResult, JobSpec, LogFn, OutputRelay, read_result
from litops.flows.progress import ProgressRenderer


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for name in path:
        if obj is None:
            return default
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return default if obj is None else obj


def _condition(obj: Any, kind: str) -> Any:
    for c in _get(obj, "status", "conditions", default=[]) or []:
        if _get(c, "type") == kind and _get(c, "status") == "True":
            return c
    return None


def _exit_code(pod: Any) -> int | None:
    for cs in _get(pod, "status", "container_statuses", default=[]) or []:
        if _get(cs, "name") == k8s_render.CONTAINER and (code := _get(cs, "state", "terminated", "exit_code")) is not None:
            return int(code)
    return None


def _last_redraw(raw: bytes) -> bytes:
    """A pod log line's last state: progress bars redraw with \\r."""
    return raw.rstrip(b"\r\n").rsplit(b"\r", 1)[-1]


def _pod_index(pod: Any) -> str:
    return (_get(pod, "metadata", "annotations", default={}) or {}).get(k8s_render.INDEX_ANNOTATION, "0")


class KubernetesJobLauncher:
    """Submits each JobSpec as a batch/v1 Job in `cfg.kubernetes.namespace` and follows it to the end."""

    def __init__(self, cfg: LitopsConfig | None = None, api_client: Any = None, sleep: Callable[[float], None] = time.sleep,
                 **_: Any):
        self.cfg = cfg or LitopsConfig()
        self.ns = self.cfg.kubernetes.namespace
        self.sleep = sleep
        self._api_client = api_client

    # ------------------------------------------------------------------ client

    def _client(self):
        from kubernetes import client, config as kconfig

        if self._api_client is None:
            host = self.cfg.kubernetes.api_host
            if host:
                conf = client.Configuration(host=host)
                self._api_client = client.ApiClient(conf)
            else:
                try:
                    kconfig.load_incluster_config()  # the Prefect worker's ServiceAccount
                except kconfig.ConfigException:
                    kconfig.load_kube_config()
                self._api_client = client.ApiClient()
        return client.BatchV1Api(self._api_client), client.CoreV1Api(self._api_client)

    # ------------------------------------------------------------------ API

    def render(self, spec: JobSpec, name: str | None = None) -> list[dict[str, Any]]:
        return k8s_render.render(spec, self.cfg, name)

    def run(self, spec: JobSpec, log: LogFn) -> JobResult:
        from kubernetes import client

        batch, core = self._client()
        objs = self.render(spec)
        job_manifest = objs[-1]
        name = job_manifest["metadata"]["name"]
        for obj in objs:
            if obj["kind"] == "Service":
                core.create_namespaced_service(self.ns, client.V1Service.from_dict(obj))
            else:
                batch.create_namespaced_job(self.ns, client.V1Job.from_dict(obj))
        image = job_manifest["spec"]["template"]["spec"]["containers"][0]["image"]
        log(f"submitted Job {self.ns}/{name} ({spec.component}, {image})")
        try:
            return self._follow(spec, name, batch, core, log)
        finally:
            if k8s_render.is_multinode(spec, self.cfg):  # the Job's TTL does not cover its Service
                try:
                    core.delete_namespaced_service(name, self.ns)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    # ------------------------------------------------------------------ internals

    def _follow(self, spec: JobSpec, name: str, batch, core, log: LogFn) -> JobResult:
        out = OutputRelay(ProgressRenderer(log))  # the Job's messages; each pod's log: a relay sharing its tail and bar
        streamed: dict[str, int] = {}  # pod name -> lines already emitted
        finished: set[str] = set()  # pods whose end was reported
        results: dict[str, list[str]] = {}  # pod name -> its LITOPS_RESULT lines
        last_exit: int | None = None
        try:
            while True:
                job = batch.read_namespaced_job_status(name, self.ns)
                pods = core.list_namespaced_pod(self.ns, label_selector=f"{k8s_render.LABEL_JOB}={name}").items or []
                pods = sorted(pods, key=lambda p: str(_get(p, "metadata", "creation_timestamp", default="")))
                for pod in pods:
                    pname = pod.metadata.name
                    phase = _get(pod, "status", "phase", default="Pending")
                    if _pod_index(pod) == "0" and phase in ("Running", "Succeeded", "Failed") and pname not in finished:
                        self._stream(core, pname, streamed, results, out)
                        pod = core.read_namespaced_pod_status(pname, self.ns)
                        phase = _get(pod, "status", "phase", default="Pending")
                    if phase in ("Succeeded", "Failed") and pname not in finished:
                        finished.add(pname)
                        code = _exit_code(pod)
                        if phase == "Failed":
                            last_exit = code if code is not None else last_exit
                            self._report_pod_end(pod, code, out)
                if (cond := _condition(job, "Complete")) is not None or _condition(job, "SuccessCriteriaMet") is not None:
                    winner = self._result_pod(pods, results)
                    result = read_result(spec, results.get(winner, [])) if winner else None
                    out.renderer.log_around(f"Job {name} complete")
                    return JobResult(0, result, list(out.tail))
                if (cond := _condition(job, "Failed")) is not None:
                    reason = f"Job {name} {_get(cond, 'reason', default='Failed')}: {_get(cond, 'message', default='')}".strip()
                    raise ComponentFailed(spec, last_exit if last_exit is not None else 1, list(out.tail),
                                          reason.rstrip(": "), error=out.last_error)
                self.sleep(self.cfg.kubernetes.poll_seconds)
        except (ComponentFailed, UnreadableRecord):
            raise
        except BaseException as e:  # cancellation (Prefect cancels by raising into the flow) or a broken watch
            out.close()  # the bar ends before the deletion is reported
            self._delete(batch, core, name, spec, log, why=type(e).__name__)
            raise
        finally:
            out.close()

    @staticmethod
    def _result_pod(pods: list[Any], results: dict[str, list[str]]) -> str | None:
        for pod in reversed(pods):
            if _get(pod, "status", "phase") == "Succeeded" and _pod_index(pod) == "0":
                return pod.metadata.name
        return next(reversed(results), None) if results else None

    def _stream(self, core, pod: str, streamed: dict[str, int], results: dict[str, list[str]], out: OutputRelay) -> None:
        """Follow a pod's log until its container ends; lines already shown (a re-opened stream) are skipped."""
        seen = streamed.setdefault(pod, 0)
        if seen == 0:
            out.renderer.log_around(f"--- pod {pod} ---")
        try:
            resp = core.read_namespaced_pod_log(pod, self.ns, container=k8s_render.CONTAINER, follow=True,
                                                _preload_content=False)
        except Exception as e:  # noqa: BLE001 - the container may not have started yet
            if getattr(e, "status", None) in (400, 404):
                return
            raise
        pod_out = OutputRelay(out.renderer, out.tail, errors=out.errors)
        try:
            buf, n = b"", 0
            for chunk in resp.stream(65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    n += 1
                    if n > seen:
                        pod_out.feed(_last_redraw(raw))
            if buf:
                n += 1
                if n > seen:
                    pod_out.feed(_last_redraw(buf))
            streamed[pod] = max(seen, n)
        finally:
            resp.release_conn()
            if pod_out.results:
                results.setdefault(pod, []).extend(pod_out.results)

    def _report_pod_end(self, pod: Any, code: int | None, out: OutputRelay) -> None:
        pname = pod.metadata.name
        disrupted = _condition(pod, "DisruptionTarget")
        if disrupted is not None:
            msg = (f"pod {pname} was disrupted ({_get(disrupted, 'reason', default='DisruptionTarget')}: "
                   f"{_get(disrupted, 'message', default='')}); not counted as a failure - the Job starts a replacement "
                   f"pod, which resumes from the latest checkpoint on the object store")
        else:
            msg = f"pod {pname} failed with exit code {code}; the Job retries it (backoffLimit {self.cfg.kubernetes.backoff_limit})"
        out.log(msg)

    def _delete(self, batch, core, name: str, spec: JobSpec, log: LogFn, why: str) -> None:
        from kubernetes import client

        try:
            batch.delete_namespaced_job(name, self.ns, propagation_policy="Foreground",
                                        body=client.V1DeleteOptions(propagation_policy="Foreground"))
            log(f"{why}: deleted Job {self.ns}/{name} (foreground propagation: its pods are removed first)")
        except Exception as e:  # noqa: BLE001 - report, and let the original exception propagate
            log(f"{why}: could not delete Job {self.ns}/{name}: {e}")
