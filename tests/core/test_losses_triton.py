"""Triton kernels: exactness on CPU via TRITON_INTERPRET=1 (in a subprocess), and on a GPU when present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from losses_cases import CASES, TOL, check, errors, make_case, run  # noqa: E402

pytest.importorskip("triton")

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def interpreter_results():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LITOPS_TRITON_BWD", None)
    env.pop("LITOPS_TRITON_INTERPRET_DOT", None)
    proc = subprocess.run([sys.executable, str(HERE / "losses_triton_check.py")], cwd=HERE, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_interpreter_auto_still_picks_chunked_on_cpu(interpreter_results):
    assert interpreter_results[0] == {"check": "auto_on_cpu", "impl": "chunked"}


def test_interpreter_covers_every_case(interpreter_results):
    seen = {(r["loss"], r["case"]) for r in interpreter_results if r["check"] == "exact"}
    assert seen >= {(loss, case) for loss in ("sigmoid", "softmax") for case in CASES}


def test_interpreter_exact(interpreter_results):
    rows = [r for r in interpreter_results if r["check"] == "exact"]
    assert len(rows) == 2 * len(CASES) + 8 + 12
    assert sum(r["tl_dot_logits"] for r in rows) == 4
    assert sum(r["backward"] == "strip" for r in rows) == 12
    for r in rows:
        dtype = torch.float32 if r["dtype"] == "float32" else torch.bfloat16
        what = f"triton(interpreter) {r['loss']} {r['case']} {r['dtype']} grads={r['grads']} tl.dot={r['tl_dot_logits']} bwd={r['backward']}"
        if all(r["grads"]):
            check(r["errors"], dtype, r["loss"], what)
            assert r["grad_dtypes"] == [r["dtype"]] * 2, what
        else:  # only txt and bias require grad
            e = r["errors"]
            assert e["img"] is None and e["scale"] is None, what
            assert e["txt"] <= TOL[dtype][1] and e["loss"] <= TOL[dtype][0], what
            assert e["bias"] is None if r["loss"] == "softmax" else e["bias"] <= TOL[dtype][1], what


def test_triton_module_imports_lazily():
    # the package must import without pulling triton in
    code = "import sys, litops.core.losses; assert 'triton' not in sys.modules, 'triton imported eagerly'"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
@pytest.mark.parametrize("case", CASES)
def test_gpu_triton_exact_fp32(loss, case):
    img, txt, scale, bias = (t.cuda() for t in make_case(case))
    want = run(loss, "ref64", img, txt, scale, bias)
    got = run(loss, "triton", img, txt, scale, bias)
    check(errors(got, want), torch.float32, loss, f"triton cuda {loss} {case}")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
@pytest.mark.parametrize("n,d", [(1000, 768), (4097, 100)])
def test_gpu_triton_bf16_large(loss, n, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, d, device="cuda", generator=g), dim=-1).bfloat16()
    txt = torch.nn.functional.normalize(img.float() + 0.5 * torch.randn(n, d, device="cuda", generator=g), dim=-1).bfloat16()
    scale, bias = torch.tensor(10.0, device="cuda"), torch.tensor(-10.0, device="cuda")
    want = run(loss, "ref64", img, txt, scale, bias)
    for impl in ("triton", "chunked", "auto"):
        check(errors(run(loss, impl, img, txt, scale, bias), want), torch.bfloat16, loss, f"{impl} cuda bf16 {loss}")

