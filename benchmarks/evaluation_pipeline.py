"""How fast can the host feed the model? Images/s of the evaluation's data path with and without the model.

Measures, on a synthetic ImageNet-like dataset (JPEGs of 320..640 px, like the validation set):

1. decode only (``deit_tt.data.images.load_image``) and decode + official preprocessing, in one process;
2. the evaluation's batch loader (``deit_tt.evaluation.iterate_batches``) with 0..W worker processes:
   how many images/s the host can decode and preprocess while nothing else runs;
3. the full evaluation (``deit_tt.evaluation.evaluate``) with the model, end to end, and how long the
   model loop waited for decoded images.

If (2) is well above the model's images/s, decoding is not the bottleneck.

    python benchmarks/evaluation_pipeline.py                       # random:tiny on the host
    python benchmarks/evaluation_pipeline.py --model facebook/deit-base-distilled-patch16-224 --executor device --full-images 512
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    from deit_tt.evaluation import default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images in the synthetic dataset (default: 64)")
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({0, 1, max(1, default_workers())}), help="worker counts to try for the data path")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--executor", default="host")
    parser.add_argument("--dtype-policy", default=None)
    parser.add_argument("--full-images", type=int, default=16, help="images for the run with the model (default: 16; the host executor is slow)")
    parser.add_argument("--skip-model", action="store_true", help="measure only the data path")
    return parser.parse_args()


def measure_single_process(dataset, count: int) -> dict:
    from deit_tt.data.images import load_image
    from deit_tt.data.preprocessing import official_transform

    decode, preprocess = [], []
    for sample in dataset.samples[:count]:
        start = time.perf_counter()
        image = load_image(sample.source)
        middle = time.perf_counter()
        official_transform(image)
        decode.append(middle - start)
        preprocess.append(time.perf_counter() - middle)
    return {
        "decode ms/img": 1000 * statistics.mean(decode),
        "preprocess ms/img": 1000 * statistics.mean(preprocess),
        "decode+preprocess img/s": len(decode) / (sum(decode) + sum(preprocess)),
    }


def measure_loader(dataset, preprocessor, batch_size: int, workers: int) -> dict:
    from deit_tt.evaluation import iterate_batches

    samples = dataset.samples
    batches = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    start = time.perf_counter()
    first = None
    images = 0
    for batch in iterate_batches(dataset, batches, preprocessor, workers):
        if first is None:
            first = time.perf_counter()
            first_images = len(batch.samples)
        images += len(batch.samples)
    end = time.perf_counter()
    steady = (images - first_images) / (end - first) if end > first and images > first_images else float("nan")
    return {
        "workers": workers,
        "first batch after s": first - start,
        "img/s incl. start-up": images / (end - start),
        "img/s after first batch": steady,
    }


def main() -> None:
    args = parse_args()
    import pandas as pd

    from deit_tt.evaluation import Preprocessor, evaluate
    from deit_tt.data.imagenet import make_synthetic_dataset, open_dataset

    with tempfile.TemporaryDirectory(prefix="deit_tt_bench_") as folder:
        classes = max(1, min(50, args.images // 4))
        root = make_synthetic_dataset(Path(folder) / "val", num_classes=classes, images_per_class=-(-args.images // classes), seed=0)
        dataset = open_dataset(root)
        print(dataset.describe())
        preprocessor = Preprocessor("official")

        single = measure_single_process(dataset, min(len(dataset), 32))
        print("\n1. one process, per image:")
        print("   " + ", ".join(f"{key} {value:.1f}" for key, value in single.items()))

        rows = [measure_loader(dataset, preprocessor, args.batch_size, workers) for workers in args.workers]
        table = pd.DataFrame(rows).set_index("workers")
        print(f"\n2. evaluation batch loader alone (batch {args.batch_size}, {len(dataset)} images, no model):")
        print(table.to_string(float_format=lambda v: f"{v:.1f}"))
        data_rate = float(table["img/s after first batch"].max())

        if args.skip_model:
            return
        from deit_tt.pipeline import build_pipeline

        pipeline = build_pipeline(model=args.model, executor=args.executor, dtype_policy=args.dtype_policy, batch_size=args.batch_size)
        try:
            print(f"\n{pipeline.banner()}")
            workers = max(args.workers)
            result = evaluate(
                pipeline, dataset, Path(folder) / "results.jsonl", limit=args.full_images, workers=workers,
                progress=False, log=None,
            )
        finally:
            pipeline.close()
        timing = result.summary["timing"]
        print(f"\n3. full evaluation with the model ({timing['images']} images, {workers} worker(s)):")
        print(
            f"   end to end {timing['images_per_second']:.2f} img/s | model alone {timing['model_images_per_second']:.2f} img/s | "
            f"waited {timing['waiting_for_data_seconds']:.1f} s of {timing['seconds']:.1f} s for decoded images "
            f"(+ {timing['startup_wait_seconds']:.1f} s for the first batch, worker start-up)"
        )
        ratio = data_rate / timing["model_images_per_second"]
        verdict = "decoding is not the bottleneck" if ratio > 1.5 else "decoding may limit throughput: add --workers"
        print(
            f"\nthe data path alone sustains {data_rate:.1f} img/s, {ratio:.0f}x the model's {timing['model_images_per_second']:.2f} img/s: "
            f"{verdict}"
        )


if __name__ == "__main__":  # required: decoding workers are started with forkserver, which re-imports this script
    main()
