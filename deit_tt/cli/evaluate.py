"""``python -m deit_tt evaluate --data DIR``: top-1 / top-5 per head on ImageNet-1k, or on class folders
named by the checkpoint's labels (``deit_tt.data.datasets`` says which), resumable.

Predictions are appended batch by batch to a JSON-lines results file (``--out``, default
``deit_tt.evaluation.default_results_path``, the one notebook 04 uses too); running the same command
again continues where it stopped (Ctrl-C, a kill, a reboot). The summary JSON is written next to it
(``<out>.summary.json``) and computed from the results file alone.

One evaluation at a time writes a results file: a second one on the same file stops at once with a
line naming the process that holds it (``deit_tt.evaluation.results.ResultsLock``). ``--restart``
replaces only a results file, never another kind of file given as ``--out``.

Exit status: 0 when at least one image was evaluated, 1 when none could be (all corrupt),
2 for a usage error (bad dataset layout, bad checkpoint, bad setting, results file from another run or in
use by another evaluation, a place that cannot be written, non-finite logits), 130 when interrupted
(the finished batches are kept in every case).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deit_tt import settings
from deit_tt.cli.common import (
    add_devices_argument,
    add_executor_argument,
    add_numerics_argument,
    add_model_argument,
    add_policy_argument,
    check_settings,
    pipeline_from_args,
    planned_executor,
    refuse_mock_executor,
    tolerate_undecodable_names,
)
from deit_tt.errors import UserFacingError

HELP = "ImageNet-1k or labelled-folder evaluation: top-1/top-5 per head, resumable results file, summary JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deit_tt.data.imagenet import LAYOUTS
    from deit_tt.data.preprocessing import PREPROCESSING_MODES

    parser.add_argument("--data", required=True, metavar="DIR", help="ImageNet validation images (synset folders, flat folder + LOC_val_solution.csv, or a Hugging Face imagenet-1k copy), "
                        "or one folder of images per class named by the checkpoint's labels (config.id2label)")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto", help="dataset layout (default: auto-detect); flat and hf are ImageNet only")
    parser.add_argument("--ground-truth", metavar="FILE", default=None, help="LOC_val_solution.csv for a flat folder (default: looked up in DIR and its parent)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N images (evaluation order: sorted image ids for ImageNet, classes in turn for labelled folders)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B", help=f"images per forward pass per chip (default: {settings.BATCH.described})")
    parser.add_argument("--preprocess", choices=PREPROCESSING_MODES, default="official", help="official DeiT eval recipe (default) or the checkpoint's own HF image processor")
    parser.add_argument("--out", metavar="FILE", default=None, help="results file (JSON lines) to write or resume "
        f"(default: in {settings.RESULTS_DIR.described}, "
                        "<model>-<executor>[-<numerics>]-<policy>-<preprocess>[-reference]-<data folder>-<fingerprint>.jsonl)")
    parser.add_argument("--restart", action="store_true", help="discard an existing results file instead of resuming it (any other kind of file is refused)")
    add_model_argument(parser)
    add_executor_argument(parser)
    add_numerics_argument(parser)
    add_devices_argument(parser)
    add_policy_argument(parser)
    parser.add_argument("--compare-reference", action="store_true", help="also run the PyTorch fp32 Hugging Face model on every batch: top-1 agreement, logits PCC")
    parser.add_argument("--workers", type=int, default=None, metavar="W", help="image-decoding worker processes (default: cores - 1, at most 4; 0 = decode in the main process)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from deit_tt.checkpoints.loading import load_checkpoint
    from deit_tt.data.datasets import open_evaluation_dataset, require_folder
    from deit_tt.evaluation import Preprocessor, ResultsLock, check_results_target, default_results_dir, results_path_for

    tolerate_undecodable_names()
    if args.limit is not None and args.limit < 1:
        raise UserFacingError(f"--limit must be at least 1, got {args.limit}")
    if args.workers is not None and args.workers < 0:
        raise UserFacingError(f"--workers must be 0 or more, got {args.workers}")
    check_settings(args)
    refuse_mock_executor(args, "evaluate")
    require_folder(args.data)  # before the model: fail fast on a missing folder
    with ExitStack() as held:
        if args.out:  # checked and locked before anything loads
            out = check_results_target(args.out)
            held.enter_context(ResultsLock(out))
        else:
            check_results_target(default_results_dir() / "results.jsonl")
        checkpoint = load_checkpoint(args.model)
        dataset = open_evaluation_dataset(args.data, checkpoint, args.layout, args.ground_truth)  # before converting weights
        preprocessor = Preprocessor(args.preprocess, checkpoint.name)
        if not args.out:
            executor, numerics = planned_executor(args)
            out = results_path_for(checkpoint, executor, numerics, args.dtype_policy, dataset, preprocessor, args.compare_reference)
            check_results_target(out)
            held.enter_context(ResultsLock(out))
        return _evaluate(args, checkpoint, dataset, preprocessor, out)


def _evaluate(args: argparse.Namespace, checkpoint, dataset, preprocessor, out: Path) -> int:
    from deit_tt.evaluation import default_results_path, evaluate, format_summary, summary_path_for, write_summary

    pipeline = pipeline_from_args(args, "evaluate", checkpoint)
    try:
        print(pipeline.banner(), flush=True)
        print(dataset.describe(), flush=True)
        for note in dataset.notes:
            print(f"note: {note}")
        print(f"preprocessing: {preprocessor.description}", flush=True)
        if not args.out:  # as predicted before the pipeline was built, unless the pipeline differs
            out = default_results_path(pipeline, dataset, preprocessor, args.compare_reference)
        print(f"results file: {out}", flush=True)
        try:
            result = evaluate(
                pipeline,
                dataset,
                out,
                limit=args.limit,
                preprocess=preprocessor,
                workers=args.workers,
                compare_reference=args.compare_reference,
                progress=not args.no_progress,
                restart=args.restart,
            )
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished batches are saved in {out}; run the same command again to resume", file=sys.stderr)
            return 130
    finally:
        pipeline.close()

    try:
        summary_path = write_summary(result.summary, summary_path_for(result.results_path))
    except OSError as error:
        raise UserFacingError(
            f"cannot write the summary next to {result.results_path} ({error.strerror or error}); the results file is complete: "
            "free space and run the same command again to write it"
        ) from None
    print()
    print(format_summary(result.summary))
    print(f"\nsummary written to {summary_path}")
    if result.summary["images"]["evaluated"] == 0:
        print("error: no image could be evaluated (all corrupt?)", file=sys.stderr)
        return 1
    return 0
