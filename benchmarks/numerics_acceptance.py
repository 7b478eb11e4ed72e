"""Issue 11's acceptance table: random:tiny|small|base x bf16/bf8/bf4, logits PCC against Hugging Face fp32
and the worst stage, with ideal and with tensix host numerics (random-initialised weights, random pixels).

    PYTHONPATH=. nice -n 10 python benchmarks/numerics_acceptance.py [--batch 2] [--models tiny small base]
"""

from __future__ import annotations

import argparse

import pandas as pd

from deit_tt.checkpoints.loading import random_checkpoint
from deit_tt.analysis.numerics_lab import logits_summary, numerics_ladder, random_pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["tiny", "small", "base"])
    args = parser.parse_args()
    tables = []
    for size in args.models:
        summary = logits_summary(numerics_ladder(random_checkpoint(size), pixels=random_pixels(args.batch)))
        summary.insert(0, "model", f"random:{size}")
        tables.append(summary)
        print(summary.to_string(index=False), flush=True)
    print(f"\nhost executor, batch {args.batch}, PCC vs Hugging Face fp32 (not measured on a card)")
    print(pd.concat(tables, ignore_index=True).to_string(index=False, float_format="%.5f"))


if __name__ == "__main__":
    main()
