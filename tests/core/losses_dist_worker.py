"""One rank of the distributed-loss tests (run as a subprocess by test_losses_distributed.py).

argv: rank world init_file cases.pt out_dir. Loads the global cases, runs the ring losses on
its slice, and saves the value and gradients for the parent to compare with the reference.
"""

import sys

import torch
import torch.distributed as dist

from litops.core.losses import sigmoid_loss_distributed, softmax_loss_distributed


def main() -> None:
    rank, world, init_file, cases_path, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cases = torch.load(cases_path)
    results = []
    for case in cases:
        n = case["img"].shape[0] // world
        sl = slice(rank * n, (rank + 1) * n)
        img = case["img"][sl].clone()
        txt = case["txt"][sl].clone()
        if case.get("noncontig"):  # same values, transposed storage
            img, txt = img.t().contiguous().t(), txt.t().contiguous().t()
            assert not img.is_contiguous()
        img.requires_grad_(True)
        txt.requires_grad_(True)
        scale = case["scale"].clone().requires_grad_(True)
        bias = case["bias"].clone().requires_grad_(True)
        if case["loss"] == "sigmoid":
            loss = sigmoid_loss_distributed(img, txt, scale, bias, block=case["block"], ddp=case["ddp"])
        else:
            loss = softmax_loss_distributed(img, txt, scale, block=case["block"], ddp=case["ddp"])
        loss.backward()
        results.append({"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad,
                         "bias": bias.grad})
    # a mismatched block must raise ValueError on every rank, not hang
    try:
        bad = torch.randn(2 + rank, 4)
        sigmoid_loss_distributed(bad, bad.clone(), torch.tensor(1.0), torch.tensor(0.0))
        results.append({"mismatch_error": None})
    except ValueError as e:
        results.append({"mismatch_error": str(e)})
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
