"""``python -m deit_tt classify IMAGE... [--json]``: top-k predictions of the CLS head, the distillation head and their average.

Images are files, or ``-`` to read ``{"input_data": ["<base64 image>", ...]}`` from stdin (the request
body hosted endpoints accept; each entry becomes an image named ``stdin[i]``, in place of the ``-``).
Reading stdin happens only when ``-`` is given, never implicitly.

Default output is a table per image, preceded by the pipeline banner (executor, chip, model, real or
random weights, dtype policy). With ``--json``, stdout holds only a JSON list with one entry per image:
a list of ``{"label", "score"}`` sorted by score (the averaged head), or ``{"error": "..."}`` for an
image that could not be used; the banner goes to stderr.

Photos are turned upright by their EXIF orientation (evaluation does not: see ``deit_tt.classify``).

Exit status: 0 when at least one image was classified, 1 when none could be, 2 for a usage or
model error (bad checkpoint or setting, no card for ``--executor device``, malformed stdin, non-finite
logits from damaged weights).
"""

from __future__ import annotations

import argparse
import json
import sys

from deit_tt import settings
from deit_tt.cli.common import (
    add_devices_argument,
    add_executor_argument,
    add_model_argument,
    add_numerics_argument,
    add_policy_argument,
    check_settings,
    pipeline_from_args,
    tolerate_undecodable_names,
)
from deit_tt.errors import UserFacingError

HELP = "classify images: top-k of the CLS head, the distillation head and their average"
STDIN = "-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE",
        help='image files (JPEG, PNG, WebP, GIF, BMP, TIFF); "-" reads {"input_data": [base64, ...]} JSON from stdin',
    )
    add_model_argument(parser)
    add_executor_argument(parser)
    add_numerics_argument(parser)
    add_devices_argument(parser)
    add_policy_argument(parser)
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="classes to show per head (default: 5)")
    parser.add_argument("--batch-size", type=int, default=None, help=f"images per forward pass per chip (default: {settings.BATCH.described})")
    parser.add_argument("--json", action="store_true", help="print only a JSON list to stdout (banner to stderr)")
    parser.epilog = (
        'With --json each image gets a list of {"label", "score"} (softmax of the averaged heads, best first) '
        'or {"error": "..."}. Exit status: 0 if at least one image was classified, 1 if none could be, '
        "2 for a usage or model error."
    )


def run(args: argparse.Namespace) -> int:
    from deit_tt.classify import classify_sources, decode_input_data, format_table, to_json

    tolerate_undecodable_names()
    if args.top_k < 1:
        raise UserFacingError(f"--top-k must be at least 1, got {args.top_k}")
    check_settings(args)
    if args.images.count(STDIN) > 1:
        raise UserFacingError('"-" (stdin) can be given only once')
    sources: list[tuple[str, object]] = []
    for image in args.images:
        if image == STDIN:
            if sys.stdin is None or sys.stdin.isatty():
                raise UserFacingError('"-" reads JSON from stdin, but stdin is a terminal; pipe {"input_data": [...]} into the command')
            sources.extend(decode_input_data(sys.stdin.read()))
        else:
            sources.append((image, image))

    pipeline = pipeline_from_args(args, "classify")
    try:
        banner_stream = sys.stderr if args.json else sys.stdout
        print(pipeline.banner(), file=banner_stream, flush=True)
        results = classify_sources(pipeline, sources, top_k=args.top_k, progress=True)
    finally:
        pipeline.close()

    if args.json:
        json.dump(to_json(results), sys.stdout, indent=None, allow_nan=False)  # scores are finite (classify_pixels)
        sys.stdout.write("\n")
    else:
        print(format_table(results))
    classified = sum(result.ok for result in results)
    if classified == 0:
        print(f"error: none of the {len(results)} image(s) could be classified", file=sys.stderr)
        return 1
    if classified < len(results):
        print(f"note: {len(results) - classified} of {len(results)} image(s) could not be classified", file=sys.stderr)
    return 0
