"""The evaluation loop: batches decoded ahead, run through the pipeline, committed to the results file."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from deit_tt.evaluation.decoding import LoadedBatch, iterate_batches
from deit_tt.evaluation.errors import EvaluationError
from deit_tt.evaluation.header import run_header
from deit_tt.evaluation.metrics import TOP_K, is_correct, summarize
from deit_tt.evaluation.preprocess import Preprocessor
from deit_tt.evaluation.results import ResultsWriter
from deit_tt.data.imagenet import ImageNetDataset
from deit_tt.checkpoints.labels import head_class_names


@dataclass
class EvaluationResult:
    results_path: Path
    summary: dict
    resumed: int  # images of the selection already in the results file when the run started
    evaluated: int  # images processed by this call
    seconds: float


def evaluate(
    pipeline,
    dataset: ImageNetDataset,
    results_path: str | os.PathLike,
    *,
    limit: int | None = None,
    preprocess: str | Preprocessor = "official",
    workers: int | None = None,
    compare_reference: bool = False,
    progress: bool = True,
    restart: bool = False,
    log: Callable[[str], None] | None = print,
) -> EvaluationResult:
    """Evaluate ``pipeline`` on the first ``limit`` images of ``dataset`` (evaluation order), resuming ``results_path``.

    ``pipeline(pixel_values) -> TtDeiTOutput`` with ``.batch_size`` and ``.images_per_forward`` (all chips); ``.checkpoint.model`` (fp32 Hugging
    Face model) is the reference for ``compare_reference``. Returns the summary of the selection.
    A KeyboardInterrupt leaves every finished batch committed; run again to continue.
    """
    pipeline.runtime.require_values("evaluate")
    _check_labels(pipeline, dataset)
    log = log or (lambda message: None)
    if limit is not None and limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {limit}")
    checkpoint_name = getattr(getattr(pipeline, "checkpoint", None), "name", None)
    preprocessor = preprocess if isinstance(preprocess, Preprocessor) else Preprocessor(preprocess, checkpoint_name)
    reference_model = None
    if compare_reference:
        reference_model = getattr(getattr(pipeline, "checkpoint", None), "model", None)
        if reference_model is None:
            raise EvaluationError("--compare-reference needs a pipeline with a Hugging Face checkpoint (pipeline.checkpoint.model)")
    header = run_header(pipeline, dataset, preprocessor, compare_reference)
    selection = dataset.samples[:limit] if limit else list(dataset.samples)
    writer = ResultsWriter(results_path, header, restart=restart)
    start = time.perf_counter()
    evaluated = 0
    try:
        done = {record["id"]: record for record in writer.existing.records}
        resumed = sum(sample.image_id in done for sample in selection)
        if writer.existing.records:
            log(
                f"resuming {writer.path}: {resumed} of the {len(selection)} selected images already done"
                + (f", {writer.existing.discarded_lines} uncommitted line(s) discarded" if writer.existing.discarded_lines else "")
            )
        pending = [sample for sample in selection if sample.image_id not in done]
        batch_size = int(pipeline.images_per_forward)
        batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
        correct = sum(is_correct(done[s.image_id], "average", 1) for s in selection if s.image_id in done)
        scored = sum("error" not in done[s.image_id] for s in selection if s.image_id in done)
        bar = _progress_bar(len(selection), resumed, enabled=progress)
        try:
            wait_start = time.perf_counter()
            for number, batch in enumerate(iterate_batches(dataset, batches, preprocessor, workers)):
                waited = time.perf_counter() - wait_start
                records, timings = _run_batch(pipeline, batch, reference_model)
                # the first batch of a run also waits for the decoding workers to start
                timings.update({"startup_wait_seconds" if number == 0 else "wait_seconds": waited})
                timings["decode_seconds"] = batch.decode_seconds
                timings["seconds"] = time.perf_counter() - wait_start
                writer.append(records, {key: round(value, 6) for key, value in timings.items()})
                evaluated += len(records)
                correct += sum(is_correct(record, "average", 1) for record in records)
                scored += sum("error" not in record for record in records)
                if bar is not None:
                    bar.update(len(records))
                    bar.set_postfix_str(f"top-1 {100.0 * correct / max(1, scored):.1f}%", refresh=False)
                wait_start = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
    finally:
        writer.close()
    summary = summarize(writer.path, image_ids=[sample.image_id for sample in selection])
    return EvaluationResult(writer.path, summary, resumed, evaluated, time.perf_counter() - start)


def _check_labels(pipeline, dataset: ImageNetDataset) -> None:
    """Refuse data labelled for another head: its accuracy would mean nothing."""
    checkpoint = getattr(pipeline, "checkpoint", None)
    config = getattr(checkpoint, "config", None)
    if config is None:
        return
    advice = "open it for this checkpoint: deit_tt.data.datasets.open_evaluation_dataset(path, pipeline.checkpoint)"
    if dataset.class_names is not None and dataset.class_names != head_class_names(config):
        raise EvaluationError(f"{dataset.root} was matched to the labels of another checkpoint, not {checkpoint.name}'s; {advice}")
    highest = max((sample.label for sample in dataset.samples), default=-1)
    if highest >= config.num_labels:
        raise EvaluationError(
            f"{dataset.root} has class indices up to {highest}, but the head of {checkpoint.name} has {config.num_labels} classes; {advice}"
        )


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc="evaluating", dynamic_ncols=True)


def _run_batch(pipeline, batch: LoadedBatch, reference_model) -> tuple[list[dict], dict]:
    timings = {"model_seconds": 0.0}
    top5: dict[str, list[list[int]]] = {}
    reference: list[dict] = []
    if batch.ok:
        started = time.perf_counter()
        output = pipeline(batch.pixel_values)
        timings["model_seconds"] = time.perf_counter() - started
        heads = {"average": output.logits, "cls": output.cls_logits}
        if getattr(output, "distillation_logits", None) is not None:
            heads["distillation"] = output.distillation_logits
        _refuse_non_finite(pipeline, heads, [batch.samples[position].image_id for position in batch.ok])
        top5 = {name: _top_k(logits) for name, logits in heads.items()}
        if reference_model is not None:
            started = time.perf_counter()
            reference = _reference_records(reference_model, batch.pixel_values, output.logits)
            timings["reference_seconds"] = time.perf_counter() - started
    records = []
    ok_rank = {position: rank for rank, position in enumerate(batch.ok)}
    for position, sample in enumerate(batch.samples):
        record = {"id": sample.image_id, "label": int(sample.label)}
        if position in batch.errors:
            record["error"] = batch.errors[position]
        else:
            rank = ok_rank[position]
            record["top5"] = {name: rows[rank] for name, rows in top5.items()}
            if reference:
                record["reference"] = reference[rank]
        records.append(record)
    return records, timings


def _refuse_non_finite(pipeline, heads: dict[str, torch.Tensor], image_ids: list[str]) -> None:
    """NaN or infinite logits rank nothing: stop (before the batch is committed) rather than record garbage."""
    bad = torch.zeros(len(image_ids), dtype=torch.bool)
    for logits in heads.values():
        bad |= ~torch.isfinite(logits.float()).all(dim=-1)
    if bad.any():
        name = getattr(getattr(pipeline, "checkpoint", None), "name", None) or type(pipeline).__name__
        first = image_ids[int(bad.nonzero()[0])]
        raise EvaluationError(
            f"{name} gave non-finite logits (NaN or infinity) for {int(bad.sum())} of {len(image_ids)} image(s) of the batch, "
            f"first {first}: its weights are probably damaged; re-download or re-save the checkpoint (finished batches are kept)"
        )


def _top_k(logits: torch.Tensor) -> list[list[int]]:
    return torch.topk(logits.float(), k=min(TOP_K, logits.shape[-1]), dim=-1).indices.tolist()


def _reference_records(model, pixel_values: torch.Tensor, logits: torch.Tensor) -> list[dict]:
    from deit_tt.analysis.pcc import pcc

    with torch.no_grad():
        reference = model(pixel_values=pixel_values.float()).logits.float()
    top5 = _top_k(reference)
    return [{"top5": top5[i], "pcc": pcc(logits[i], reference[i])} for i in range(reference.shape[0])]
