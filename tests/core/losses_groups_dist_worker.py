"""One rank of the duplicate-aware distributed-loss tests (run by test_losses_groups_distributed.py).

argv: rank world init_file cases.pt out_dir. Runs the ring losses on this rank's slice of each
global case (its slice of the group ids too) and saves the value and gradients.
"""

import sys

import torch
import torch.distributed as dist

from litops.core.losses import sigmoid_loss_distributed, softmax_loss_distributed


def run_case(case: dict, rank: int, world: int) -> dict:
    n = case["img"].shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    img, txt = case["img"][sl].clone(), case["txt"][sl].clone()
    if case["noncontig"]:  # same values, transposed storage
        img, txt = img.t().contiguous().t(), txt.t().contiguous().t()
    img.requires_grad_(True)
    txt.requires_grad_(True)
    scale = case["scale"].clone().requires_grad_(True)
    bias = case["bias"].clone().requires_grad_(True)
    kw = dict(block=case["block"], ddp=case["ddp"], groups=case["groups"][sl].clone(), duplicates=case["duplicates"])
    if case["loss"] == "sigmoid":
        loss = sigmoid_loss_distributed(img, txt, scale, bias, **kw)
    else:
        loss = softmax_loss_distributed(img, txt, scale, **kw)
    loss.backward()
    return {"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad, "bias": bias.grad}


def through_dist_context(case: dict, rank: int, world: int) -> torch.Tensor:
    """DistContext.loss (always ddp=True) on a ddp case: the trainer's entry point must forward the groups."""
    from litops.train.distributed import DistContext

    n = case["img"].shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    ctx = DistContext(rank=rank, world=world)
    return ctx.loss(case["loss"], case["img"][sl], case["txt"][sl], case["scale"], case["bias"],
                    groups=case["groups"][sl], duplicates=case["duplicates"]).detach()


def mismatched_groups_error(rank: int) -> str | None:
    """Rank 0 passes groups, the others do not: every rank must raise, not hang."""
    x = torch.randn(3, 4)
    groups = torch.arange(3) if rank == 0 else None
    try:
        softmax_loss_distributed(x, x.clone(), torch.tensor(1.0), groups=groups, duplicates="positive")
    except ValueError as e:
        return str(e)
    return None


def main() -> None:
    rank, world, init_file, cases_path, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cases = torch.load(cases_path)
    results = [run_case(case, rank, world) for case in cases]
    for case, result in zip(cases, results):
        if case["ddp"]:
            result["dist_context_loss"] = through_dist_context(case, rank, world)
    results.append({"mismatch_error": mismatched_groups_error(rank)})
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
