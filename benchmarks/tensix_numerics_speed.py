"""Cost of tensix numerics on the host: forwards of random:base at batch 8, ideal and tensix, in one process.

    PYTHONPATH=. python benchmarks/tensix_numerics_speed.py [--model random:base] [--batch 8] [--policy bf8] [--rounds 5]

Both pipelines are built first; then each round times one forward of each, in turn, so load that comes and
goes on a shared machine falls on both. Prints the best time of each (after a warm-up forward) and the
ratio tensix / ideal (issue 11: at most 1.5).
"""

from __future__ import annotations

import argparse
import time

import torch

from deit_tt.pipeline import build_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--policy", default="bf8")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pixels = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pipelines = {}
    for numerics in ("ideal", "tensix"):
        pipelines[numerics] = build_pipeline(args.model, executor="host", dtype_policy=args.policy, batch_size=args.batch, numerics=numerics)
        pipelines[numerics](pixels)  # warm-up
        print(pipelines[numerics].banner(), flush=True)
    seconds = {numerics: [] for numerics in pipelines}
    for _ in range(args.rounds):
        for numerics, pipeline in pipelines.items():
            start = time.perf_counter()
            pipeline(pixels)
            seconds[numerics].append(time.perf_counter() - start)
    for numerics, times in seconds.items():
        print(f"  {numerics}: best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s per forward ({args.rounds} rounds)")
    print(f"tensix / ideal = {min(seconds['tensix']) / min(seconds['ideal']):.2f} (best times)")


if __name__ == "__main__":
    main()
