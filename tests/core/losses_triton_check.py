"""Run the Triton loss kernels on CPU tensors through the Triton interpreter and print one JSON
line per check. Executed in a subprocess by test_losses_triton.py so that TRITON_INTERPRET=1
never leaks into other tests. Usage: python losses_triton_check.py [case ...]"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from losses_cases import CASES, errors, make_case, run  # noqa: E402

from litops.core.losses._checks import resolve_impl  # noqa: E402


def main() -> None:
    cases = sys.argv[1:] or list(CASES)
    print(json.dumps({"check": "auto_on_cpu", "impl": resolve_impl("auto", torch.device("cpu"))}), flush=True)
    both = ("sigmoid", "softmax")
    full, partial = (True,) * 4, (False, True, False, True)
    plan = [(loss, case, torch.float32, full, False, "fused") for case in cases for loss in both]
    plan += [(loss, "ragged", torch.bfloat16, full, False, "fused") for loss in both]
    plan += [(loss, "ragged", torch.float32, partial, False, "fused") for loss in both]
    # the logits tile through tl.dot (MODE 2; the GPU path) rather than the symmetric sum
    plan += [(loss, case, dtype, full, True, "fused") for loss in both
             for case, dtype in (("ragged", torch.float32), ("duplicates", torch.bfloat16))]
    # the strip backward (G strips + matmuls), used on CUDA for D > 256
    plan += [(loss, case, dtype, grads, False, "strip") for loss in both
             for case, dtype, grads in (("ragged", torch.float32, full), ("extreme", torch.float32, full),
                                        ("duplicates", torch.float32, full), ("n1", torch.float32, full),
                                        ("ragged", torch.bfloat16, full), ("ragged", torch.float32, partial))]
    for loss, case, dtype, grads, use_dot, bwd in plan:
        os.environ["LITOPS_TRITON_INTERPRET_DOT"] = "1" if use_dot else "0"
        os.environ["LITOPS_TRITON_BWD"] = bwd
        img, txt, scale, bias = make_case(case, dtype)
        t0 = time.perf_counter()
        got = run(loss, "triton", img, txt, scale, bias, grads=grads)
        secs = time.perf_counter() - t0
        want = run(loss, "ref64", img, txt, scale, bias, grads=grads)
        print(json.dumps({"check": "exact", "loss": loss, "case": case, "dtype": str(dtype).split(".")[-1],
                          "grads": grads, "tl_dot_logits": use_dot, "backward": bwd, "errors": errors(got, want), "seconds": round(secs, 3),
                          "grad_dtypes": [None if g is None else str(g.dtype).split(".")[-1] for g in got[1:3]]}), flush=True)


if __name__ == "__main__":
    main()
