"""``python -m deit_tt <command>``: each command lives in ``deit_tt/cli/<name>.py``.

A command module provides ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Errors meant for the user (bad checkpoint, bad dataset, ...) print as one line, no traceback.
A hub checkpoint that cannot be loaded offline is refused before the commands (and torch, ttnn and
transformers with them) are imported, so that the error comes in a moment.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from deit_tt.errors import UserFacingError

COMMANDS = ("convert", "plan", "classify", "evaluate", "demo", "card-check")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deit_tt", description="DeiT on Tenstorrent hardware via ttnn")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"deit_tt.cli.{name.replace('-', '_')}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        _refuse_unloadable_model(argv)
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _refuse_unloadable_model(argv: list[str]) -> None:
    """Every command but ``demo`` (which falls back by itself) takes --model; check it (or its default) against
    an unreachable hub first."""
    from deit_tt.checkpoints.hub import unloadable_reason

    if {"-h", "--help"} & set(argv) or argv[:1] == ["demo"]:
        return
    model_only = argparse.ArgumentParser(add_help=False)
    model_only.add_argument("--model")
    problem = unloadable_reason(model_only.parse_known_args(argv)[0].model)
    if problem:
        raise UserFacingError(problem)
