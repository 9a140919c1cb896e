"""Run the duplicate-aware Triton loss kernels on CPU tensors through the Triton interpreter and
print one JSON line per check. Executed in a subprocess by test_losses_groups_triton.py so that
TRITON_INTERPRET=1 never leaks into other tests."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from losses_groups_cases import GROUP_CASES, MODES, errors, make_group_case, run  # noqa: E402

LOSSES = ("sigmoid", "softmax")
FULL, PARTIAL = (True,) * 4, (False, True, False, True)


def plan() -> list[tuple]:
    """(loss, case, duplicates, dtype, grads, tl.dot logits, backward) for every check."""
    grouped = ("positive", "ignore")
    f32 = torch.float32
    checks = [(loss, case, mode, f32, FULL, False, "fused") for case in GROUP_CASES for mode in MODES for loss in LOSSES]
    # the strip backward (G strips + matmuls), used on CUDA for D > 256
    checks += [(loss, case, mode, f32, FULL, False, "strip") for case in ("mixed", "extreme", "same", "n1")
               for mode in grouped for loss in LOSSES]
    # the logits tile through tl.dot (the GPU path) rather than the symmetric sum
    checks += [(loss, "mixed", mode, f32, FULL, True, "fused") for mode in grouped for loss in LOSSES]
    checks += [(loss, "mixed", mode, f32, PARTIAL, False, "fused") for mode in grouped for loss in LOSSES]
    checks += [(loss, "mixed", mode, torch.bfloat16, FULL, False, "fused") for mode in grouped for loss in LOSSES]
    return checks


def main() -> None:
    for loss, case, mode, dtype, grads, use_dot, bwd in plan():
        os.environ["LITOPS_TRITON_INTERPRET_DOT"] = "1" if use_dot else "0"
        os.environ["LITOPS_TRITON_BWD"] = bwd
        img, txt, scale, bias, groups = make_group_case(case, dtype)
        t0 = time.perf_counter()
        got = run(loss, "triton", img, txt, scale, bias, groups, mode, grads=grads)
        secs = time.perf_counter() - t0
        want = run(loss, "ref64", img, txt, scale, bias, groups, mode, grads=grads)
        print(json.dumps({"loss": loss, "case": case, "duplicates": mode, "dtype": str(dtype).split(".")[-1],
                          "grads": grads, "tl_dot_logits": use_dot, "backward": bwd, "errors": errors(got, want),
                          "seconds": round(secs, 3)}), flush=True)


if __name__ == "__main__":
    main()
