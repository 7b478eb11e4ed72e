"""Metrics of a run, computed from its results file alone: per head, per class, confusions, reference, timing."""

from __future__ import annotations

import functools
import os
from collections import Counter
from typing import Callable, Sequence

from deit_tt.evaluation.results import read_results
from deit_tt.checkpoints.labels import NUM_CLASSES, imagenet_class_names, imagenet_synsets, short_name

SUMMARY_FORMAT = "deit-tt-evaluation-summary/1"
HEADS = ("average", "cls", "distillation")
TOP_K = 5
CONFUSED_PAIRS = 10

# Published ImageNet-1k validation top-1 (%), 224x224, official DeiT eval recipe.
# Per head: paper Table 3 (Touvron et al. 2021, 300 epochs); the averaged head is also the
# official README / paper Table 5 number. Top-5: official README table.
PUBLISHED_TOP1 = {
    "tiny": {"cls": 73.9, "distillation": 74.6, "average": 74.5},
    "small": {"cls": 80.9, "distillation": 81.1, "average": 81.2},
    "base": {"cls": 83.0, "distillation": 83.1, "average": 83.4},
}
PUBLISHED_TOP5 = {"tiny": {"average": 91.9}, "small": {"average": 95.4}, "base": {"average": 96.5}}
# Non-distilled checkpoints (facebook/deit-*-patch16-224): official README table.
PUBLISHED_PLAIN_TOP1 = {"tiny": 72.2, "small": 79.8, "base": 81.8}
PUBLISHED_PLAIN_TOP5 = {"tiny": 91.1, "small": 95.0, "base": 95.6}
PUBLISHED_SOURCE = (
    "Touvron et al., Training data-efficient image transformers & distillation through attention, ICML 2021 "
    "(arXiv:2012.12877v2): Table 3 (300 epochs) for the class-token and distillation-token heads of Ti/S/B; "
    "averaged head: Table 5 and facebookresearch/deit README_deit.md; top-5: README_deit.md"
)


def is_correct(record: dict, head: str, k: int) -> bool:
    predictions = record.get("top5", {}).get(head)
    return bool(predictions) and record["label"] in predictions[:k]


def summarize(results_path: str | os.PathLike, image_ids: Sequence[str] | None = None) -> dict:
    """Metrics of the images in ``results_path`` (restricted to ``image_ids``, in that order, when given).

    Deterministic: the same committed records give the same summary, whatever the batching,
    interruptions or resumes. Only ``timing`` is measured wall-clock time.
    """
    results = read_results(results_path)
    header = results.header
    by_id = {record["id"]: record for record in results.records}
    if image_ids is None:
        records = results.records
        missing: list[str] = []
    else:
        records = [by_id[i] for i in image_ids if i in by_id]
        missing = [i for i in image_ids if i not in by_id]
    scored = [record for record in records if "error" not in record]
    corrupt = [record for record in records if "error" in record]
    heads = [head for head in HEADS if any(head in record["top5"] for record in scored)]
    if not heads:
        heads = list(HEADS) if header.get("distilled", True) else ["average", "cls"]
    imagenet = is_imagenet(header)
    names = header.get("class_names") or imagenet_class_names()
    name_of = functools.partial(_class_name, names, short=imagenet)

    head_metrics = {}
    for head in heads:
        correct1 = sum(is_correct(record, head, 1) for record in scored)
        correct5 = sum(is_correct(record, head, 5) for record in scored)
        head_metrics[head] = {
            "top1": _percent(correct1, len(scored)),
            "top5": _percent(correct5, len(scored)),
            "correct_top1": correct1,
            "correct_top5": correct5,
        }
    summary = {
        "format": SUMMARY_FORMAT,
        "model": header.get("model"),
        "model_identity": header.get("model_identity"),
        "random_weights": header.get("random_weights"),
        "model_size": header.get("model_size"),
        "executor": header.get("executor"),
        "chip": header.get("chip"),
        "numerics": header.get("numerics"),  # host: ideal or tensix; None on a card
        "dtype_policy": header.get("dtype_policy"),
        "preprocessing": {"mode": header.get("preprocess"), "description": header.get("preprocess_description")},
        "dataset": header.get("dataset"),
        "images": {
            "requested": len(records) + len(missing),
            "evaluated": len(scored),
            "corrupt": len(corrupt),
            "not_yet_evaluated": len(missing),
            "corrupt_images": [{"id": r["id"], "label": r["label"], "error": r["error"]} for r in corrupt],
        },
        "head_classes": len(names),
        "heads": head_metrics,
        "published": published_reference(header.get("model_size"), header.get("distilled", True)) if imagenet else None,
        "head_disagreement": _head_disagreement(scored) if "distillation" in heads else None,
        "per_class": _per_class(scored, name_of, imagenet),
        "most_confused": _most_confused(scored, name_of, imagenet),
        "reference": _reference_summary(scored) if header.get("compare_reference") else None,
        "timing": _timing(results.batches, header),
    }
    return summary


def _percent(count: int, total: int) -> float | None:
    return 100.0 * count / total if total else None


def published_reference(size: str | None, distilled: bool = True) -> dict | None:
    """Published ImageNet-1k top-1 / top-5 (%) per head for a DeiT size, or None."""
    if size is None:
        return None
    if not distilled:
        return {
            "source": "official DeiT README (non-distilled)",
            "top1": {"average": PUBLISHED_PLAIN_TOP1[size], "cls": PUBLISHED_PLAIN_TOP1[size]},
            "top5": {"average": PUBLISHED_PLAIN_TOP5[size], "cls": PUBLISHED_PLAIN_TOP5[size]},
        }
    return {"source": PUBLISHED_SOURCE, "top1": dict(PUBLISHED_TOP1[size]), "top5": dict(PUBLISHED_TOP5[size])}


def _head_disagreement(scored: list[dict]) -> float | None:
    pairs = [(r["top5"]["cls"][0], r["top5"]["distillation"][0]) for r in scored if "distillation" in r["top5"]]
    return _percent(sum(a != b for a, b in pairs), len(pairs))


def is_imagenet(header: dict) -> bool:
    """Whether the run's labels are ImageNet-1k classes (not class folders named by the checkpoint's labels)."""
    return (header.get("dataset") or {}).get("labels", "imagenet-1k") == "imagenet-1k"


def _synset(index: int, imagenet: bool) -> str | None:
    return imagenet_synsets()[index] if imagenet and 0 <= index < NUM_CLASSES else None


def _per_class(scored: list[dict], name_of: Callable[[int], str], imagenet: bool) -> list[dict]:
    totals: Counter = Counter()
    top1: Counter = Counter()
    top5: Counter = Counter()
    for record in scored:
        label = record["label"]
        totals[label] += 1
        top1[label] += is_correct(record, "average", 1)
        top5[label] += is_correct(record, "average", 5)
    return [
        {
            "index": label,
            "synset": _synset(label, imagenet),
            "name": name_of(label),
            "images": totals[label],
            "top1": _percent(top1[label], totals[label]),
            "top5": _percent(top5[label], totals[label]),
        }
        for label in sorted(totals)
    ]


def _most_confused(scored: list[dict], name_of: Callable[[int], str], imagenet: bool, count: int = CONFUSED_PAIRS) -> list[dict]:
    pairs = Counter(
        (record["label"], record["top5"]["average"][0])
        for record in scored
        if record["top5"]["average"][0] != record["label"]
    )
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:count]
    return [
        {
            "true": true,
            "true_synset": _synset(true, imagenet),
            "true_name": name_of(true),
            "predicted": predicted,
            "predicted_synset": _synset(predicted, imagenet),
            "predicted_name": name_of(predicted),
            "count": n,
        }
        for (true, predicted), n in ranked
    ]


def _class_name(names: Sequence[str], index: int, short: bool) -> str:
    """Name of head class ``index`` (ImageNet's first lemma when ``short``); the index itself for a class the head does not name."""
    if not 0 <= index < len(names):
        return str(index)
    return short_name(names[index]) if short else names[index]


def _reference_summary(scored: list[dict]) -> dict | None:
    compared = [record for record in scored if "reference" in record]
    if not compared:
        return None
    pccs = sorted(record["reference"]["pcc"] for record in compared)
    agree1 = sum(record["reference"]["top5"][0] == record["top5"]["average"][0] for record in compared)
    ref1 = sum(record["label"] in record["reference"]["top5"][:1] for record in compared)
    ref5 = sum(record["label"] in record["reference"]["top5"][:5] for record in compared)
    overlap = sum(len(set(record["reference"]["top5"]) & set(record["top5"]["average"])) for record in compared)
    return {
        "images": len(compared),
        "model": "Hugging Face model in fp32 (PyTorch), same pixel values",
        "top1_agreement": _percent(agree1, len(compared)),
        "top5_overlap": _percent(overlap, TOP_K * len(compared)),
        "reference_top1": _percent(ref1, len(compared)),
        "reference_top5": _percent(ref5, len(compared)),
        "logits_pcc_mean": sum(record["reference"]["pcc"] for record in compared) / len(compared),
        "logits_pcc_median": pccs[len(pccs) // 2],
        "logits_pcc_min": pccs[0],
    }


def _timing(batches: list[dict], header: dict) -> dict:
    images = sum(batch["images"] for batch in batches)
    seconds = sum(batch.get("seconds", 0.0) for batch in batches)
    model_seconds = sum(batch.get("model_seconds", 0.0) for batch in batches)
    wait_seconds = sum(batch.get("wait_seconds", 0.0) for batch in batches)
    startup_seconds = sum(batch.get("startup_wait_seconds", 0.0) for batch in batches)
    decode_seconds = sum(batch.get("decode_seconds", 0.0) for batch in batches)
    return {
        "note": "measured wall-clock time of every committed batch in the file (all runs); not deterministic",
        "started": header.get("created"),
        "batches": len(batches),
        "images": images,
        "seconds": seconds,
        "images_per_second": images / seconds if seconds else None,
        "model_images_per_second": images / model_seconds if model_seconds else None,
        "waiting_for_data_seconds": wait_seconds,
        "startup_wait_seconds": startup_seconds,
        "decode_images_per_second_per_worker": images / decode_seconds if decode_seconds else None,
    }


def deterministic_part(summary: dict) -> dict:
    """The summary without its measured ``timing`` section: equal for interrupted and uninterrupted runs."""
    return {key: value for key, value in summary.items() if key != "timing"}


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval (%) for ``correct`` successes out of ``total``."""
    if total == 0:
        return (0.0, 100.0)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * ((p * (1 - p) / total + z * z / (4 * total * total)) ** 0.5) / denominator
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))
