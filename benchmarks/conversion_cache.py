"""First conversion vs cached load of the converted parameters (target: the cached load is >= 5x faster).

    .venv/bin/python benchmarks/conversion_cache.py [--model random:base] [--dtype-policy bf8]

Uses a fresh temporary cache directory, so the first call always converts and writes the entry and the
following calls load it (verifying every file's size and sha256); the best load is compared, since the
machine may be shared. Building the Hugging Face model is timed separately: both paths need it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from deit_tt.checkpoints.loading import load_checkpoint
from deit_tt.model.conversion import convert_parameters
from deit_tt.model.policy import DEFAULT_POLICY, POLICIES, get_policy
from deit_tt.backends.runtime import prepare_host

TARGET_RATIO = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:base")
    parser.add_argument("--dtype-policy", choices=sorted(POLICIES), default=DEFAULT_POLICY)
    parser.add_argument("--loads", type=int, default=3, help="cached loads to time (the best one is compared)")
    args = parser.parse_args()

    prepare_host()
    start = time.perf_counter()
    checkpoint = load_checkpoint(args.model)
    load_model_seconds = time.perf_counter() - start
    policy = get_policy(args.dtype_policy)
    print(f"{checkpoint.describe()} | dtype policy: {policy.name}")
    print(f"building the Hugging Face model: {load_model_seconds:.2f} s (needed by both paths, not counted)")

    with tempfile.TemporaryDirectory(prefix="deit_tt_cache_bench_") as cache_dir:
        first = convert_parameters(checkpoint, policy, cache_dir=cache_dir).cache
        loads = [convert_parameters(checkpoint, policy, cache_dir=cache_dir).cache for _ in range(max(1, args.loads))]
        second = min(loads, key=lambda info: info.seconds)
        start = time.perf_counter()
        convert_parameters(checkpoint, policy, cache_dir=False)
        warm_conversion = time.perf_counter() - start
    assert first.status == "miss" and all(info.status == "hit" for info in loads), (first.status, [i.status for i in loads])

    ratio = first.seconds / second.seconds
    print(f"cache entry: {first.total_bytes / 1e6:.1f} MB")
    print(f"first conversion (convert + write cache): {first.seconds:.2f} s")
    median = statistics.median(info.seconds for info in loads)
    print(f"cached load (best of {len(loads)}):                {second.seconds:.2f} s  (median {median:.2f} s; "
          f"of which reading + sha256 of every file: {second.verify_seconds:.2f} s)")
    print(f"ratio: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x) {'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
    print(f"for reference, a warm conversion without the cache in the same process: {warm_conversion:.2f} s "
          f"({warm_conversion / second.seconds:.1f}x the cached load)")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
