"""Reports of a run: the per-head table, the CLI's text, the summary file, per-image and running-accuracy frames."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from deit_tt.evaluation.metrics import TOP_K, wilson_interval
from deit_tt.evaluation.results import read_results


def summary_table(summary: dict):
    """pandas DataFrame, one row per head: top-1 / top-5 (%), and, where there are published numbers
    (ImageNet-1k), the published top-1 / top-5 and the gap."""
    import pandas as pd

    published = summary.get("published")
    rows = []
    for head, metrics in summary["heads"].items():
        row = {"head": head, "top-1 %": metrics["top1"], "top-5 %": metrics["top5"]}
        if published is not None:
            reference = (published.get("top1") or {}).get(head)
            row["published top-1 %"] = reference
            row["gap top-1"] = None if reference is None or metrics["top1"] is None else metrics["top1"] - reference
            row["published top-5 %"] = (published.get("top5") or {}).get(head)
        rows.append(row)
    return pd.DataFrame(rows).set_index("head")


def format_summary(summary: dict) -> str:
    """The CLI's text report."""
    import pandas as pd

    images = summary["images"]
    lines = [
        f"images: {images['evaluated']:,} evaluated, {images['corrupt']} corrupt"
        + (f", {images['not_yet_evaluated']:,} not yet evaluated" if images["not_yet_evaluated"] else ""),
        f"preprocessing: {summary['preprocessing']['description']}",
    ]
    if summary.get("random_weights"):
        lines.append("note: RANDOM-INITIALISED weights: accuracy is meaningless (this run only exercises the machinery)")
    if (summary.get("dataset") or {}).get("synthetic"):
        lines.append("note: SYNTHETIC dataset: accuracy is meaningless")
    if summary.get("head_classes", TOP_K) < TOP_K:
        lines.append(f"note: the head has {summary['head_classes']} classes, so top-5 counts all of them")
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 120):
        lines += ["", summary_table(summary).to_string(na_rep="-"), ""]
    if summary.get("head_disagreement") is not None:
        lines.append(f"CLS and distillation heads disagree on top-1 for {summary['head_disagreement']:.2f}% of images")
    reference = summary.get("reference")
    if reference:
        lines.append(
            f"vs PyTorch fp32 reference ({reference['images']:,} images): top-1 agreement {reference['top1_agreement']:.2f}%, "
            f"top-5 overlap {reference['top5_overlap']:.2f}%, logits PCC mean {reference['logits_pcc_mean']:.5f} "
            f"(min {reference['logits_pcc_min']:.5f}); reference top-1 {reference['reference_top1']:.2f}%"
        )
    for item in images["corrupt_images"][:10]:
        lines.append(f"corrupt: {item['error']}")
    if images["corrupt"] > 10:
        lines.append(f"corrupt: ... and {images['corrupt'] - 10} more (all listed in the summary JSON)")
    timing = summary["timing"]
    if timing.get("images_per_second"):
        lines.append(
            f"throughput: {timing['images_per_second']:.2f} img/s end to end, {timing['model_images_per_second'] or 0:.2f} img/s "
            f"in the model ({timing['images']:,} images in {timing['seconds']:.1f} s; {timing['waiting_for_data_seconds']:.1f} s "
            f"waiting for decoded images, plus {timing['startup_wait_seconds']:.1f} s for the first batch of each run)"
        )
    return "\n".join(lines)


def summary_path_for(results_path: str | os.PathLike) -> Path:
    path = Path(results_path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".summary.json")


def write_summary(summary: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, path)
    return path


def records_frame(results_path: str | os.PathLike, image_ids: Sequence[str] | None = None):
    """One row per image (in ``image_ids`` order when given): label, top-1 of each head, correctness, error."""
    import pandas as pd

    results = read_results(results_path)
    by_id = {record["id"]: record for record in results.records}
    ordered = [by_id[i] for i in image_ids if i in by_id] if image_ids is not None else results.records
    rows = []
    for record in ordered:
        row = {"id": record["id"], "label": record["label"], "error": record.get("error")}
        for head, predictions in record.get("top5", {}).items():
            row[f"{head}_top1"] = predictions[0]
            row[f"{head}_correct_top1"] = record["label"] == predictions[0]
            row[f"{head}_correct_top5"] = record["label"] in predictions
        if "reference" in record:
            row["reference_top1"] = record["reference"]["top5"][0]
            row["reference_pcc"] = record["reference"]["pcc"]
        rows.append(row)
    return pd.DataFrame(rows)


def running_accuracy(results_path: str | os.PathLike, image_ids: Sequence[str] | None = None, head: str = "average"):
    """Top-1 / top-5 (%) over the first n evaluated images, n = 1..N (evaluation order), with the 95 % Wilson
    interval of top-1 (``top1_low``, ``top1_high``): how far the full-set number could still be."""
    import pandas as pd

    columns = ["images", "top1", "top5", "top1_low", "top1_high"]
    frame = records_frame(results_path, image_ids)
    if frame.empty or f"{head}_correct_top1" not in frame:
        return pd.DataFrame(columns=columns)
    frame = frame[frame["error"].isna()].reset_index(drop=True)
    count = pd.Series(range(1, len(frame) + 1), dtype=float)
    correct1 = frame[f"{head}_correct_top1"].astype(int).cumsum()
    low, high = zip(*(wilson_interval(int(c), int(n)) for c, n in zip(correct1, count)))
    return pd.DataFrame(
        {
            "images": count.astype(int),
            "top1": 100.0 * correct1 / count,
            "top5": 100.0 * frame[f"{head}_correct_top5"].astype(int).cumsum() / count,
            "top1_low": low,
            "top1_high": high,
        }
    )[columns]
