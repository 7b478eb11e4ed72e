"""ImageNet-1k evaluation of a DeiT pipeline: resumable, with progress, per-head metrics.

How a run works:

- Images are decoded and preprocessed in worker processes (``workers``; 0 = in the main process)
  while the main process runs the model, so decoding overlaps inference.
- After each batch, one line per image (id, label, top-5 of every head) and a commit line for the
  batch are appended to a JSON-lines **results file**, flushed and fsync'ed. A killed run loses at
  most the batch in flight.
- Running again with the same results file resumes: committed images are skipped, anything written
  after the last commit line (a batch cut short by a kill, a half-written line) is discarded and
  redone, so no image is skipped or counted twice. Batches are cut from the evaluation order in the
  same places as in an uninterrupted run. The first line of the file records the model, dtype
  policy, executor, preprocessing and a fingerprint of the dataset; resuming with anything else is
  refused.
- The **summary** is computed only from the results file (``summarize``), so an interrupted and
  resumed run has the same summary as an uninterrupted one. The only exception is the ``timing``
  section (wall-clock throughput), which is measured.

Heads: ``average`` (the model's output: mean of the two heads' logits), ``cls`` and ``distillation``.
For a checkpoint without a distillation head, ``average`` and ``cls`` are the same head.

Corrupt images are recorded with their error message and counted; they never stop a run, and
accuracy is computed over the images that could be decoded.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from deit_tt.checkpoint import RANDOM_SIZES
from deit_tt.errors import UserFacingError
from deit_tt.imagenet import ImageNetDataset, Sample
from deit_tt.labels import NUM_CLASSES, head_class_names, imagenet_class_names, imagenet_synsets, short_name
from deit_tt.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PREPROCESSING_MODES, load_image_processor, official_transform

RESULTS_FORMAT = "deit-tt-evaluation-results/1"
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
_SIZES = {hidden: size for size, (hidden, _) in RANDOM_SIZES.items()}  # hidden size -> DeiT size

# The Hub preprocessor_config.json of facebook/deit-base-distilled-patch16-224: used for ``hf``
# preprocessing of random:* checkpoints, which have no processor of their own.
HUB_PROCESSOR_SOURCE = "facebook/deit-base-distilled-patch16-224"
HUB_PROCESSOR_VALUES = {
    "size": {"height": 256, "width": 256},
    "crop_size": {"height": 224, "width": 224},
    "resample": 3,  # PIL bicubic
    "do_center_crop": True,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
}


class EvaluationError(UserFacingError):
    """A results file cannot be used (different run, damaged), or the evaluation cannot start."""


# --------------------------------------------------------------------------------------------------
# Preprocessing


class Preprocessor:
    """``official`` (DeiT's eval recipe) or ``hf`` (the checkpoint's own image processor), picklable for workers.

    ``description`` says exactly what is applied; it is stored in the results file and the summary.
    For ``hf`` the processor is loaded once (``preprocessing.load_image_processor``) and sent to the
    decoding workers as an object, so they never look it up again (no repeated hub requests offline).
    """

    def __init__(self, mode: str = "official", model_name: str | None = None):
        if mode not in PREPROCESSING_MODES:
            raise EvaluationError(f"unknown preprocessing {mode!r}; use one of {', '.join(PREPROCESSING_MODES)}")
        self.mode = mode
        self.model_name = model_name
        self._processor = None
        if mode == "official":
            self.description = (
                "official: shorter side to 256 (PIL bicubic), centre crop 224, ImageNet mean/std "
                "(DeiT's eval recipe, identical to torchvision's)"
            )
            return
        if not model_name:
            raise EvaluationError("--preprocess hf needs a model whose image processor to use")
        self._processor = self._load_processor()
        self.description = _describe_processor(self._processor, self._origin())

    @property
    def uses_fallback(self) -> bool:
        return self.mode == "hf" and str(self.model_name).startswith("random:")

    def _origin(self) -> str:
        if self.uses_fallback:
            return (
                f"{self.model_name} has no image processor; using DeiTImageProcessorPil with the Hub values of "
                f"{HUB_PROCESSOR_SOURCE}"
            )
        return f"the image processor of {self.model_name}"

    def _load_processor(self):
        if self.uses_fallback:
            from transformers.models.deit import DeiTImageProcessorPil

            return DeiTImageProcessorPil(**HUB_PROCESSOR_VALUES)
        try:
            return load_image_processor(self.model_name)
        except (OSError, ValueError) as error:
            raise EvaluationError(
                f"cannot load the image processor of {self.model_name} ({type(error).__name__}); "
                "use --preprocess official, or a checkpoint folder with preprocessor_config.json"
            ) from None

    def __call__(self, image) -> torch.Tensor:
        if self.mode == "official":
            return official_transform(image)
        return self._processor(images=image, return_tensors="pt")["pixel_values"][0]


def _describe_processor(processor, origin: str) -> str:
    resample = getattr(processor, "resample", None)
    resample_name = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}.get(
        int(resample) if resample is not None else -1, str(resample)
    )
    size = getattr(processor, "size", None) or {}
    if "height" in size:
        resize = f"squash to {size['height']}x{size['width']}"
    elif "shortest_edge" in size:
        resize = f"shorter side to {size['shortest_edge']}"
    else:
        resize = f"resize {size}"
    crop = getattr(processor, "crop_size", None) or {}
    crop_text = f"centre crop {crop.get('height')}x{crop.get('width')}" if getattr(processor, "do_center_crop", False) else "no crop"
    mean = [round(float(m), 3) for m in getattr(processor, "image_mean", [])]
    std = [round(float(s), 3) for s in getattr(processor, "image_std", [])]
    return f"hf: {origin}: {resize} ({resample_name}), {crop_text}, mean {mean}, std {std}"


# --------------------------------------------------------------------------------------------------
# Loading batches (in worker processes)


@dataclass
class LoadedBatch:
    index: int  # position in the run's list of batches
    samples: list[Sample]  # every sample of the batch, decodable or not
    pixel_values: torch.Tensor  # [n_ok, 3, 224, 224] for the decodable ones, in order
    ok: list[int]  # positions in ``samples`` that were decoded
    errors: dict[int, str]  # position -> one-line error message
    decode_seconds: float


class _BatchDataset(torch.utils.data.Dataset):
    """Item k = batch k, decoded and preprocessed (run in DataLoader workers)."""

    def __init__(self, dataset: ImageNetDataset, batches: list[list[Sample]], preprocessor: Preprocessor):
        self.dataset = dataset
        self.batches = batches
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> LoadedBatch:
        from deit_tt.images import ImageError

        start = time.perf_counter()
        samples = self.batches[index]
        tensors, ok, errors = [], [], {}
        for position, sample in enumerate(samples):
            try:
                image = self.dataset.load(sample)
            except ImageError as error:
                errors[position] = str(error)
                continue
            tensors.append(self.preprocessor(image))
            ok.append(position)
        pixel_values = torch.stack(tensors) if tensors else torch.zeros(0, 3, 224, 224)
        return LoadedBatch(index, samples, pixel_values, ok, errors, time.perf_counter() - start)


def _keep(item):
    return item


def _watch_main_process(main_pid: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: exit when the evaluating process is gone (even after a SIGKILL).

    Under forkserver a worker's parent is the fork server, not the evaluating process, so torch's own
    parent check never fires; without this, a killed run would leave its workers (and the fork
    server they keep alive) behind forever.
    """
    import threading

    def watch() -> None:
        while _process_alive(main_pid):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="deit-tt-main-watch", daemon=True).start()


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")  # a killed but not yet reaped process is gone too
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to a signal-0 probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def default_workers() -> int:
    """One process per spare core (at most 4): on 2 cores, 1 worker decodes while the main process infers."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _worker_context():
    import multiprocessing

    # forkserver: workers start from a clean, single-threaded server process instead of forking a
    # process that holds ttnn and torch thread pools (fork there can deadlock).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["deit_tt.evaluation"])
    return context


def iterate_batches(
    dataset: ImageNetDataset,
    batches: list[list[Sample]],
    preprocessor: Preprocessor,
    workers: int | None = None,
) -> Iterator[LoadedBatch]:
    """Decoded, preprocessed batches in order; ``workers`` > 0 decodes ahead in worker processes."""
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise EvaluationError(f"--workers must be 0 or more, got {workers}")
    source = _BatchDataset(dataset, batches, preprocessor)
    if workers == 0 or len(batches) == 0:
        for index in range(len(source)):
            yield source[index]
        return
    loader = torch.utils.data.DataLoader(
        source,
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(batches)),
        collate_fn=_keep,
        prefetch_factor=2,
        multiprocessing_context=_worker_context(),
        worker_init_fn=functools.partial(_watch_main_process, os.getpid()),
    )
    iterator = iter(loader)
    try:
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError as error:
                if "exited unexpectedly" not in str(error):
                    raise
                raise EvaluationError(
                    "an image-decoding worker process exited unexpectedly; if you call evaluate() from a script, put the "
                    "call under `if __name__ == \"__main__\":` (workers re-import the script), or use --workers 0"
                ) from None
            yield batch
    finally:
        del iterator  # shuts the workers down, also on KeyboardInterrupt


# --------------------------------------------------------------------------------------------------
# The results file


@dataclass
class Results:
    """The committed content of a results file."""

    header: dict
    records: list[dict]  # image records, in file order
    batches: list[dict]  # commit lines
    discarded_lines: int = 0  # uncommitted or partial lines after the last commit


def read_results(path: str | os.PathLike) -> Results:
    """Parse a results file, ignoring whatever follows the last commit line (a batch cut short)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EvaluationError(f"results file {path} does not exist; run the evaluation first") from None
    results, _ = _parse(path, data)
    if results is None:
        raise EvaluationError(f"{path} has no header line: it is empty or not a deit-tt results file")
    return results


def _parse(path: Path, data: bytes) -> tuple[Results | None, int]:
    """(Results or None when there is no complete header, byte offset just after the last commit)."""
    lines = data.split(b"\n")
    complete = lines[:-1]  # the last element is b"" or a partial line without its newline
    if not complete:
        return None, 0
    try:
        header = json.loads(complete[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("type") != "header":
        raise EvaluationError(f"{path} is not a deit-tt results file (no header line); pass another --out")
    if header.get("format") != RESULTS_FORMAT:
        raise EvaluationError(f"{path} was written in format {header.get('format')!r}, not {RESULTS_FORMAT}; pass another --out")
    offset = len(complete[0]) + 1
    committed_offset = offset
    records: list[dict] = []
    batches: list[dict] = []
    pending: list[dict] = []
    bad_line: int | None = None
    for number, line in enumerate(complete[1:], start=2):
        offset += len(line) + 1
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            bad_line = bad_line or number
            continue
        if entry.get("type") == "batch":
            if bad_line is not None or entry.get("images") != len(pending):
                raise EvaluationError(
                    f"{path} is damaged at line {bad_line or number} (a committed batch is incomplete); "
                    "delete the file or pass another --out"
                )
            records.extend(pending)
            batches.append(entry)
            pending = []
            committed_offset = offset
        elif "id" in entry:
            pending.append(entry)
        else:
            bad_line = bad_line or number
    discarded = len(complete) - 1 - len(records) - len(batches) + (1 if lines[-1] else 0)
    seen: set[str] = set()
    for record in records:
        if record["id"] in seen:
            raise EvaluationError(f"{path} lists image {record['id']} twice; delete the file or pass another --out")
        seen.add(record["id"])
    return Results(header, records, batches, discarded), committed_offset


# Header fields that must match for a run to continue an existing results file.
_COMPATIBLE = {
    "model_identity": "model",
    "dtype_policy": "dtype policy",
    "executor": "executor",
    "preprocess": "preprocessing",
    "preprocess_description": "preprocessing",
    "dataset_fingerprint": "dataset",
    "compare_reference": "--compare-reference setting",
}


class ResultsWriter:
    """Appends committed batches to a results file (opened for a given header, resuming when compatible)."""

    def __init__(self, path: str | os.PathLike, header: dict, restart: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.existing = Results(header, [], [], 0)
        if restart and self.path.exists():
            self.path.unlink()
        data = self.path.read_bytes() if self.path.exists() else b""
        if data and b"\n" not in data and not b'{"type": "header"'.startswith(data[:17]):
            raise EvaluationError(f"{self.path} exists and is not a deit-tt results file; pass another --out")
        results, committed = _parse(self.path, data) if data else (None, 0)
        if results is None:
            self._write_fresh(header)
        else:
            _check_compatible(self.path, results.header, header)
            if committed < len(data):
                with self.path.open("r+b") as handle:  # drop the uncommitted tail (batch cut short by a kill)
                    handle.truncate(committed)
                    handle.flush()
                    os.fsync(handle.fileno())
            self.existing = results
        self._handle = self.path.open("ab")

    def _write_fresh(self, header: dict) -> None:
        with self.path.open("wb") as handle:
            handle.write((json.dumps(header) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, records: list[dict], batch: dict) -> None:
        text = "".join(json.dumps(record) + "\n" for record in records)
        text += json.dumps({"type": "batch", "images": len(records), **batch}) + "\n"
        self._handle.write(text.encode())  # one write: an interrupt lands before or after the whole batch
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _check_compatible(path: Path, old: dict, new: dict) -> None:
    for key, what in _COMPATIBLE.items():
        if old.get(key) != new.get(key):
            raise EvaluationError(
                f"{path} was written for a different {what} ({key}: {old.get(key)!r}, now {new.get(key)!r}); "
                "pass another --out, or --restart to discard it"
            )


# --------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvaluationResult:
    results_path: Path
    summary: dict
    resumed: int  # images of the selection already in the results file when the run started
    evaluated: int  # images processed by this call
    seconds: float


def model_size(config) -> str | None:
    """"tiny" / "small" / "base" for a 224x224, patch-16 DeiT config, else None."""
    if getattr(config, "image_size", 224) != 224 or getattr(config, "patch_size", 16) != 16:
        return None
    return _SIZES.get(getattr(config, "hidden_size", None))


def run_header(pipeline, dataset: ImageNetDataset, preprocessor: Preprocessor, compare_reference: bool) -> dict:
    """The first line of a results file: what produced it."""
    from deit_tt import __version__

    checkpoint = getattr(pipeline, "checkpoint", None)
    runtime = getattr(pipeline, "runtime", None)
    policy = getattr(pipeline, "policy", None)
    name = getattr(checkpoint, "name", None) or getattr(pipeline, "name", type(pipeline).__name__)
    config = getattr(checkpoint, "config", None)
    metadata = dataset.metadata()
    return {
        "type": "header",
        "format": RESULTS_FORMAT,
        "model": name,
        "model_identity": getattr(checkpoint, "identity", None) or name,
        "random_weights": bool(getattr(checkpoint, "is_random", False)),
        "distilled": bool(getattr(checkpoint, "distilled", True)),
        "model_size": model_size(config) if config is not None else getattr(pipeline, "model_size", None),
        "class_names": _checkpoint_class_names(config),
        "executor": getattr(runtime, "executor", None) or getattr(pipeline, "executor", "unknown"),
        "chip": getattr(getattr(runtime, "chip", None), "name", None),
        "dtype_policy": getattr(policy, "name", None) or getattr(pipeline, "dtype_policy", None),
        "batch_size": int(pipeline.batch_size),
        "chips": int(getattr(runtime, "num_devices", 1)),
        "preprocess": preprocessor.mode,
        "preprocess_description": preprocessor.description,
        "dataset": metadata,
        "dataset_fingerprint": metadata["fingerprint"],
        "compare_reference": bool(compare_reference),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "deit_tt_version": __version__,
    }


def _checkpoint_class_names(config) -> list[str] | None:
    """The head's class names when they are the checkpoint's own; None when they are ImageNet-1k's
    (the usual case, kept out of the results file)."""
    if config is None:
        return None
    names = head_class_names(config)
    return None if names == imagenet_class_names() else names


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

    ``pipeline(pixel_values) -> DeiTOutput`` with ``.batch_size`` and ``.images_per_forward`` (all chips); ``.checkpoint.model`` (fp32 Hugging
    Face model) is the reference for ``compare_reference``. Returns the summary of the selection.
    A KeyboardInterrupt leaves every finished batch committed; run again to continue.
    """
    pipeline.runtime.require_values("evaluate")
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
        correct = sum(_correct(done[s.image_id], "average", 1) for s in selection if s.image_id in done)
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
                correct += sum(_correct(record, "average", 1) for record in records)
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


def _top_k(logits: torch.Tensor) -> list[list[int]]:
    return torch.topk(logits.float(), k=min(TOP_K, logits.shape[-1]), dim=-1).indices.tolist()


def _reference_records(model, pixel_values: torch.Tensor, logits: torch.Tensor) -> list[dict]:
    from deit_tt.pcc import pcc

    with torch.no_grad():
        reference = model(pixel_values=pixel_values.float()).logits.float()
    top5 = _top_k(reference)
    return [{"top5": top5[i], "pcc": pcc(logits[i], reference[i])} for i in range(reference.shape[0])]


def _correct(record: dict, head: str, k: int) -> bool:
    predictions = record.get("top5", {}).get(head)
    return bool(predictions) and record["label"] in predictions[:k]


# --------------------------------------------------------------------------------------------------
# Summary: computed from the results file only


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
    names = header.get("class_names") or imagenet_class_names()

    head_metrics = {}
    for head in heads:
        correct1 = sum(_correct(record, head, 1) for record in scored)
        correct5 = sum(_correct(record, head, 5) for record in scored)
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
        "heads": head_metrics,
        "published": published_reference(header.get("model_size"), header.get("distilled", True)),
        "head_disagreement": _head_disagreement(scored) if "distillation" in heads else None,
        "per_class": _per_class(scored, names),
        "most_confused": _most_confused(scored, names),
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


def _per_class(scored: list[dict], names: Sequence[str]) -> list[dict]:
    synsets = imagenet_synsets()
    totals: Counter = Counter()
    top1: Counter = Counter()
    top5: Counter = Counter()
    for record in scored:
        label = record["label"]
        totals[label] += 1
        top1[label] += _correct(record, "average", 1)
        top5[label] += _correct(record, "average", 5)
    return [
        {
            "index": label,
            "synset": synsets[label],
            "name": _class_name(names, label),
            "images": totals[label],
            "top1": _percent(top1[label], totals[label]),
            "top5": _percent(top5[label], totals[label]),
        }
        for label in sorted(totals)
    ]


def _most_confused(scored: list[dict], names: Sequence[str], count: int = CONFUSED_PAIRS) -> list[dict]:
    synsets = imagenet_synsets()
    pairs = Counter(
        (record["label"], record["top5"]["average"][0])
        for record in scored
        if record["top5"]["average"][0] != record["label"]
    )
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:count]
    return [
        {
            "true": true,
            "true_synset": synsets[true],
            "true_name": _class_name(names, true),
            "predicted": predicted,
            "predicted_synset": synsets[predicted] if 0 <= predicted < NUM_CLASSES else None,
            "predicted_name": _class_name(names, predicted),
            "count": n,
        }
        for (true, predicted), n in ranked
    ]


def _class_name(names: Sequence[str], index: int) -> str:
    """Short name of head class ``index``; the index itself for a class the head does not name."""
    return short_name(names[index]) if 0 <= index < len(names) else str(index)


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


RESULTS_DIR_ENV = "DEIT_TT_RESULTS_DIR"
# The fp32 PyTorch reference runs on the CPU next to the model: affordable for a sample, not for 50,000 images.
REFERENCE_AUTO_LIMIT = 2000


def default_results_path(pipeline, preprocess: str, compare_reference: bool, results_dir: str | os.PathLike | None = None) -> Path:
    """Where a run's results file lives unless told otherwise, shared by ``evaluate`` (CLI) and notebook 04 so that
    each resumes the other's run: ``$DEIT_TT_RESULTS_DIR`` (else ~/.cache/deit_tt/evaluation) /
    ``<model>-<executor>-<policy>-<preprocess>[-reference].jsonl``."""
    checkpoint = pipeline.checkpoint
    model = re.sub(r"[^A-Za-z0-9_.-]+", "-", getattr(checkpoint, "short_name", None) or checkpoint.name)
    folder = Path(results_dir or os.environ.get(RESULTS_DIR_ENV) or Path.home() / ".cache" / "deit_tt" / "evaluation")
    suffix = "-reference" if compare_reference else ""
    return folder.expanduser() / f"{model}-{pipeline.runtime.executor}-{pipeline.policy.name}-{preprocess}{suffix}.jsonl"


def compare_reference_for(setting: str | bool, images: int) -> bool:
    """``"auto"``: compare with the PyTorch reference only for runs of at most REFERENCE_AUTO_LIMIT images;
    ``"1"``/``"0"`` or a bool: as given."""
    if setting == "auto":
        return images <= REFERENCE_AUTO_LIMIT
    return setting in (True, "1", "true", "yes", "on")


def deterministic_part(summary: dict) -> dict:
    """The summary without its measured ``timing`` section: equal for interrupted and uninterrupted runs."""
    return {key: value for key, value in summary.items() if key != "timing"}


# --------------------------------------------------------------------------------------------------
# Tables and files


def summary_table(summary: dict):
    """pandas DataFrame, one row per head: top-1 / top-5 (%), published top-1 and the gap."""
    import pandas as pd

    published = summary.get("published") or {}
    rows = []
    for head, metrics in summary["heads"].items():
        reference = (published.get("top1") or {}).get(head)
        reference5 = (published.get("top5") or {}).get(head)
        rows.append(
            {
                "head": head,
                "top-1 %": metrics["top1"],
                "top-5 %": metrics["top5"],
                "published top-1 %": reference,
                "gap top-1": None if reference is None or metrics["top1"] is None else metrics["top1"] - reference,
                "published top-5 %": reference5,
            }
        )
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


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval (%) for ``correct`` successes out of ``total``."""
    if total == 0:
        return (0.0, 100.0)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * ((p * (1 - p) / total + z * z / (4 * total * total)) ** 0.5) / denominator
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))
