"""What the traced loop's host side costs per batch, with the device calls left out: the conversions only.

    .venv/bin/python benchmarks/trace_loop_host_cost.py

Per batch the loop converts the pixels to the fold's input (``model.host_pixels``: fold + row-major bf16 host
tensor) and reads the logits back (``to_torch`` of the classifier's output). Before the heads became one matmul on
each image's first tile row, the loop also read two [B, 224, 1152] bfloat8_b tensors and converted the pixels on
its own thread; now it reads one [B, 32, 2304] tensor and a worker thread converts the pixels
(``deit_tt.backends.tracing.prefetched``). Printed against tt-metal's budget: 1,470 img/s on an N150 at batch 8 is
5.4 ms per batch. Host figures only; nothing here ran on a card.
"""

from __future__ import annotations

import time

import torch
import ttnn

from deit_tt.backends.runtime import prepare_host
from deit_tt.model.conversion import fold_pixels

BUDGET_MS = 1000 * 8 / 1470


def best_ms(function, repeats: int = 20) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def main() -> None:
    prepare_host()
    for batch in (8, 64):
        pixels = torch.randn(batch, 3, 224, 224)
        convert = best_ms(lambda: ttnn.from_torch(fold_pixels(pixels), dtype=ttnn.bfloat16, layout=ttnn.ROW_MAJOR_LAYOUT))
        two_heads = ttnn.from_torch(torch.randn(batch, 224, 1152), dtype=ttnn.bfloat8_b, layout=ttnn.TILE_LAYOUT)
        one_matmul = ttnn.from_torch(torch.randn(batch, 32, 2304), dtype=ttnn.bfloat8_b, layout=ttnn.TILE_LAYOUT)
        read_before = 2 * best_ms(lambda: ttnn.to_torch(two_heads).float())
        read_after = best_ms(lambda: ttnn.to_torch(one_matmul).float())
        before, after = convert + read_before, read_after
        budget = BUDGET_MS * batch / 8
        print(
            f"batch {batch}: pixels in {convert:.1f} ms (now on the worker thread), logits out {read_before:.1f} ms -> "
            f"{read_after:.1f} ms | loop thread {before:.1f} ms -> {after:.1f} ms per batch, budget {budget:.1f} ms "
            f"(1,470 img/s{' per chip, 8 chips' if batch == 64 else ''})"
        )


if __name__ == "__main__":
    main()
