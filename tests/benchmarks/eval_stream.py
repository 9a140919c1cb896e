"""Retrieval metrics on a large split in bounded memory: blockwise ranks, no N×N score matrix.

    python tests/benchmarks/eval_stream.py [--n 100000] [--dim 64] [--repeat 0.3]

Prints JSON lines: the process's peak RSS (getrusage ru_maxrss) once the random embeddings
exist, then the metrics with the time they took, the peak RSS after, and the size a full N×N
float32 score matrix would have needed (40 GB at N = 100 000).

The embeddings are random unit vectors (seeded); a share `--repeat` of the samples reuse the
caption of an earlier sample, as the benchmark's captions repeat word for word.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def random_split(n: int, dim: int, repeat: float, seed: int = 0):
    """(image embeddings [n, dim], distinct caption embeddings [T, dim], caption id per sample)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    reused = torch.rand(n, generator=g) < repeat
    reused[0] = False
    fresh_ids = torch.cumsum(~reused, 0) - 1  # the caption a sample gets when it has a fresh one
    earlier = (torch.rand(n, generator=g) * fresh_ids.clamp(min=1)).long()  # an earlier sample's caption
    caption_ids = torch.where(reused, earlier, fresh_ids)
    n_texts = int(fresh_ids[-1]) + 1
    image_emb = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    text_emb = F.normalize(torch.randn(n_texts, dim, generator=g), dim=-1)
    return image_emb, text_emb, caption_ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="samples (image-caption pairs)")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension")
    p.add_argument("--repeat", type=float, default=0.3, help="share of samples reusing an earlier caption")
    args = p.parse_args(argv)

    from litops.evaluate import metrics as M

    image_emb, text_emb, caption_ids = random_split(args.n, args.dim, args.repeat)
    before = peak_rss_mb()
    print(json.dumps({"stage": "embeddings ready", "n": args.n, "dim": args.dim,
                      "distinct_captions": len(text_emb), "peak_rss_mb": before}), flush=True)
    t0 = time.perf_counter()
    metrics = M.retrieval_metrics(image_emb, text_emb, caption_ids, [1, 5, 10])
    seconds = time.perf_counter() - t0
    print(json.dumps({"stage": "retrieval metrics", "seconds": round(seconds, 1),
                      "peak_rss_before_mb": before, "peak_rss_after_mb": peak_rss_mb(),
                      "score_block_mb": M._BLOCK_FLOATS * 4 / 2**20,
                      "full_matrix_gb": round(args.n * args.n * 4 / 1e9, 1),
                      **{k: round(v, 6) for k, v in metrics.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
