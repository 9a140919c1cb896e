"""Time the README's "Run it as a service" steps on a fresh home, as a user would run them.

    python tests/benchmarks/service_walkthrough.py [--home /tmp/litops-service] [--extra-samples 200] [overrides...]

Starts the workspace's Prefect server, serves the deployment with a cron that fires at the next
full minute at least 60 s away, waits for the scheduled run, adds data (the event trigger), waits
for the triggered run, stops serving and stops the server. Prints one JSON line per step with
the seconds since the start; the embedded default unless overrides are given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_tiny_dataset  # noqa: E402

BIN = Path(sys.executable).parent
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def mark(self, step: str, **extra) -> None:
        print(json.dumps({"step": step, "t_s": round(time.perf_counter() - self.t0, 1), **extra}), flush=True)


def litops(home: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"LITOPS_HOME": str(home)}
    out = subprocess.run([str(BIN / "litops"), *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"litops {' '.join(args)} failed: {out.stderr.strip()[-500:]}")
    return out.stdout


def final_run(url: str, created_by: str) -> dict:
    while True:
        req = urllib.request.Request(f"{url}/flow_runs/filter", data=b'{"limit": 50}', method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            for run in json.loads(r.read()):
                if (run.get("created_by") or {}).get("type") == created_by and run["state"]["type"] in FINAL:
                    return run
        time.sleep(1)


def cron_minute(lead_s: int) -> int:
    t = datetime.now(timezone.utc) + timedelta(seconds=lead_s)
    return (t + timedelta(minutes=1)).minute if t.second else t.minute


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", default="/tmp/litops-service")
    p.add_argument("--extra-samples", type=int, default=200)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    home = Path(args.home)
    shutil.rmtree(home, ignore_errors=True)
    clock = Clock()
    litops(home, "server", "start")
    url = json.loads((home / "prefect" / "server.json").read_text())["api_url"]
    clock.mark("server started", api_url=url)
    minute = cron_minute(60)
    deploy = subprocess.Popen([str(BIN / "litops"), "deploy", f"schedule.cron={minute} * * * *", *args.overrides],
                              env=os.environ | {"LITOPS_HOME": str(home)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    clock.mark("deploy started", cron=f"{minute} * * * *")
    run = final_run(url, "SCHEDULE")
    clock.mark("scheduled run final", state=run["state"]["name"], run_s=round(run["total_run_time"], 1),
               started=run["start_time"], expected=run["expected_start_time"])
    extra = make_tiny_dataset(home.parent / f"{home.name}-new-data", {"train": args.extra_samples}, size=64)
    litops(home, "data", "add", str(extra / "train"), *args.overrides)
    clock.mark("data added, event sent")
    run = final_run(url, "AUTOMATION")
    clock.mark("triggered run final", state=run["state"]["name"], run_s=round(run["total_run_time"], 1),
               created=run["created"], started=run["start_time"])
    deploy.send_signal(signal.SIGTERM)
    clock.mark("deploy stopped", exit_code=deploy.wait(timeout=60))
    litops(home, "server", "stop")
    clock.mark("server stopped")


if __name__ == "__main__":
    main()
