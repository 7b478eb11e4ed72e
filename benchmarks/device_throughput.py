"""DeiT tiny/small/base on a card, measured as tt-metal measures its ViT (``deit_tt.backends.throughput``): e2e
(pre-built host input, nothing converted back, 100 warm-up + 1,000 iterations), device-only and the user-visible
pipeline rate, untraced and traced (trace + 2 CQ), on one chip and on all chips, beside tt-metal's figures.

    python benchmarks/device_throughput.py [--sizes tiny,small,base] [--batch N] [--iterations 1000] [--warmup 100]
    python benchmarks/device_throughput.py --mock [--chip n150|t3k|...]   # code paths on the mock, host loop cost only

Weights are random-initialised (``random:<size>``): shapes and dtypes, hence timings, are the real checkpoints'.
"""

from __future__ import annotations

import argparse

from deit_tt.backends import throughput
from deit_tt.backends.runtime import CHIPS
from deit_tt.errors import UserFacingError
from deit_tt.model.policy import get_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small,base")
    parser.add_argument("--batch", type=int, default=None, help="images per chip (default: the grid's rows, 8 on Wormhole)")
    parser.add_argument("--iterations", type=int, default=throughput.ITERATIONS, help="timed iterations (tt-metal: 1000)")
    parser.add_argument("--warmup", type=int, default=throughput.WARMUP, help="warm-up iterations (tt-metal: 100)")
    parser.add_argument("--pipeline-batches", type=int, default=throughput.PIPELINE_BATCHES, help="decoded batches for the pipeline rate")
    parser.add_argument("--policy", default="bf8")
    parser.add_argument("--mock", action="store_true", help="tt-metal's mock device instead of a card: no device timing")
    parser.add_argument("--chip", default="n150", choices=list(CHIPS), help="the mocked chip (with --mock)")
    args = parser.parse_args()
    sizes, policy = args.sizes.split(","), get_policy(args.policy)
    try:
        if args.mock:
            throughput.mock_run(args.chip, sizes, policy, args.batch)
            return
        throughput.require_card()  # before the checkpoints load
        table = throughput.measure_card(
            throughput.size_checkpoints(sizes), policy, args.batch, args.iterations, args.warmup, args.pipeline_batches
        )
    except UserFacingError as error:
        raise SystemExit(f"error: {error}") from None
    print(throughput.format_table(throughput.beside_anchors(table)))
    print()
    print(throughput.expectations())


if __name__ == "__main__":
    main()
