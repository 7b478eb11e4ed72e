"""Cost of tensix numerics on the host: one forward of random:base at batch 8, ideal then tensix, in one process.

    PYTHONPATH=. python benchmarks/tensix_numerics_speed.py [--model random:base] [--batch 8] [--policy bf8]

Prints each time (best of --repeats forwards, after a warm-up) and the ratio tensix / ideal (issue 11: at most 1.5).
"""

from __future__ import annotations

import argparse

import torch

from host_vs_hugging_face import best_time  # this folder is on sys.path when a script here runs

from deit_tt.pipeline import build_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--policy", default="bf8")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    pixels = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    seconds = {}
    for numerics in ("ideal", "tensix"):
        pipeline = build_pipeline(args.model, executor="host", dtype_policy=args.policy, batch_size=args.batch, numerics=numerics)
        seconds[numerics] = best_time(lambda: pipeline(pixels), args.repeats)
        print(f"{pipeline.banner()}\n  {numerics}: {seconds[numerics]:.2f} s per forward", flush=True)
    print(f"tensix / ideal = {seconds['tensix'] / seconds['ideal']:.2f}")


if __name__ == "__main__":
    main()
