"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
import sys

from deit_tt import settings
from deit_tt.errors import UserFacingError
from deit_tt.model.policy import DEFAULT_POLICY, POLICIES
from deit_tt.backends.runtime import EXECUTORS


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="Hugging Face id, save_pretrained directory, random:tiny|small|base, or shapes:tiny (trained here on generated scenes) "
        f"(default: {settings.MODEL.described})",
    )


def add_executor_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help=f"where ttnn ops run (default: {settings.EXECUTOR.described}: a card when present, else the host)",
    )


def add_numerics_argument(parser: argparse.ArgumentParser) -> None:
    from deit_tt.backends.tensix_numerics import NUMERICS

    parser.add_argument(
        "--numerics",
        choices=NUMERICS,
        default=None,
        help="host executor only: ideal (ttnn golden functions) or tensix (a model of the card's arithmetic, "
        "built from ttnn's kernel sources, not yet measured against a card) "
        f"(default: {settings.NUMERICS.described})",
    )


def add_devices_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="chips to run on, data parallel: weights on every chip, each batch split across them "
        "(default: every chip of the machine; the host executor is one)",
    )


def add_policy_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype-policy", choices=sorted(POLICIES), default=DEFAULT_POLICY, help="ttnn dtypes per tensor family")


def refuse_mock_executor(args: argparse.Namespace, purpose: str) -> None:
    """The mock executor computes no values: refuse it before anything is loaded (``purpose`` needed them)."""
    from deit_tt.backends.runtime import no_values_error, resolve_executor

    if resolve_executor(args.executor) == "mock":
        raise no_values_error(purpose)


def check_settings(args: argparse.Namespace) -> None:
    """Every setting of a command that runs the model, checked before anything loads (one line each)."""
    if args.devices is not None and args.devices < 1:
        raise UserFacingError(f"--devices must be at least 1, got {args.devices}")
    planned_executor(args)  # --executor / ``settings.EXECUTOR`` and --numerics / ``settings.NUMERICS``
    checked_batch_size(args)


def checked_batch_size(args: argparse.Namespace) -> int:
    """--batch-size, else ``settings.BATCH``, checked before anything loads: a whole number of at least 1 that the
    core grid can take (one image per row of the attention grid: ``deit_tt.sharding.rules.check_attention_rows_fit``)."""
    from deit_tt.backends.runtime import CHIPS, DEFAULT_HOST_CHIP, card_present, resolve_executor

    if args.batch_size is not None and args.batch_size < 1:
        raise UserFacingError(f"--batch-size must be a whole number of at least 1, got {args.batch_size}")
    batch = settings.BATCH.integer(args.batch_size)
    chip = settings.CHIP.get()
    if chip is None and (resolve_executor(args.executor) == "host" or not card_present()):
        chip = DEFAULT_HOST_CHIP
    rows = CHIPS[chip].grid[1] if chip in CHIPS else None  # a card's grid is known once it is open
    if rows is not None and batch > rows:
        source = "--batch-size" if args.batch_size is not None else f"${settings.BATCH.variable}"
        raise UserFacingError(
            f"{source} {batch} is more than the {rows} rows of the {chip}'s core grid, and DeiT's attention takes one image "
            f"per row; use a batch of {rows} or less"
        )
    return batch


def planned_executor(args: argparse.Namespace) -> tuple[str, str | None]:
    """(executor, host numerics) the pipeline of --executor / --numerics will have, known before it is built
    (``deit_tt.pipeline.build_pipeline`` decides the same way)."""
    from deit_tt.backends.runtime import card_present, resolve_executor
    from deit_tt.backends.tensix_numerics import resolve_numerics

    target = resolve_executor(args.executor)
    if target == "host" or (target == "auto" and not card_present()):
        return "host", resolve_numerics(args.numerics)
    return ("device" if target == "auto" else target), None


def tolerate_undecodable_names() -> None:
    """Print file names that are not UTF-8 (kept by Python as surrogates) escaped, instead of failing on them."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def pipeline_from_args(args: argparse.Namespace, purpose: str, checkpoint=None):
    """The pipeline for --model (or ``checkpoint``, that model already loaded) / --executor / --dtype-policy /
    --batch-size, for a command whose results are values."""
    from deit_tt.pipeline import build_pipeline
    from deit_tt.sharding.rules import ShardingRuleError

    refuse_mock_executor(args, purpose)
    try:
        return build_pipeline(
            model=checkpoint or args.model,
            executor=args.executor,
            dtype_policy=args.dtype_policy,
            batch_size=checked_batch_size(args),
            devices=args.devices,
            numerics=args.numerics,
        )
    except ShardingRuleError as error:  # e.g. a batch larger than the rows of a card's grid
        raise UserFacingError(f"no sharding plan for this batch on this chip: {error}") from None
