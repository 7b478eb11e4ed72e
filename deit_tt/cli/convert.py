"""``python -m deit_tt convert``: convert a checkpoint, report the quantisation error, show the cache at work."""

from __future__ import annotations

import argparse
import time

import pandas as pd

from deit_tt import settings
from deit_tt.checkpoints.loading import load_checkpoint
from deit_tt.cli.common import add_model_argument, add_policy_argument
from deit_tt.model.conversion import convert_parameters
from deit_tt.model.policy import get_policy
from deit_tt.model.quantization import quantization_report, summarize

HELP = "convert a checkpoint to ttnn tensors, report the error per tensor family, time conversion vs cache load"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    add_policy_argument(parser)
    parser.add_argument(
        "--cache-dir",
        default=None,
        help=f"conversion cache directory (default: {settings.CACHE.described})",
    )


def run(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(args.model)
    policy = get_policy(args.dtype_policy)
    dtypes = ", ".join(f"{k} {v}" for k, v in policy.describe().items() if k != "name")
    print(f"{checkpoint.describe()} | dtype policy: {policy.name} ({dtypes})")

    parameters = convert_parameters(checkpoint, policy, cache_dir=args.cache_dir)
    info = parameters.cache
    if info.status == "hit":
        # The entry already existed: time a conversion without the cache for the comparison.
        start = time.perf_counter()
        convert_parameters(checkpoint, policy, cache_dir=False)
        conversion_seconds, conversion_note = time.perf_counter() - start, "without writing the cache"
        load_info = info
    else:
        conversion_seconds, conversion_note = info.seconds, "including writing the cache"
        load_info = convert_parameters(checkpoint, policy, cache_dir=args.cache_dir).cache

    report = quantization_report(checkpoint, parameters)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summarize(report).to_string(index=False, float_format=lambda x: f"{x:.6g}"))
    print(f"{len(report)} tensors; errors are over real entries only (padding excluded; padding_zero checks it reads back as 0)")

    if load_info.status == "hit":
        ratio = conversion_seconds / load_info.seconds if load_info.seconds > 0 else float("inf")
        print(
            f"conversion: {conversion_seconds:.2f} s ({conversion_note}) | cache load: {load_info.seconds:.2f} s "
            f"(of which reading + sha256 of every file: {load_info.verify_seconds:.2f} s) | {ratio:.1f}x faster"
        )
    else:
        print(f"conversion: {conversion_seconds:.2f} s | cache not usable: {load_info.status} ({load_info.reason})")
    if info.status == "rebuilt":
        print(f"the previous cache entry was rebuilt: {info.reason}")
    print(f"cache: {info.path} ({info.total_bytes / 1e6:.1f} MB)")
    return 0
