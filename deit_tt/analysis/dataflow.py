"""The sharding plan as pictures and short tables: a per-op dataflow diagram and program-config field tables.

In the spirit of the op-by-op diagrams of tt-metal's ``tech_reports/ViT-TTNN/vit.md``, but drawn from the plan's
own objects (``deit_tt.sharding.walk``), so the figure changes with the model, the batch and the device grid.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from deit_tt.sharding import grid_role
from deit_tt.sharding.dims import fmt_grid, fmt_shard, layout_name
from deit_tt.sharding.walk import walk

ROLE_COLOURS = {"encoder": "#cfe2f3", "attention": "#f9cb9c", "classifier": "#d9ead3"}

# The fields worth reading of each program-config type, in the order a reader derives them.
CONFIG_FIELDS = (
    "compute_with_storage_grid_size",
    "in0_block_w",
    "per_core_M",
    "per_core_N",
    "out_subblock_h",
    "out_subblock_w",
    "block_h",
    "block_w",
    "subblock_w",
    "fused_activation",
)


def dataflow_table(plan) -> pd.DataFrame:
    """One row per op of an encoder layer and the head: the grid it runs on, its output's layout and shard."""
    rows = []
    for step in walk(plan):
        rows.append(
            {
                "op": step.op,
                "grid role": grid_role(step.op),
                "grid": fmt_grid(step.grid),
                "config": step.config,
                "output layout": layout_name(step.layout),
                "output shard": fmt_shard(step.out.shard) if step.out is not None else "",
            }
        )
    return pd.DataFrame(rows)


def draw_dataflow(plan, title: str | None = None):
    """The op chain of one encoder layer and the head, one box per op, coloured by the grid it runs on.

    Each box reads ``op · grid · output layout, shard per core``; returns the figure.
    """
    table = dataflow_table(plan)
    figure, axes = plt.subplots(figsize=(8.5, 0.42 * len(table) + 0.8))
    for index, row in table.iterrows():
        y = len(table) - 1 - index
        axes.add_patch(plt.Rectangle((0, y + 0.1), 1, 0.8, facecolor=ROLE_COLOURS[row["grid role"]], edgecolor="#555555"))
        shard = f", shard {row['output shard']}" if row["output shard"] else ""
        axes.text(0.02, y + 0.5, row["op"], va="center", fontsize=9, weight="bold")
        axes.text(0.42, y + 0.5, f"{row['grid']} cores · {row['output layout']}{shard}", va="center", fontsize=8.5)
        if index:
            axes.annotate("", xy=(0.2, y + 0.9), xytext=(0.2, y + 1.1), arrowprops={"arrowstyle": "->", "color": "#555555"})
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=colour, edgecolor="#555555") for colour in ROLE_COLOURS.values()]
    grids = {"encoder": plan.encoder_grid, "attention": plan.attention_grid, "classifier": plan.classifier_grid}
    labels = [f"{role} grid {grids[role].x}x{grids[role].y}" for role in ROLE_COLOURS]
    axes.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, fontsize=8.5, frameon=False)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, len(table))
    axes.axis("off")
    axes.set_title(title or f"one encoder layer and the head, batch {plan.batch}, device grid {fmt_grid(plan.grid)}", fontsize=10)
    figure.tight_layout()
    return figure


def config_fields(configs: dict[str, object]) -> pd.DataFrame:
    """The readable fields of program configs (name -> config object) as one table, a row per config; blank where a
    config type has no such field."""
    rows = {}
    for name, config in configs.items():
        row = {"type": type(config).__name__}
        for field in CONFIG_FIELDS:
            if hasattr(config, field):
                value = getattr(config, field)
                if field == "compute_with_storage_grid_size":
                    field, value = "grid (x, y)", f"{value.x}x{value.y}"
                row[field] = "" if value is None else str(value)
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").fillna("")
