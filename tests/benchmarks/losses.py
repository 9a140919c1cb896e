"""Benchmark the contrastive-loss implementations: one JSON line per (loss, impl, N, D, dtype).

    python tests/benchmarks/losses.py                       # CPU defaults: N=1024,4096 D=128 fp32
    python tests/benchmarks/losses.py --n 8192,32768,65536,131072,1048576 --d 768 --dtype bfloat16   # on a GPU

Keys: loss, impl, N, D, dtype, device, ms (forward+backward, median of --repeats),
peak_extra_bytes (peak memory above the inputs during forward+backward), memory_method
("cuda_max_memory_allocated" on CUDA; "rss_hwm" on CPU: /proc VmHWM reset before the call,
minus the RSS before it), ratio_to_reference (against the reference measured in this run;
null where the reference is out of memory or skipped), ratio_to_floor (against the three bare
GEMMs img@txtᵀ, G@txt, Gᵀ@img, run in row strips so they fit at any N), loss_rel_err (against
the reference value, null without one), status ("ok", "oom", "skipped: ...").
On CPU also cpu_ms / cpu_ratio_to_reference: process CPU time, robust when other processes
compete for the cores (wall-clock ms is what the targets are stated in).
The floor itself is printed as impl "floor". Not a pytest module (no test_ prefix).

    python tests/benchmarks/losses.py --duplicates positive     # or ignore

also times each non-reference impl with group ids (about two rows per group) against the same
impl without, one JSON line per impl: impl "<impl>+groups", duplicates, ms, ms_without_groups,
ratio_to_no_groups.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

import torch

from litops.core.losses import sigmoid_loss, softmax_loss

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _rss(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Meter:
    """Peak extra memory around one call."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.method = "cuda_max_memory_allocated" if self.cuda else "rss_hwm"

    def start(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _rss("VmRSS")
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.method = "rss_hwm_unreset"

    def stop(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return max(0, _rss("VmHWM") - self.base)


def _time(fn, device, repeats: int, warmup: int, cpu_times: list | None = None) -> float:
    """Median wall ms (CUDA events on GPU); on CPU also appends the median process-CPU ms to cpu_times
    (robust to other processes competing for the cores)."""
    for _ in range(warmup):
        fn()
    ts, cs = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b))
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
            cs.append((time.process_time() - c0) * 1e3)
    if cpu_times is not None and cs:
        cpu_times.append(statistics.median(cs))
    return statistics.median(ts)


def _inputs(n, d, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, d, device=device, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img + 0.7 * torch.randn(n, d, device=device, generator=g), dim=-1)
    img, txt = img.to(dtype).requires_grad_(), txt.to(dtype).requires_grad_()
    scale = torch.tensor(10.0, device=device, requires_grad=True)
    bias = torch.tensor(-10.0, device=device, requires_grad=True)
    return img, txt, scale, bias


def _step(loss, impl, img, txt, scale, bias):
    def run():
        for t in (img, txt, scale, bias):
            t.grad = None
        out = sigmoid_loss(img, txt, scale, bias, impl=impl) if loss == "sigmoid" else softmax_loss(img, txt, scale, impl=impl)
        out.backward()
        return out
    return run


def _grouped_step(loss, impl, img, txt, scale, bias, groups, duplicates, block):
    def run():
        for t in (img, txt, scale, bias):
            t.grad = None
        kw = dict(impl=impl, groups=groups, duplicates=duplicates, block=block if impl == "chunked" else None)
        out = sigmoid_loss(img, txt, scale, bias, **kw) if loss == "sigmoid" else softmax_loss(img, txt, scale, **kw)
        out.backward()
        return out
    return run


def _duplicates_rows(base, loss, impls, img, txt, scale, bias, duplicates, block, device, repeats, warmup):
    """Each impl with and without groups, as JSON lines with the ratio."""
    n = img.shape[0]
    g = torch.Generator(device=device).manual_seed(1)
    groups = torch.randint(0, max(1, n // 2), (n,), device=device, generator=g)
    for impl in impls:
        if impl == "reference":
            continue
        plain = _time(_grouped_step(loss, impl, img, txt, scale, bias, None, "negative", block), device, repeats, warmup)
        grouped = _time(_grouped_step(loss, impl, img, txt, scale, bias, groups, duplicates, block), device, repeats, warmup)
        print(json.dumps({**base, "impl": impl + "+groups", "duplicates": duplicates, "ms": round(grouped, 3),
                          "ms_without_groups": round(plain, 3), "ratio_to_no_groups": round(grouped / plain, 3)}), flush=True)


def _floor(img, txt):
    """The three GEMMs of forward+backward, in row strips of ≤ 2^28 logits so any N fits."""
    n = img.shape[0]
    rows = max(1, min(n, (1 << 28) // n))

    def run():
        with torch.no_grad():
            dtxt = torch.zeros_like(txt)
            for i0 in range(0, n, rows):
                s = img[i0:i0 + rows] @ txt.t()
                _ = s @ txt
                dtxt.addmm_(s.t(), img[i0:i0 + rows])
    return run


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _fits_cpu_reference(n: int, dtype) -> bool:
    # the reference keeps ~6 N×N temporaries; refuse when that would exceed half the RAM
    need = 6 * n * n * torch.finfo(dtype).bits // 8
    avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return need < avail // 2


def _reexec_with_fixed_mmap_threshold() -> None:
    """glibc raises its mmap threshold after big frees, so freed N×N buffers stay resident and hide
    later peaks from RSS. A fixed threshold makes every big buffer an mmap returned on free."""
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ and __name__ == "__main__":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"})


def main(argv=None) -> None:
    if not torch.cuda.is_available():
        _reexec_with_fixed_mmap_threshold()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default=None, help="comma-separated batch sizes")
    ap.add_argument("--d", default=None, help="comma-separated embedding widths")
    ap.add_argument("--dtype", default=None, help=f"comma-separated, from {sorted(DTYPES)}")
    ap.add_argument("--impls", default=None, help="comma-separated: reference,chunked,triton")
    ap.add_argument("--loss", default="sigmoid,softmax")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--block", type=int, default=None, help="row-strip height for chunked (default: tuned)")
    ap.add_argument("--duplicates", default="negative", choices=("negative", "positive", "ignore"),
                    help="also time each impl with group ids in this mode against the same impl without")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    ns = [int(x) for x in (args.n or ("8192,32768,65536,131072" if cuda else "1024,4096")).split(",")]
    ds = [int(x) for x in (args.d or ("768" if cuda else "128")).split(",")]
    dtypes = [DTYPES[x] for x in (args.dtype or ("bfloat16" if cuda else "float32")).split(",")]
    interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    impls = (args.impls or ("reference,chunked,triton" if cuda or interp else "reference,chunked")).split(",")
    repeats = args.repeats or (5 if cuda else 3)
    meter = Meter(device)
    for loss, dtype, d, n in itertools.product(args.loss.split(","), dtypes, ds, ns):
        if True:
            img, txt, scale, bias = _inputs(n, d, dtype, device)
            fc: list = []
            floor_ms = _time(_floor(img.detach(), txt.detach()), device, repeats, args.warmup, fc)
            base = {"loss": loss, "N": n, "D": d, "dtype": str(dtype).split(".")[-1], "device": str(device),
                    "memory_method": meter.method}
            print(json.dumps({**base, "impl": "floor", "ms": round(floor_ms, 3), "cpu_ms": round(fc[0], 3) if fc else None,
                              "peak_extra_bytes": None,
                              "ratio_to_reference": None, "ratio_to_floor": 1.0, "status": "ok"}), flush=True)
            ref_ms = ref_val = ref_cpu = None
            for impl in impls:
                row = {**base, "impl": impl, "ms": None, "peak_extra_bytes": None, "ratio_to_reference": None,
                       "ratio_to_floor": None, "loss_rel_err": None, "status": "ok"}
                if impl == "reference" and not cuda and not _fits_cpu_reference(n, dtype):
                    row["status"] = "skipped: reference would exceed half the free RAM"
                    print(json.dumps(row), flush=True)
                    continue
                step = _step(loss, impl, img, txt, scale, bias)
                if impl == "chunked" and args.block:
                    step = (lambda: (lambda out: (out.backward(), out)[1])(
                        sigmoid_loss(img, txt, scale, bias, impl="chunked", block=args.block) if loss == "sigmoid"
                        else softmax_loss(img, txt, scale, impl="chunked", block=args.block)))
                try:
                    meter.start()
                    val = step().item()
                    row["peak_extra_bytes"] = meter.stop()
                    cts: list = []
                    ms = _time(step, device, repeats, max(0, args.warmup - 1), cts)
                except Exception as e:  # noqa: BLE001 - report OOM, re-raise the rest
                    if not _is_oom(e):
                        raise
                    row["status"] = "oom"
                    if cuda:
                        torch.cuda.empty_cache()
                    print(json.dumps(row), flush=True)
                    continue
                row["ms"] = round(ms, 3)
                row["ratio_to_floor"] = round(ms / floor_ms, 3)
                if cts:
                    row["cpu_ms"] = round(cts[0], 3)
                if impl == "reference":
                    ref_ms, ref_val, ref_cpu = ms, val, (cts[0] if cts else None)
                if ref_ms is not None:
                    row["ratio_to_reference"] = round(ms / ref_ms, 3)
                    if cts and ref_cpu:
                        row["cpu_ratio_to_reference"] = round(cts[0] / ref_cpu, 3)
                    row["loss_rel_err"] = abs(val - ref_val) / max(abs(ref_val), 1e-30)
                print(json.dumps(row), flush=True)
            if args.duplicates != "negative":
                _duplicates_rows(base, loss, impls, img, txt, scale, bias, args.duplicates, args.block, device, repeats,
                                 args.warmup)
            del img, txt
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
