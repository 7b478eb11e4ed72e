"""Evaluation of a DeiT pipeline on ImageNet-1k or on class folders named by the checkpoint's labels:
resumable, with progress, per-head metrics.

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

Datasets: ``deit_tt.data.datasets.open_evaluation_dataset`` picks ImageNet-1k (``deit_tt.data.imagenet``) or
labelled class folders (``deit_tt.data.class_folders``) for a checkpoint.

Modules: ``preprocess`` (what is applied to each image), ``decoding`` (worker processes), ``header``
and ``results`` (the results file), ``run`` (the loop), ``metrics`` (the summary), ``reports``
(tables and text), ``defaults`` (the results path and reference rule shared by the CLI and notebook 04).
"""

from deit_tt.evaluation.decoding import LoadedBatch, default_workers, iterate_batches
from deit_tt.evaluation.defaults import (
    REFERENCE_AUTO_IMAGES,
    compare_reference_by_default,
    compare_reference_for,
    default_results_dir,
    default_results_path,
    results_path_for,
)
from deit_tt.evaluation.errors import EvaluationError
from deit_tt.evaluation.header import HEADER_FIELDS, RESULTS_FORMAT, HeaderField, model_size, run_header
from deit_tt.evaluation.metrics import (
    CONFUSED_PAIRS,
    HEADS,
    PUBLISHED_SOURCE,
    PUBLISHED_TOP1,
    PUBLISHED_TOP5,
    SUMMARY_FORMAT,
    TOP_K,
    deterministic_part,
    published_reference,
    summarize,
    wilson_interval,
)
from deit_tt.evaluation.preprocess import HUB_PROCESSOR_SOURCE, HUB_PROCESSOR_VALUES, Preprocessor
from deit_tt.evaluation.reports import format_summary, records_frame, running_accuracy, summary_path_for, summary_table, write_summary
from deit_tt.evaluation.results import Results, ResultsLock, ResultsWriter, check_results_target, read_results
from deit_tt.evaluation.run import EvaluationResult, evaluate
