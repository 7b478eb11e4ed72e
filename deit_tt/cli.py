"""``python -m deit_tt <command>``: each command lives in ``deit_tt/commands/<name>.py``.

A command module provides ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Errors meant for the user (bad checkpoint, bad dataset, ...) print as one line, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from deit_tt.errors import UserFacingError

COMMANDS = ("convert", "plan", "classify", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deit_tt", description="DeiT on Tenstorrent hardware via ttnn")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"deit_tt.commands.{name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
