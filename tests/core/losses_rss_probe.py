"""Measure the peak RSS growth (bytes) of one loss forward+backward; run as a subprocess.

argv: impl loss N D. Prints one JSON line. The kernel's peak-RSS mark (VmHWM) is reset
through /proc/self/clear_refs right before the measured call, so import-time peaks do not
hide the growth; a polling thread is the fallback where that file is not writable."""

import json
import sys
import threading
import time

import torch

from litops.core.losses import sigmoid_loss, softmax_loss


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def main() -> None:
    impl, loss, n, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, d), dim=-1).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(n, d), dim=-1).requires_grad_()
    scale = torch.tensor(10.0, requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)

    def step():
        out = sigmoid_loss(img, txt, scale, bias, impl=impl) if loss == "sigmoid" else softmax_loss(img, txt, scale, impl=impl)
        out.backward()
        return out

    small = [t[:64].detach().clone().requires_grad_() for t in (img, txt)]  # warm up kernels/allocator paths
    (sigmoid_loss if loss == "sigmoid" else softmax_loss)(*small, scale, *([bias] if loss == "sigmoid" else []), impl=impl).backward()
    before = _status("VmRSS")
    method = "VmHWM"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        method = "poll"
    peak = [before]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], _status("VmRSS"))
            time.sleep(0.002)

    th = threading.Thread(target=poll, daemon=True)
    if method == "poll":
        th.start()
    t0 = time.perf_counter()
    out = step()
    secs = time.perf_counter() - t0
    stop.set()
    if method == "poll":
        th.join()
    hwm = _status("VmHWM") if method == "VmHWM" else peak[0]
    grow = max(hwm, peak[0]) - before
    print(json.dumps({"impl": impl, "loss": loss, "N": n, "D": d, "rss_growth_bytes": grow, "method": method,
                      "seconds": round(secs, 3), "loss_value": out.item(), "finite_grads": bool(torch.isfinite(img.grad).all())}))


if __name__ == "__main__":
    main()
