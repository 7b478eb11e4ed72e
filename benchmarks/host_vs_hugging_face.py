"""Time the host executor against Hugging Face eager (bf16) on random:base, batch 8, in one run.

    .venv/bin/python benchmarks/host_vs_hugging_face.py [--model random:base] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from deit_tt.checkpoints.loading import load_checkpoint
from deit_tt.backends.executor import native_bfloat16_matmul
from deit_tt.pipeline import build_pipeline

TARGET_RATIO = 1.3


def best_time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype-policy", default="bf8")
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.model)
    pixels = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pipeline = build_pipeline(checkpoint, executor="host", dtype_policy=args.dtype_policy, batch_size=args.batch)
    host = best_time(lambda: pipeline(pixels), args.repeats)

    hf_bf16 = checkpoint.model.to(torch.bfloat16)
    with torch.no_grad():
        hugging_face = best_time(lambda: hf_bf16(pixel_values=pixels.to(torch.bfloat16)), args.repeats)
    checkpoint.model.float()

    print(pipeline.banner())
    print(
        f"cpu capability: {torch.backends.cpu.get_cpu_capability()}  native bf16 GEMM: {native_bfloat16_matmul()}  "
        f"host products in: {'float32' if pipeline.model.executor.float32_products else 'bfloat16'}"
    )
    print(f"threads: {torch.get_num_threads()}  batch: {args.batch}  best of {args.repeats}")
    print(f"host executor ({args.dtype_policy}): {host:.3f} s/batch")
    print(f"Hugging Face eager bf16:        {hugging_face:.3f} s/batch")
    print(f"ratio host / HF bf16:           {host / hugging_face:.2f}  (target <= {TARGET_RATIO})")


if __name__ == "__main__":
    main()
