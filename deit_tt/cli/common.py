"""Arguments shared by several commands."""

from __future__ import annotations

import argparse

from deit_tt.model.policy import DEFAULT_POLICY, POLICIES
from deit_tt.backends.runtime import EXECUTORS


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="Hugging Face id, save_pretrained directory, random:tiny|small|base, or shapes:tiny (trained here on generated scenes) "
        "(default: $DEIT_TT_MODEL, then facebook/deit-base-distilled-patch16-224)",
    )


def add_executor_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="where ttnn ops run (default: $DEIT_TT_EXECUTOR, then auto: a card when present, else the host)",
    )


def add_numerics_argument(parser: argparse.ArgumentParser) -> None:
    from deit_tt.backends.tensix_numerics import NUMERICS

    parser.add_argument(
        "--numerics",
        choices=NUMERICS,
        default=None,
        help="host executor only: ideal (ttnn golden functions) or tensix (a model of the card's arithmetic, "
        "built from ttnn's kernel sources, not yet measured against a card) (default: $DEIT_TT_NUMERICS, then tensix)",
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


def pipeline_from_args(args: argparse.Namespace, purpose: str, checkpoint=None):
    """The pipeline for --model (or ``checkpoint``, that model already loaded) / --executor / --dtype-policy /
    --batch-size, for a command whose results are values."""
    from deit_tt.pipeline import build_pipeline

    refuse_mock_executor(args, purpose)

    return build_pipeline(
        model=checkpoint or args.model,
        executor=args.executor,
        dtype_policy=args.dtype_policy,
        batch_size=args.batch_size,
        devices=args.devices,
        numerics=args.numerics,
    )
