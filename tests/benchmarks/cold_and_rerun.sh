#!/bin/bash
# Cold `litops run` and the up-to-date re-run: an older commit vs this checkout, alternating, on the
# same machine at the same time. The old code runs from a git worktree through PYTHONPATH (symlinks
# litops/<pkg> -> its folders), the new one from this checkout's install. One JSON line per run,
# then the median ratios new/old.
# Usage: tests/benchmarks/cold_and_rerun.sh OLD_COMMIT [ROUNDS]   (e.g. 80ba659 2; ~10 min a round)
set -u
OLD=${1:?old commit}; ROUNDS=${2:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd); PY=$ROOT/.venv/bin/python
WORK=$(mktemp -d /tmp/cold-rerun-XXXX)
git -C "$ROOT" worktree add -q --detach "$WORK/old" "$OLD"
trap 'git -C "$ROOT" worktree remove --force "$WORK/old"; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/pkg/litops"
for d in core data train evaluate register; do ln -s "$WORK/old/components/$d" "$WORK/pkg/litops/$d"; done
ln -s "$WORK/old/flows" "$WORK/pkg/litops/flows"; ln -s "$WORK/old/configs" "$WORK/pkg/litops/configs"

run() {  # label pythonpath home [env]
  local t0 t1 rc
  t0=$(date +%s.%N)
  (cd "$WORK" && env ${2:+PYTHONPATH=$2} LITOPS_HOME="$3" ${4:-} "$PY" -m litops.flows run > "$WORK/$1.log" 2>&1)
  rc=$?; t1=$(date +%s.%N)
  echo "{\"run\": \"$1\", \"rc\": $rc, \"seconds\": $(echo "$t1 - $t0" | bc)}" | tee -a "$WORK/runs.jsonl"
}
for i in $(seq 1 "$ROUNDS"); do
  run old-cold-$i "$WORK/pkg" "$WORK/home-old-$i" LITOPS_WARM_START=0  # the old code's faster cold mode
  run new-cold-$i "" "$WORK/home-new-$i"
done
for i in $(seq 1 "$ROUNDS"); do
  run old-rerun-$i "$WORK/pkg" "$WORK/home-old-$i"
  run new-rerun-$i "" "$WORK/home-new-$i"
done
"$PY" - "$WORK/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
for kind in ("cold", "rerun"):
    old, new = ([r["seconds"] for r in runs if r["run"].startswith(f"{who}-{kind}-")] for who in ("old", "new"))
    print(json.dumps({"measure": kind, "old_s": old, "new_s": new,
                      "ratio": round(statistics.median(new) / statistics.median(old), 3)}))
PY
