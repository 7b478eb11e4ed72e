"""``python -m deit_tt plan``: print the sharding plan (grids, shards, program configs, L1 per core) for a model,
chip and batch size.

Only the model's config is read (``random:<size>`` needs nothing; a hub id or directory needs its
``config.json``), and no device is opened: the plan is derived from the chip's compute grid and checked
against every ttnn validator rule on the host.

With ``--dry-run`` the model's forward runs once on tt-metal's mock device for the chip: ttnn itself
validates and allocates every op, and the table shows, per op, where its output lives, the L1 its
allocator holds per core, the op's own buffers and circular buffers as ``ttnn.graph`` reports them, the
peak per core they add up to, and the plan's estimate beside it. No values are computed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deit_tt import settings
from deit_tt.cli.common import add_model_argument, add_policy_argument
from deit_tt.errors import UserFacingError

HELP = "print the sharding plan (grids, shards, program configs, per-core L1) for a model, chip and batch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deit_tt.backends.runtime import CHIPS, DEFAULT_HOST_CHIP

    add_model_argument(parser)
    parser.add_argument(
        "--chip",
        choices=list(CHIPS),
        default=None,
        help=f"device whose compute grid to plan for (default: {settings.CHIP.described}, then {DEFAULT_HOST_CHIP})",
    )
    parser.add_argument("--batch", type=int, default=None, help="images per forward pass (default: the grid's row count, the largest supported)")
    add_policy_argument(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="run one forward on tt-metal's mock device for the chip and print what ttnn's allocator held per op",
    )
    parser.add_argument(
        "--report",
        metavar="DIR",
        type=Path,
        default=None,
        help="with --dry-run: capture one forward with ttnn.graph into DIR/db.sqlite, a ttnn-visualizer report "
        "(open it with: ttnn-visualizer --profiler-path DIR; pip install '.[visualizer]')",
    )
    parser.add_argument(
        "--compare-published",
        action="store_true",
        help="also compare with tt-metal's published Wormhole ViT-base configs (base model, batch 8, 8x8 grid only)",
    )


def classifier_heads(config) -> int:
    """2 for a distilled checkpoint (and random:<size>, built distilled), 1 for DeiTForImageClassification."""
    return 1 if "DeiTForImageClassification" in (config.architectures or ()) else 2


def load_model_config(model: str | None):
    """The Hugging Face DeiTConfig for ``model`` (random:<size>, a save_pretrained directory or a hub id)."""
    from transformers import DeiTConfig

    from deit_tt.checkpoints.loading import random_config
    from deit_tt.checkpoints.builtin import BUILT_IN_MODELS, BUILT_IN_PREFIXES, built_in_folder
    from deit_tt.checkpoints.hub import resolve_model_name

    name = resolve_model_name(model)
    if name.startswith("random:"):
        return name, random_config(name.removeprefix("random:"))
    if name.startswith(BUILT_IN_PREFIXES):
        folder = built_in_folder(name)
        if folder is None:
            raise UserFacingError(f"no built-in model {name!r}; built in: {', '.join(BUILT_IN_MODELS)}")
        return name, DeiTConfig.from_pretrained(folder)
    path = Path(name).expanduser()
    if (path.suffix or name.startswith((".", "/", "~"))) and not path.is_dir():
        raise UserFacingError(f"model directory {name!r} does not exist; pass a folder written by save_pretrained or random:base")
    source = str(path) if path.is_dir() else name
    try:
        return name, DeiTConfig.from_pretrained(source)
    except OSError as error:
        raise UserFacingError(
            f"cannot read the config of {name!r} ({type(error).__name__}: the hub is unreachable and it is not cached); "
            "plan for a size without downloading anything with --model random:tiny|small|base"
        ) from None


def format_plan(plan, model_name: str, chip_name: str) -> str:
    import pandas as pd
    import ttnn

    from deit_tt.sharding import attention_mask
    from deit_tt.sharding.dims import describe_compute_config, enum_name

    lines = [
        f"model: {model_name} | chip: {chip_name} (compute grid {plan.grid[0]}x{plan.grid[1]}, "
        f"{plan.l1_bytes_per_core} B L1 per core) | batch {plan.batch}",
        f"plan: {plan.summary()}",
        "derived on the host from the model config and the chip's grid; no device was opened",
        "",
    ]
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        lines.append(plan.table().to_string(index=False))
    lines += ["", "program configs:"]
    for name, config in plan.configs().items():
        if isinstance(config, ttnn.WormholeComputeKernelConfig):  # ttnn prints no fields for these
            config = describe_compute_config(config)
        lines.append(f"  {name}: {config}")
    lines += ["", "memory configs:"]
    for name, memory_config in plan.memory_configs().items():
        layout = enum_name(memory_config.memory_layout)
        buffer = enum_name(memory_config.buffer_type)
        spec = memory_config.shard_spec
        if spec is None:
            where = "shard spec filled in by the op" if memory_config.is_sharded() else "interleaved"
        else:
            box = spec.grid.bounding_box()
            where = f"grid {box.end.x + 1}x{box.end.y + 1}, shard {spec.shape[0]}x{spec.shape[1]}, {enum_name(spec.orientation)}"
        lines.append(f"  {name}: {buffer} {layout} ({where})")
    mask = attention_mask(plan)
    lines += [
        "",
        f"attention mask: shape {list(plan.attention_mask_shape)} (tile-padded to [{plan.batch}, 1, 32, {plan.dims.padded_tokens}]), "
        f"TILE, bfloat16, DRAM interleaved; 0 for keys < {plan.dims.tokens}, {float(mask.min()):g} for the padded keys",
    ]
    return "\n".join(lines)


def format_dry_run(model_name: str, chip_name: str, batch: int, policy_name: str, report: Path | None = None) -> str:
    """One forward on the chip's mock device, as a per-op table of ttnn's own placement and allocation;
    with ``report``, a second forward captured into a ttnn-visualizer database there."""
    import pandas as pd

    from deit_tt.backends.recording import dry_run, graph_peak, graph_report, peak, records_table
    from deit_tt.pipeline import build_pipeline

    with build_pipeline(model_name, "mock", policy_name, batch, chip=chip_name) as pipeline:
        records = dry_run(pipeline)
        bank = pipeline.runtime.l1_bytes_per_core
        table = records_table(records, pipeline.plan, bank)
        banner = pipeline.banner()
        database = None if report is None else graph_report(pipeline, report)
    top, with_cbs, estimated = peak(records), graph_peak(records), max(pipeline.plan.table()["L1 bytes/core"])
    lines = [
        banner,
        f"{len(records)} ops validated, planned and allocated by ttnn; L1 bank {bank} B per core",
        f"peak L1 held by buffers: {top.l1_allocated} B per core ({100 * top.l1_allocated / bank:.1f} %) "
        f"after op #{top.index} {top.op} (ttnn's allocator)",
        f"peak L1 with circular buffers: {with_cbs.l1_peak} B per core ({100 * with_cbs.l1_peak / bank:.1f} %) "
        f"during op #{with_cbs.index} {with_cbs.op} (ttnn.graph: buffers held + the op's buffers + its circular buffers); "
        f"margin to the bank {bank - with_cbs.l1_peak} B; the plan's largest per-op estimate: {estimated} B",
        "",
    ]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 120, "display.max_rows", None):
        lines.append(table.to_string(index=False))
    if database is not None:
        lines += ["", f"ttnn-visualizer report: {database} (open it with: ttnn-visualizer --profiler-path {report})"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from deit_tt.pipeline import plan_for
    from deit_tt.model.policy import get_policy
    from deit_tt.backends.runtime import CHIPS, DEFAULT_HOST_CHIP, Runtime
    from deit_tt.sharding import ShardingRuleError, compare_with_published

    if args.report is not None and not args.dry_run:
        raise UserFacingError("--report captures the dry run's forward: add --dry-run")
    chip_name = settings.CHIP.get(args.chip) or DEFAULT_HOST_CHIP
    if chip_name not in CHIPS:
        raise UserFacingError(f"unknown chip {chip_name!r} (from --chip or ${settings.CHIP.variable}); choose one of {', '.join(CHIPS)}")
    chip = CHIPS[chip_name]
    batch = chip.grid[1] if args.batch is None else args.batch
    policy = get_policy(args.dtype_policy)
    model_name, config = load_model_config(args.model)
    try:
        plan = plan_for(config, policy, batch, Runtime("host", chip), classifier_heads(config))
    except ShardingRuleError as error:
        raise UserFacingError(f"no valid sharding plan for batch {batch} on {chip_name}: {error}") from None
    if args.dry_run:  # the plan above refused nothing: now ttnn itself checks it
        print(format_dry_run(model_name, chip_name, batch, policy.name, args.report))
        return 0
    comparison = None
    if args.compare_published:
        try:
            comparison = compare_with_published(plan)
        except ValueError as error:
            raise UserFacingError(f"--compare-published: {error}") from None
    print(format_plan(plan, model_name, chip_name))
    if comparison is not None:
        import pandas as pd

        print("\ncompared with tt-metal's Wormhole ViT-base (batch 8, 8x8; reference §1.2):")
        with pd.option_context("display.width", 250, "display.max_colwidth", 200):
            print(comparison.to_string(index=False))
        differing = comparison[~comparison["match"]]
        print(f"\n{len(comparison) - len(differing)} of {len(comparison)} fields match the published design")
    return 0
