"""Run the forward on one chip's mock device for every model size, head variant, batch and dtype policy.

    python tests/tools/mock_matrix.py --chip p150-13x10

One process per chip (ttnn reads the mock cluster descriptor once per process), one device opened for
all combinations. Prints one JSON line per combination: the ops ttnn completed, or the sharding rule
that refused the plan before any op was issued, or ttnn's own error; for a completed forward the peak L1 per
core held by the allocator's buffers and the peak with circular buffers as ttnn.graph counts it. tests/backends/test_mock_device.py drives it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from transformers import DeiTForImageClassification

from deit_tt.checkpoints.loading import Checkpoint, random_checkpoint
from deit_tt.model.conversion import convert_parameters
from deit_tt.backends.recording import dry_run
from deit_tt.pipeline import DeiTPipeline
from deit_tt.model.policy import POLICIES
from deit_tt.backends.runtime import CHIPS, open_mock
from deit_tt.sharding import ShardingRuleError

SIZES = ("tiny", "small", "base")


def batches_for(chip: str) -> tuple[int, ...]:
    """1, an odd size, and the largest batch (one image per attention-grid row)."""
    rows = CHIPS[chip].grid[1]
    return (1, rows // 2 + (rows // 2 + 1) % 2, rows)


def plain_checkpoint(size: str) -> Checkpoint:
    """DeiTForImageClassification (one head on the CLS token) with the distilled model's random weights."""
    distilled = random_checkpoint(size)
    config = distilled.config
    config.architectures = ["DeiTForImageClassification"]
    model = DeiTForImageClassification(config).eval()
    model.load_state_dict(distilled.model.state_dict(), strict=False)
    return Checkpoint(model, f"random:{size} (plain)", distilled.identity + ":plain", is_random=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip", required=True, choices=list(CHIPS))
    args = parser.parse_args()
    runtime = open_mock(args.chip)
    for size in SIZES:
        for checkpoint in (random_checkpoint(size), plain_checkpoint(size)):
            for policy in POLICIES.values():
                parameters = convert_parameters(checkpoint, policy)
                for batch in batches_for(args.chip):
                    start = time.perf_counter()
                    result = {"chip": args.chip, "model": checkpoint.name, "policy": policy.name, "batch": batch}
                    try:
                        pipeline = DeiTPipeline(checkpoint, runtime, policy, batch, parameters=parameters)
                    except ShardingRuleError as error:
                        result.update(outcome="refused", rule=error.rule, message=str(error))
                    else:
                        try:
                            records = dry_run(pipeline)
                            result.update(
                                outcome="completed",
                                ops=len(records),
                                peak_l1=max(r.l1_allocated for r in records),
                                peak_l1_with_cbs=max(r.l1_peak for r in records),
                            )
                            # every intermediate in L1: a trace must allocate no DRAM scratch (tracing.py's docstring)
                            result["dram_outputs"] = [f"#{r.index} {r.op}" for r in records if r.output.startswith("DRAM")]
                        except RuntimeError as error:
                            result.update(outcome="ttnn error", message=str(error).strip().splitlines()[0])
                        finally:
                            pipeline.model.release()
                    result["seconds"] = round(time.perf_counter() - start, 2)
                    print(json.dumps(result), flush=True)
    result = {"chip": args.chip, "l1_bank_bytes": runtime.l1_bytes_per_core, "grid": list(runtime.grid)}
    print(json.dumps(result), flush=True)
    runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
