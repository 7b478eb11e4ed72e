"""The plan: derive every program, memory and compute-kernel config from model dims, batch and device grid.

Nothing here is a typed-in constant (see the package docstring for the grids). ``make_plan`` derives
the configs and validates them with the walk (``deit_tt.sharding.walk``); ``ShardingPlan.table()``
prints the walk with its per-core L1 estimate. The key-padding mask the plan's softmax config expects is built in
``deit_tt.sharding.mask``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd
import ttnn

from deit_tt.sharding.dims import (
    BLOCK,
    HEIGHT,
    PATCH_CHANNELS,
    ROW_MAJOR,
    TILE,
    TILE_BYTES,
    ModelDims,
    compute_config_dest_tiles,
    dtype_name,
    fmt_grid,
    fmt_shard,
    layout_name,
)
from deit_tt.sharding.rules import (
    RULE_GRID,
    ShardingRuleError,
    check_attention_rows_fit,
    check_dtype,
    check_l1_fits,
    check_model_dims,
)
from deit_tt.sharding.walk import ACTIVATION_DTYPES, walk

# ---------------------------------------------------------------------------------------------------
# Derivation helpers


def largest_divisor_at_most(limit: int, *numbers: int) -> int:
    """The largest d <= limit dividing every number (1 always qualifies)."""
    for candidate in range(min(limit, *numbers), 0, -1):
        if all(n % candidate == 0 for n in numbers):
            return candidate
    return 1


def widest_subblock(per_core_N: int, dest_tiles: int) -> int:
    """Widest out_subblock_w dividing per_core_N that fits the destination registers with out_subblock_h = 1."""
    return largest_divisor_at_most(dest_tiles, per_core_N)


def core_range(grid: tuple[int, int]) -> ttnn.CoreRangeSet:
    return ttnn.CoreRangeSet({ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(grid[0] - 1, grid[1] - 1))})


def sharded_memory_config(layout, grid: tuple[int, int], shard: tuple[int, int]) -> ttnn.MemoryConfig:
    """An L1 sharded memory config with an explicit ROW_MAJOR shard spec on (0,0)..(x-1, y-1)."""
    spec = ttnn.ShardSpec(core_range(grid), list(shard), ROW_MAJOR)
    return ttnn.MemoryConfig(layout, ttnn.BufferType.L1, spec)


@dataclass
class ShardingPlan:
    """Program, memory and compute-kernel configs for one (model, batch, device grid).

    Grids are (x = columns, y = rows), as ``compute_with_storage_grid_size`` reports them.
    ``attention_mask_shape`` / ``attention_mask_layout`` / ``attention_mask_memory_config`` describe the
    additive mask ``ttnn.scale_mask_softmax_in_place`` expects with ``plan.softmax`` (see ``attention_mask``).
    """

    dims: ModelDims
    batch: int
    grid: tuple[int, int]
    l1_bytes_per_core: int
    encoder_grid: ttnn.CoreGrid
    attention_grid: ttnn.CoreGrid
    classifier_grid: ttnn.CoreGrid
    encoder_memory_config: ttnn.MemoryConfig
    qkv_attention_memory_config: ttnn.MemoryConfig
    heads_memory_config: ttnn.MemoryConfig
    context_memory_config: ttnn.MemoryConfig
    classifier_memory_config: ttnn.MemoryConfig
    layernorm: ttnn.LayerNormShardedMultiCoreProgramConfig
    layernorm_compute: ttnn.WormholeComputeKernelConfig
    matmul_compute: ttnn.WormholeComputeKernelConfig
    softmax_compute: ttnn.WormholeComputeKernelConfig
    qkv: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    query_by_key: ttnn.MatmulMultiCoreReuseProgramConfig
    softmax: ttnn.SoftmaxShardedMultiCoreProgramConfig
    attention_by_value: ttnn.MatmulMultiCoreReuseProgramConfig
    self_output: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    ff1: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    ff2: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    classifier: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    activation_dtype: object = ttnn.bfloat8_b
    weight_dtype: object = ttnn.bfloat8_b
    # Matmul outputs: L1 block sharded; the matmul computes the shard spec itself from its program config
    # ([per_core_M*32, per_core_N*32] on (num_blocks_x, num_blocks_y)), as tt-metal's ViT passes it.
    matmul_output_memory_config: ttnn.MemoryConfig = field(default_factory=lambda: ttnn.L1_BLOCK_SHARDED_MEMORY_CONFIG)
    attention_mask_layout: object = ttnn.TILE_LAYOUT
    attention_mask_memory_config: ttnn.MemoryConfig = field(default_factory=lambda: ttnn.DRAM_MEMORY_CONFIG)
    # A matmul's compute config where it differs from ``matmul_compute``, by program-config name ("qkv", "ff1", ...).
    matmul_compute_by_op: dict[str, ttnn.WormholeComputeKernelConfig] = field(default_factory=dict)

    def matmul_compute_for(self, op: str) -> ttnn.WormholeComputeKernelConfig:
        """The compute kernel config of matmul ``op`` (a program-config name, or "patch_embedding")."""
        return self.matmul_compute_by_op.get(op, self.matmul_compute)

    # -- derived facts ------------------------------------------------------------------------

    @property
    def matmul_dest_tiles(self) -> int:
        """Destination-register budget the matmul subblocks are sized for (get_dest_reg_count)."""
        return compute_config_dest_tiles(self.matmul_compute)

    @property
    def softmax_dest_tiles(self) -> int:
        return compute_config_dest_tiles(self.softmax_compute)

    @property
    def seq_tiles(self) -> int:
        return self.dims.padded_tokens // TILE

    @property
    def m_tiles(self) -> int:
        """M of every encoder matmul in tiles: batch x padded tokens / 32."""
        return self.batch * self.seq_tiles

    @property
    def heads_per_core(self) -> int:
        return self.dims.heads // self.attention_grid.x

    @property
    def fold_input_memory_config(self) -> ttnn.MemoryConfig:
        """L1 HEIGHT_SHARDED input of ``ttnn.fold``: the (B, 224, 14, 64) row-major pixels on 2 x batch cores,
        224 x 14 / 2 = 1568 rows of 64 values per core, as tt-metal's sharded ViT stages its input."""
        dims = self.dims
        rows = dims.image_size * (dims.image_size // dims.patch_size)  # 224 x 14 rows of 64 per image
        cores = 2 * self.batch
        grid = ttnn.num_cores_to_corerangeset(cores, ttnn.CoreCoord(*self.grid), True)
        spec = ttnn.ShardSpec(grid, [self.batch * rows // cores, dims.patch_size * PATCH_CHANNELS], ROW_MAJOR)
        return ttnn.MemoryConfig(HEIGHT, ttnn.BufferType.L1, spec)

    @property
    def fold_output_memory_config(self) -> ttnn.MemoryConfig:
        """Where the fold's output moves before ``to_layout(TILE)``: interleaved L1, as tt-metal's ViT does.

        ``fold`` keeps the input's height sharding and rescales its shard to 1568 / 16 = 98 rows, which is
        not a tile multiple; ``to_layout`` refuses it ("Physical shard shape (98, 1024) must be tile {32, 32}
        sized!", tensor_layout.cpp), so the patches are un-sharded first."""
        return ttnn.L1_MEMORY_CONFIG

    @property
    def attention_mask_shape(self) -> tuple[int, int, int, int]:
        """Logical shape of the additive attention mask: ``(batch, 1, 1, padded_tokens)``.

        ttnn 0.81.1, ``scale_mask_softmax_in_place`` (what ``attention_softmax_`` calls) with a
        ``SoftmaxShardedMultiCoreProgramConfig`` (non-causal):

        - TILE layout, interleaved (DRAM or L1), bfloat16 (fp32 also accepted); tile-padded on the device to
          ``[B, 1, 32, S]``. Only row 0 of each mask tile is read: the compute kernel adds it with a row
          broadcast (``BroadcastDim::Row``) to every row of every head on the core.
        - One mask row per image, no broadcast over the batch: the reader reads ``block_w`` tiles starting at
          tile ``b * S/32`` for the cores of image ``b`` (``mask_start_tile_id`` advances by ``padded_shape[-1]/32``
          after each image's cores). Dimension 1 must be 1 ("Non-sharded mask intermediate dimensions must be 1").
        - The same shape broadcasts against the [B, heads, S, S] scores in the host golden function.
        - Alternatives the validator accepts: ROW_MAJOR ``[B, 1, S/32, 32]``, or a TILE mask sharded exactly like
          the scores (then its padded shape must equal the scores').
        """
        return (self.batch, 1, 1, self.dims.padded_tokens)

    # -- validation --------------------------------------------------------------------------

    def validate(self) -> None:
        """Run every rule (reference §2.1-§2.7) for every op of an encoder layer and the head, and the L1 budget."""
        for step in walk(self):
            check_l1_fits(step.op, step.l1_total, self.l1_bytes_per_core)

    # -- reporting ---------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """One row per op of an encoder layer and the head, with a per-core L1 estimate.

        Counted per core, in each tensor's dtype (activations ``activation_dtype``, weights ``weight_dtype``,
        LayerNorm/softmax intermediates bf16): the input shard(s) and the output shard (both resident while the op
        runs; in-place softmax counted once), plus the op's main circular buffers — for a 2D mcast linear the
        double-buffered in0 multicast block (2 x per_core_M x in0_block_w), the double-buffered weight block
        (2 x in0_block_w x per_core_N), one bias row and a bf16 partials block when K is split into several blocks;
        for LayerNorm gamma/beta, the x-mean block and the statistics tiles; for softmax the mask row, the scaled,
        exp and scalar tiles. Not counted: tensors kept alive across the op (the residual, ~one encoder shard),
        tt-metal's reserved L1 region and ``l1_small_size``; so "fits L1" is a necessary, not sufficient, check.
        """
        rows = []
        for step in walk(self):
            total = step.l1_total
            rows.append(
                {
                    "op": step.op,
                    "config": step.config,
                    "grid": fmt_grid(step.grid),
                    "cores": step.grid[0] * step.grid[1],
                    "memory layout": layout_name(step.layout),
                    "shard shape": fmt_shard(step.out.shard) if step.out is not None else "",
                    "input shards": ", ".join(fmt_shard(x.shard) for x in step.inputs),
                    "L1 bytes/core": total,
                    "L1 %": round(100.0 * total / self.l1_bytes_per_core, 1),
                    "fits L1": total <= self.l1_bytes_per_core,
                }
            )
        return pd.DataFrame(rows)

    def configs(self) -> dict[str, object]:
        """The program / compute configs by plan attribute name (for printing)."""
        return {
            name: getattr(self, name)
            for name in (
                "layernorm",
                "layernorm_compute",
                "matmul_compute",
                "softmax_compute",
                "qkv",
                "query_by_key",
                "softmax",
                "attention_by_value",
                "self_output",
                "ff1",
                "ff2",
                "classifier",
            )
        }

    def memory_configs(self) -> dict[str, ttnn.MemoryConfig]:
        return {
            name: getattr(self, name)
            for name in (
                "encoder_memory_config",
                "qkv_attention_memory_config",
                "heads_memory_config",
                "context_memory_config",
                "classifier_memory_config",
                "matmul_output_memory_config",
                "attention_mask_memory_config",
            )
        }

    def config_names(self) -> dict[int, str]:
        """id() of every config and memory config object of the plan -> its attribute name."""
        named = {**self.memory_configs(), **self.configs()}
        return {id(config): name for name, config in named.items()}

    def config_of(self, args, kwargs) -> str:
        """The plan attribute an op call is configured with: its program config, else a plan object among its other
        positional arguments, else its memory config ("" when it takes none)."""
        names = self.config_names()
        for candidate in (kwargs.get("program_config"), *args[1:], kwargs.get("memory_config")):
            if id(candidate) in names:
                return names[id(candidate)]
        return ""

    def summary(self) -> str:
        e, a, c = self.encoder_grid, self.attention_grid, self.classifier_grid
        return (
            f"{self.dims.describe()} | batch {self.batch} | device grid {fmt_grid(self.grid)} | "
            f"encoder {e.x}x{e.y}, attention {a.x}x{a.y} ({self.heads_per_core} heads/core), classifier {c.x}x{c.y} | "
            f"activations {dtype_name(self.activation_dtype)}, weights {dtype_name(self.weight_dtype)}"
        )


def make_plan(
    dims: ModelDims,
    batch: int,
    grid: tuple[int, int],
    l1_bytes_per_core: int,
    activation_dtype=ttnn.bfloat8_b,
    *,
    weight_dtype=ttnn.bfloat8_b,
    layernorm_fp32_dest_acc: bool = False,
) -> ShardingPlan:
    """Derive and validate the plan for ``dims`` at ``batch`` on a device compute grid ``grid`` = (x, y).

    Raises :class:`ShardingRuleError` naming the rule when no valid plan exists (e.g. batch > grid rows).
    """
    grid = (int(grid[0]), int(grid[1]))
    if batch < 1:
        raise ShardingRuleError(RULE_GRID, "plan", f"batch ({batch}) must be at least 1")
    check_model_dims("model", dims)
    check_dtype("activations", activation_dtype, ACTIVATION_DTYPES)
    check_dtype("weights", weight_dtype, tuple(TILE_BYTES))
    compute = compute_kernel_configs(activation_dtype == ttnn.float32, layernorm_fp32_dest_acc)
    grids = core_grids(dims, batch, grid)
    plan = ShardingPlan(
        dims=dims,
        batch=batch,
        grid=grid,
        l1_bytes_per_core=l1_bytes_per_core,
        **grids,
        **activation_memory_configs(dims, batch, **grids),
        **compute,
        **program_configs(dims, batch, compute, **grids),
        activation_dtype=activation_dtype,
        weight_dtype=weight_dtype,
    )
    plan.validate()
    return plan


def compute_kernel_configs(fp32_activations: bool, layernorm_fp32_dest_acc: bool) -> dict[str, ttnn.WormholeComputeKernelConfig]:
    """The compute kernel configs, passed to every op explicitly.

    They keep the values ttnn 0.81.1 picks when it is given none (``create_matmul_attributes`` in
    ttnn/cpp/ttnn/operations/matmul/device/matmul_device_operation.cpp, softmax_device_operation.cpp): matmuls with
    a program config run LoFi, no approx, fp32 accumulation only for fp32 outputs, packer L1 accumulation on; the
    fused scale-mask-softmax runs HiFi4 with the approximate exp. LayerNorm takes tt-metal's ViT encoder config
    (HiFi2, approx, packer L1 accumulation; ln_compute_config).
    """
    return {
        "matmul_compute": ttnn.WormholeComputeKernelConfig(
            math_fidelity=ttnn.MathFidelity.LoFi, math_approx_mode=False, fp32_dest_acc_en=fp32_activations, packer_l1_acc=True
        ),
        "softmax_compute": ttnn.WormholeComputeKernelConfig(
            math_fidelity=ttnn.MathFidelity.HiFi4, math_approx_mode=True, fp32_dest_acc_en=fp32_activations, packer_l1_acc=False
        ),
        "layernorm_compute": ttnn.WormholeComputeKernelConfig(
            math_fidelity=ttnn.MathFidelity.HiFi2, math_approx_mode=True, fp32_dest_acc_en=layernorm_fp32_dest_acc, packer_l1_acc=True
        ),
    }


def core_grids(dims: ModelDims, batch: int, grid: tuple[int, int]) -> dict[str, ttnn.CoreGrid]:
    """The three grids the forward runs on, each the largest that divides what it holds."""
    grid_x, grid_y = grid
    Ht, It, Ct = dims.hidden // TILE, dims.intermediate // TILE, dims.classifier_outputs // TILE
    check_attention_rows_fit("split_heads", batch, grid_y)
    return {
        # Encoder: rows | Mt, cols | every K/N tile count on it (hidden, 3*hidden, intermediate).
        "encoder_grid": ttnn.CoreGrid(
            y=largest_divisor_at_most(grid_y, batch * dims.padded_tokens // TILE), x=largest_divisor_at_most(grid_x, Ht, 3 * Ht, It)
        ),
        # Attention: one image per row; cols | heads and | QKV width tiles.
        "attention_grid": ttnn.CoreGrid(y=batch, x=largest_divisor_at_most(grid_x, dims.heads, 3 * Ht)),
        # Classifier: on one tile row per image (the rows holding the tokens the heads read); rows | those tiles,
        # cols | hidden tiles and | the heads' padded class tiles.
        "classifier_grid": ttnn.CoreGrid(y=largest_divisor_at_most(grid_y, batch), x=largest_divisor_at_most(grid_x, Ht, Ct)),
    }


def activation_memory_configs(
    dims: ModelDims, batch: int, encoder_grid: ttnn.CoreGrid, attention_grid: ttnn.CoreGrid, classifier_grid: ttnn.CoreGrid
) -> dict[str, ttnn.MemoryConfig]:
    """Where the activations live between ops: block-sharded on each grid, the heads height-sharded."""
    S, Mt = dims.padded_tokens, batch * dims.padded_tokens // TILE
    enc, att, cls = (encoder_grid.x, encoder_grid.y), (attention_grid.x, attention_grid.y), (classifier_grid.x, classifier_grid.y)
    heads_per_core = dims.heads // attention_grid.x
    return {
        "encoder_memory_config": sharded_memory_config(BLOCK, enc, (Mt // encoder_grid.y * TILE, dims.hidden // encoder_grid.x)),
        "qkv_attention_memory_config": sharded_memory_config(BLOCK, att, (S, 3 * dims.hidden // attention_grid.x)),
        "context_memory_config": sharded_memory_config(BLOCK, att, (S, heads_per_core * dims.head_size)),
        "classifier_memory_config": sharded_memory_config(
            BLOCK, cls, (batch // classifier_grid.y * TILE, dims.hidden // classifier_grid.x)
        ),
        # One HEIGHT_SHARDED L1 config for Q, K^T, V, scores and context heads: each op fills in its own shard spec.
        "heads_memory_config": ttnn.MemoryConfig(HEIGHT, ttnn.BufferType.L1),
    }


def program_configs(
    dims: ModelDims,
    batch: int,
    compute: dict[str, ttnn.WormholeComputeKernelConfig],
    encoder_grid: ttnn.CoreGrid,
    attention_grid: ttnn.CoreGrid,
    classifier_grid: ttnn.CoreGrid,
) -> dict[str, object]:
    """Each op's program config: 2-D multicast linears on the encoder and classifier grids, per-core matmuls and
    the softmax on the attention grid, the sharded LayerNorm."""
    St = dims.padded_tokens // TILE
    Ht, It, Ct, hst = dims.hidden // TILE, dims.intermediate // TILE, dims.classifier_outputs // TILE, dims.head_size // TILE
    Mt = batch * St
    enc, att, cls = (encoder_grid.x, encoder_grid.y), (attention_grid.x, attention_grid.y), (classifier_grid.x, classifier_grid.y)
    heads_per_core = dims.heads // attention_grid.x
    matmul_dest = compute_config_dest_tiles(compute["matmul_compute"])

    def mcast(cols_rows: tuple[int, int], Kt: int, Nt: int, fused_activation=None, Mt=Mt):
        cols, rows = cols_rows
        per_core_N = Nt // cols
        return ttnn.MatmulMultiCoreReuseMultiCastProgramConfig(
            compute_with_storage_grid_size=cols_rows,
            in0_block_w=Kt // cols,  # the whole in0 shard width: one K block per multicast step
            out_subblock_h=1,
            out_subblock_w=widest_subblock(per_core_N, matmul_dest),
            per_core_M=Mt // rows,
            per_core_N=per_core_N,
            transpose_mcast=False,
            fused_activation=fused_activation,
        )

    def reuse(Kt: int, Nt: int):
        return ttnn.MatmulMultiCoreReuseProgramConfig(
            compute_with_storage_grid_size=att,
            in0_block_w=Kt,  # the whole K per core
            out_subblock_h=1,
            out_subblock_w=widest_subblock(Nt, matmul_dest),
            per_core_M=heads_per_core * St,
            per_core_N=Nt,
        )

    layernorm_block_w = Ht // encoder_grid.x
    return {
        "layernorm": ttnn.LayerNormShardedMultiCoreProgramConfig(
            compute_with_storage_grid_size=enc,
            subblock_w=largest_divisor_at_most(compute_config_dest_tiles(compute["layernorm_compute"]), layernorm_block_w),
            block_h=Mt // encoder_grid.y,
            block_w=layernorm_block_w,
            inplace=False,
        ),
        "qkv": mcast(enc, Ht, 3 * Ht),
        "query_by_key": reuse(hst, St),
        "softmax": ttnn.SoftmaxShardedMultiCoreProgramConfig(
            compute_with_storage_grid_size=att,
            subblock_w=largest_divisor_at_most(compute_config_dest_tiles(compute["softmax_compute"]), St),
            block_h=heads_per_core * St,
            block_w=St,
        ),
        "attention_by_value": reuse(St, hst),
        "self_output": mcast(enc, Ht, Ht),
        "ff1": mcast(enc, Ht, It, fused_activation=(ttnn.UnaryOpType.GELU, True)),
        "ff2": mcast(enc, It, Ht),
        "classifier": mcast(cls, Ht, Ct, Mt=batch),
    }


MATMUL_OPS = ("patch_embedding", "qkv", "query_by_key", "attention_by_value", "self_output", "ff1", "ff2", "classifier")


def with_matmul_compute(plan: ShardingPlan, op: str, **changes) -> ShardingPlan:
    """A copy of ``plan`` where matmul ``op`` gets its compute config with ``changes`` (e.g. math_fidelity=HiFi2),
    validated again (fp32_dest_acc_en halves the dest budget its subblocks were sized for)."""
    if op not in MATMUL_OPS:
        raise ValueError(f"unknown matmul {op!r}: use one of {', '.join(MATMUL_OPS)}")
    current = plan.matmul_compute_for(op)
    fields = {name: getattr(current, name) for name in ("math_fidelity", "math_approx_mode", "fp32_dest_acc_en", "packer_l1_acc")}
    config = ttnn.WormholeComputeKernelConfig(**{**fields, **changes})
    changed = dataclasses.replace(plan, matmul_compute_by_op={**plan.matmul_compute_by_op, op: config})
    changed.validate()
    return changed
