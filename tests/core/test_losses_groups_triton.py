"""Duplicate-aware Triton kernels against the float64 reference: on CPU through TRITON_INTERPRET=1
(in a subprocess), and on a GPU when present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from losses_groups_cases import GROUP_CASES, MODES, check, errors, make_group_case, run  # noqa: E402

pytest.importorskip("triton")

HERE = Path(__file__).parent
BF16_TOL = (2e-2, 5e-2)  # loss, gradients (as losses_cases.TOL)


@pytest.fixture(scope="module")
def interpreter_results():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LITOPS_TRITON_BWD", None)
    env.pop("LITOPS_TRITON_INTERPRET_DOT", None)
    proc = subprocess.run([sys.executable, str(HERE / "losses_groups_triton_check.py")], cwd=HERE, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_interpreter_covers_every_case_and_mode(interpreter_results):
    seen = {(r["loss"], r["case"], r["duplicates"]) for r in interpreter_results}
    assert seen >= {(loss, case, mode) for loss in ("sigmoid", "softmax") for case in GROUP_CASES for mode in MODES}
    assert sum(r["backward"] == "strip" for r in interpreter_results) == 16
    assert sum(r["tl_dot_logits"] for r in interpreter_results) == 4


def test_interpreter_matches_reference(interpreter_results):
    assert len(interpreter_results) == 2 * len(GROUP_CASES) * len(MODES) + 16 + 12
    for r in interpreter_results:
        what = (f"triton(interpreter) {r['loss']} {r['case']} {r['duplicates']} {r['dtype']} grads={r['grads']} "
                f"tl.dot={r['tl_dot_logits']} bwd={r['backward']}")
        e = r["errors"]
        if r["dtype"] == "bfloat16":
            assert e["loss"] <= BF16_TOL[0], what
            assert all(e[k] <= BF16_TOL[1] for k in ("img", "txt", "scale")), what
        elif all(r["grads"]):
            check(e, torch.float32, r["loss"], what)
        else:  # only txt and bias require grad
            assert e["img"] is None and e["scale"] is None, what
            assert e["loss"] <= 1e-4 and e["txt"] <= 1e-4, what
            assert e["bias"] is None if r["loss"] == "softmax" else e["bias"] <= 1e-4, what


def _nvidia_backend() -> bool:
    try:
        from triton.backends import backends

        return "nvidia" in backends
    except Exception:  # pragma: no cover - depends on the triton build
        return False


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"), reason="compiles real kernels, not interpreted ones")
@pytest.mark.skipif(not _nvidia_backend(), reason="this triton build has no NVIDIA backend to compile with")
def test_grouped_kernels_compile_for_a_gpu():
    # the interpreter runs the kernels as Python and never type-checks the constexpr branches:
    # compile every grouped kernel for sm_90 here (no GPU needed; PTX via the bundled toolchain)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from litops.core.losses import triton_sigmoid, triton_softmax

    kernels = (triton_sigmoid._sigmoid_fwd_kernel, triton_sigmoid._sigmoid_bwd_kernel, triton_sigmoid._sigmoid_gstrip_kernel,
               triton_softmax._row_lse_kernel, triton_softmax._softmax_bwd_kernel, triton_softmax._softmax_gstrip_kernel)
    sizes = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, BLOCK_D=128, PRECISION="tf32", MODE=0)
    for group_mode in (1, 2):
        for fn in kernels:
            consts = {k: v for k, v in {**sizes, "GROUP_MODE": group_mode}.items() if k in fn.arg_names}
            signature = {name: "constexpr" if name in consts else "*i64" if name == "groups_ptr"
                         else "*bf16" if name in ("a_ptr", "b_ptr", "g_ptr") else "*fp32" if name.endswith("_ptr") else "i32"
                         for name in fn.arg_names}
            src = ASTSource(fn=fn, signature=signature, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
            compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 2})
            assert "ld.global" in compiled.asm["ptx"], (fn.__name__, group_mode)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CPU runs use the interpreter tests above)")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
@pytest.mark.parametrize("duplicates", MODES)
@pytest.mark.parametrize("case", GROUP_CASES)
def test_gpu_triton_groups_fp32(loss, duplicates, case):
    img, txt, scale, bias, groups = (t.cuda() for t in make_group_case(case, torch.float32))
    want = run(loss, "ref64", img, txt, scale, bias, groups, duplicates)
    got = run(loss, "triton", img, txt, scale, bias, groups, duplicates)
    check(errors(got, want), torch.float32, loss, f"triton cuda {loss} {duplicates} {case}")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
@pytest.mark.parametrize("duplicates", ["positive", "ignore"])
@pytest.mark.parametrize("n,d", [(1000, 768), (4097, 100)])
def test_gpu_triton_groups_bf16_large(loss, duplicates, n, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, d, device="cuda", generator=g), dim=-1).bfloat16()
    txt = torch.nn.functional.normalize(img.float() + 0.5 * torch.randn(n, d, device="cuda", generator=g), dim=-1).bfloat16()
    groups = torch.randint(0, n // 3, (n,), device="cuda", generator=g)  # about 3 rows per group
    scale, bias = torch.tensor(10.0, device="cuda"), torch.tensor(-10.0, device="cuda")
    want = run(loss, "ref64", img, txt, scale, bias, groups, duplicates)
    for impl in ("triton", "chunked", "auto"):
        e = errors(run(loss, impl, img, txt, scale, bias, groups, duplicates), want)
        assert e["loss"] <= BF16_TOL[0], (impl, e)
        assert all(e[k] <= BF16_TOL[1] for k in ("img", "txt", "scale")), (impl, e)
