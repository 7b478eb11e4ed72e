"""The validating walk: the op sequence of one encoder layer plus the head, with every rule applied.

The sequence is not written here: the model's forward (``TtDeiT.encoder_layer`` and ``TtDeiT.head``) runs through a
``PlanningExecutor``, whose tensors are ``Sharded`` descriptions and whose ``run`` hands each ttnn op to its step
function. Each step function checks the rules of one op against the plan's configs, works out the op's output
shard (as ttnn's ``compute_output_specs`` would) and estimates its per-core L1 use, which
``ShardingPlan.table()`` prints and ``check_l1_fits`` compares with the allocator's bank.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ttnn

from deit_tt.sharding.dims import BLOCK, HEIGHT, ROW_MAJOR, TILE, compute_config_dest_tiles, fmt_grid, grid_of, op_name, tile_bytes
from deit_tt.sharding.rules import (
    RULE_CONCAT_HEADS,
    RULE_LAYERNORM,
    RULE_MCAST,
    RULE_REUSE,
    RULE_SHARD,
    RULE_SPLIT_HEADS,
    check_block_shard,
    check_concat_heads,
    check_dtype,
    check_grid_within_device,
    check_kt_divisible,
    check_layernorm,
    check_mcast_block_divisibility,
    check_mcast_in0_shard,
    check_mcast_num_blocks,
    check_mcast_output,
    check_model_dims,
    check_nonzero_block_dims,
    check_reuse_full_n,
    check_reuse_in0,
    check_reuse_in1,
    check_reuse_m,
    check_reuse_output_blocks,
    check_reuse_output_layout,
    check_reuse_same_sharding,
    check_reuse_subblock_divisibility,
    check_sharded_output_subblock,
    check_softmax,
    check_softmax_mask,
    check_split_heads_batch_rows,
    check_split_heads_cols,
    check_split_heads_input,
    check_split_heads_l1,
    check_split_heads_output,
    check_subblock_fits_dest,
    fail,
)

if TYPE_CHECKING:
    from deit_tt.sharding.plan import ShardingPlan

ACTIVATION_DTYPES = (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b)


@dataclass(frozen=True)
class Sharded:
    """A sharded tensor as the walk models it: its shard on a 2-D view (rows = everything but the last dim), and
    its logical shape (2-D for the encoder's activations [B x S, H], 4-D for the heads [B, heads, rows, columns])."""

    name: str
    layout: object
    grid: tuple[int, int]
    shard: tuple[int, int]
    dtype: object
    orientation: object = ROW_MAJOR
    shape: tuple[int, ...] = ()

    @property
    def shard_tiles(self) -> int:
        return (self.shard[0] // TILE) * (self.shard[1] // TILE)

    @property
    def shard_bytes(self) -> int:
        return self.shard_tiles * tile_bytes(self.dtype)


@dataclass
class Step:
    """One op of the walk: what ``table()`` prints and what the L1 rule checks."""

    op: str
    config: str
    grid: tuple[int, int]
    layout: object
    out: Sharded | None
    inputs: list
    l1: dict  # component -> bytes per core
    call: str = ""  # the ttnn op the forward issued (``ttnn.linear``), as the dry run records it

    @property
    def l1_total(self) -> int:
        return sum(self.l1.values())


def from_memory_config(name: str, memory_config: ttnn.MemoryConfig, dtype) -> Sharded:
    """The sharded tensor a memory config describes; it must be L1 sharded on one rectangle from core (0,0)."""
    if not memory_config.is_sharded() or memory_config.shard_spec is None:
        fail(RULE_SHARD, name, f"memory config must be sharded with a shard spec, got {memory_config.memory_layout}")
    if memory_config.buffer_type != ttnn.BufferType.L1:
        fail(RULE_SHARD, name, f"sharded activations live in L1, got {memory_config.buffer_type}")
    spec = memory_config.shard_spec
    box = spec.grid.bounding_box()
    if (box.start.x, box.start.y) != (0, 0) or spec.num_cores() != (box.end.x + 1) * (box.end.y + 1):
        fail(RULE_SHARD, name, f"shard grid {spec.grid} must be one rectangle starting at core (0,0)")
    grid = (box.end.x + 1, box.end.y + 1)
    return Sharded(name, memory_config.memory_layout, grid, tuple(spec.shape), dtype, spec.orientation)


def walk(plan: ShardingPlan) -> list[Step]:
    """The op sequence of one encoder layer + head, with every rule applied; returns the steps for ``table()``.

    The sequence is the model's own: ``TtDeiT.encoder_layer`` and ``TtDeiT.head`` run through a ``PlanningExecutor``
    on the layer's input as the embeddings leave it (on ``encoder_memory_config``)."""
    from deit_tt.model.deit import TtDeiT  # deferred: importing the model runs this package's __init__, which imports this module

    check_model_dims("model", plan.dims)
    check_dtype("activations", plan.activation_dtype, ACTIVATION_DTYPES)
    executor = PlanningExecutor(plan)
    model = TtDeiT(executor.placed(), plan, executor, layer_norm_eps=0.0)  # nothing is computed: any epsilon will do
    hidden = _planned_block_shard(plan, "encoder_memory_config", "encoder", plan.encoder_grid, plan.dims.hidden)
    model.head(model.encoder_layer(hidden, model.params.layers[0], executor.stage), executor.stage)
    return executor.steps


@dataclass(frozen=True)
class Planned:
    """A parameter as the planning executor places it: its converted tensor's name and shape, no values."""

    name: str
    shape: tuple[int, ...]


# The memory configs a data movement (to_memory_config, slice) moves a tensor to: its step's name, and the grid
# that config must shard it on.
_MOVES = {
    "qkv_attention_memory_config": ("reshard_qkv", "attention"),
    "encoder_memory_config": ("reshard_context", "encoder"),
    "classifier_memory_config": ("slice_prefix_tokens", "classifier"),
}
# The linear whose program config fuses DeiT's activation (hidden_act "gelu"): the MLP's first.
_GELU_LINEAR = "ff1"


class PlanningExecutor:
    """An executor that issues nothing: its tensors are ``Sharded`` descriptions, and each op the model runs is
    checked against the plan's rules by the step function for that ttnn op, which works out the op's output.

    A step is named after the plan's program config the op is given (``qkv``, ``softmax``, ...), a LayerNorm after
    its weights (``layernorm_before``), a data movement after where it moves the tensor (``_MOVES``); any other op
    (the residual adds) after the stage the forward names its output (``attention_residual``, ``output``)."""

    tensor_type = (Sharded, Planned)
    data_parallel = 1

    def __init__(self, plan: ShardingPlan):
        self.plan = plan
        self.steps: list[Step] = []

    def run(self, op, *args, **kwargs):
        plan = self.plan
        if op is ttnn.layer_norm:
            step = _layernorm_step(plan, kwargs["weight"].name.split(".")[-2], args[0])
        elif op is ttnn.linear:
            x, weight = args[:2]
            name = plan.config_of(args, kwargs)
            Mt, Kt, Nt = x.shape[0] // TILE, x.shape[1] // TILE, weight.shape[1] // TILE
            step = _mcast_step(plan, name, name, kwargs["program_config"], x, Kt, Nt, f"{name} output", name == _GELU_LINEAR, Mt)
        elif op is ttnn.matmul:
            a, b = args[:2]
            name = plan.config_of(args, kwargs)
            Mt, Kt, Nt = a.shape[-2] // TILE, a.shape[-1] // TILE, b.shape[-1] // TILE
            step = _reuse_step(plan, name, kwargs["program_config"], a, b, Mt, Kt, Nt, f"{name} output")
        elif op is ttnn.transformer.split_query_key_value_and_split_heads:
            step, *heads = _split_heads_step(plan, args[0])
            return self._record(op, step, tuple(heads))
        elif op is ttnn.scale_mask_softmax_in_place:
            step = _softmax_step(plan, args[0])
        elif op is ttnn.transformer.concatenate_heads:
            step = _concat_heads_step(plan, args[0])
        elif op in (ttnn.to_memory_config, ttnn.slice):
            x, config = args[0], plan.config_of(args, kwargs)
            name, grid = _MOVES[config]
            rows = x.shape[0] if op is ttnn.to_memory_config else math.prod(args[2][:-1])  # slice: up to [B, rows, H]
            target = _planned_block_shard(plan, config, grid, getattr(plan, f"{grid}_grid"), x.shape[1], rows)
            step = _reshard_step(plan, name, x, target)
        elif op is ttnn.add:
            step = _add_step(plan, "add", *args[:2])
        else:
            raise NotImplementedError(f"the sharding walk has no rules for {op_name(op)}")
        return self._record(op, step, step.out)

    def _record(self, op, step: Step, output):
        self.steps.append(dataclasses.replace(step, call=op_name(op)))
        return output

    def stage(self, name: str, tensor):
        """The forward's stage hook: an op still named after its ttnn op takes the name of the stage it computes."""
        step = self.steps[-1]
        if step.out is tensor and step.op == step.call.rpartition(".")[2]:
            step.op = name
        return tensor

    def placed(self):
        """Every tensor the model keeps placed, as ``Planned`` names and shapes: no weights, only the plan's dims."""
        from deit_tt.model.conversion import DeiTParameters, converted_shape
        from deit_tt.model.deit import PlacedTensors
        from deit_tt.model.policy import DtypePolicy
        from deit_tt.model.vocabulary import DISTILLED_HEADS, heads_of

        plan, dims = self.plan, self.plan.dims
        H, S, B, C = dims.hidden, dims.padded_tokens, plan.batch, dims.classifier_outputs

        class Converted(dict):  # every converted tensor, by the name DeiTParameters.from_named asks for
            def __missing__(self, name: str) -> Planned:
                return Planned(name, converted_shape(name, dims))

        policy = DtypePolicy("plan", plan.weight_dtype, plan.weight_dtype, ttnn.bfloat16, ttnn.bfloat16, plan.activation_dtype)
        parameters = DeiTParameters.from_named(Converted(), policy=policy, num_labels=dims.num_classes, num_layers=dims.layers, head_names=())
        return PlacedTensors(
            parameters=parameters,
            heads=heads_of(dims.classifier_heads == len(DISTILLED_HEADS)),
            classifier_weight=Planned("classifier.weight", (H, C)),
            classifier_bias=Planned("classifier.bias", (1, C)),
            prefix_tokens=Planned("prefix_tokens", (B, 2, H)),
            padding_tokens=Planned("padding_tokens", (B, S - dims.tokens, H)),
            position_embeddings=Planned("position_embeddings", (B, S, H)),
            mask=Planned("attention_mask", plan.attention_mask_shape),
        )

    def from_torch(self, tensor, *, dtype, layout, memory_config=None, batch_sharded: bool = False):
        raise TypeError("the planning executor places no host tensors: it plans the forward from the plan alone")

    def parameter(self, tensor):
        return tensor

    def to_torch(self, tensor):
        raise TypeError("the planning executor issues nothing: there are no values to read back")

    def deallocate(self, tensor) -> None:
        pass


def _planned_block_shard(plan: ShardingPlan, name: str, grid_name: str, grid: ttnn.CoreGrid, width: int, rows: int | None = None) -> Sharded:
    """The [rows, width] activation (default rows: B*S) the plan's memory config ``name`` block-shards on ``grid``."""
    x = from_memory_config(name, getattr(plan, name), plan.activation_dtype)
    expected = (grid.x, grid.y)
    if x.grid != expected:
        fail(RULE_SHARD, name, f"shard grid {fmt_grid(x.grid)} must be the {grid_name} grid {fmt_grid(expected)}")
    check_grid_within_device(name, x.grid, plan.grid)
    if x.layout != BLOCK:
        fail(RULE_SHARD, name, f"must be BLOCK_SHARDED, got {x.layout}")
    rows = rows or plan.batch * plan.dims.padded_tokens
    check_block_shard(name, (rows, width), x.grid, x.shard)
    return dataclasses.replace(x, shape=(rows, width))


def _layernorm_step(plan: ShardingPlan, op: str, x: Sharded) -> Step:
    """Every LayerNorm (before, after, final) runs with ``plan.layernorm`` and ``plan.layernorm_compute``."""
    cfg = plan.layernorm
    grid = grid_of(cfg)
    check_grid_within_device(op, grid, plan.grid)
    check_layernorm(
        op,
        Mt=plan.m_tiles,
        Kt=plan.dims.hidden // TILE,
        grid=grid,
        block_h=cfg.block_h,
        block_w=cfg.block_w,
        subblock_w=cfg.subblock_w,
        shard=x.shard,
        layout=x.layout,
        orientation=x.orientation,
        shard_grid=x.grid,
        dest_tiles=compute_config_dest_tiles(plan.layernorm_compute),
    )
    if cfg.inplace:
        fail(RULE_LAYERNORM, op, "the plan keeps the LayerNorm input (residual) alive: inplace must be False")
    out = Sharded(op + " output", x.layout, x.grid, x.shard, plan.activation_dtype, shape=x.shape)
    bf16_tile = tile_bytes(ttnn.bfloat16)
    l1 = {
        "input shard": x.shard_bytes,
        "output shard": out.shard_bytes,
        "gamma+beta CBs": 2 * cfg.block_w * bf16_tile,
        # As ttnn.graph reports them (NO_DISPATCH capture, ttnn 0.81.1): two block-sized intermediates (x - mean and
        # its square), five block_h-tile statistics buffers, the partial statistics gathered from each core of the
        # row (2 x cores across), and four scalar tiles.
        "x-mean CBs (x2)": 2 * cfg.block_h * cfg.block_w * bf16_tile,
        "stats CBs": (5 * cfg.block_h + 2 * x.grid[0] + 4) * bf16_tile,
    }
    return Step(op, "layernorm", grid, x.layout, out, [x], l1)


def _mcast_step(
    plan: ShardingPlan,
    op: str,
    config_name: str,
    cfg,
    in0: Sharded,
    Kt: int,
    Nt: int,
    out_name: str,
    fused_gelu: bool | None = None,
    Mt: int | None = None,
) -> Step:
    """§2.1 + §2.2 for one 2D multicast linear whose in0 is block sharded (``Mt``: its rows in tiles, default the encoder's)."""
    Mt = Mt or plan.m_tiles
    grid = grid_of(cfg)
    check_grid_within_device(op, grid, plan.grid)
    check_nonzero_block_dims(op, cfg.in0_block_w, cfg.per_core_M, cfg.per_core_N)
    check_subblock_fits_dest(op, cfg.out_subblock_h, cfg.out_subblock_w, plan.matmul_dest_tiles)
    check_mcast_block_divisibility(
        op, cfg.per_core_M, cfg.per_core_N, cfg.out_block_h, cfg.out_block_w, cfg.out_subblock_h, cfg.out_subblock_w
    )
    check_kt_divisible(op, Kt, cfg.in0_block_w)
    check_sharded_output_subblock(op, cfg.out_subblock_h, cfg.out_subblock_w, cfg.per_core_N)
    check_mcast_num_blocks(op, Mt, Nt, cfg.per_core_M, cfg.per_core_N, grid, cfg.transpose_mcast)
    check_mcast_in0_shard(
        op, in0.layout, in0.orientation, cfg.transpose_mcast, cfg.fuse_batch, in0.shard, cfg.per_core_M, cfg.in0_block_w
    )
    check_mcast_output(op, plan.matmul_output_memory_config.memory_layout, in0.layout)
    if fused_gelu is not None:
        activation = cfg.fused_activation
        has_gelu = activation is not None and activation.op_type == ttnn.UnaryOpType.GELU
        if fused_gelu and not has_gelu:
            fail(RULE_MCAST, op, f"FF1 must fuse GELU into the matmul (fused_activation=(GELU, True)), got {activation}")
        if not fused_gelu and activation is not None:
            fail(RULE_MCAST, op, f"no activation belongs here, got {activation}")
    out_grid = (math.ceil(Nt / cfg.per_core_N), math.ceil(Mt / cfg.per_core_M))
    out = Sharded(
        out_name, BLOCK, out_grid, (cfg.per_core_M * TILE, cfg.per_core_N * TILE), plan.activation_dtype, shape=(Mt * TILE, Nt * TILE)
    )
    act, wgt = tile_bytes(plan.activation_dtype), tile_bytes(plan.weight_dtype)
    k_blocks = Kt // cfg.in0_block_w
    l1 = {
        "in0 shard": in0.shard_bytes,
        "in0 mcast CB (x2)": 2 * cfg.per_core_M * cfg.in0_block_w * act,
        "weights CB (x2)": 2 * cfg.in0_block_w * cfg.per_core_N * wgt,
        "bias CB": cfg.per_core_N * wgt,
        "output shard": out.shard_bytes,
        "partials CB": (cfg.per_core_M * cfg.per_core_N * tile_bytes(ttnn.bfloat16)) if k_blocks > 1 else 0,
    }
    return Step(op, config_name, grid, BLOCK, out, [in0], l1)


def _reshard_step(plan: ShardingPlan, op: str, x: Sharded, target: Sharded) -> Step:
    check_grid_within_device(op, target.grid, plan.grid)
    same = (x.layout, x.grid, x.shard, x.dtype, x.orientation) == (target.layout, target.grid, target.shard, target.dtype, target.orientation)
    if same:  # ttnn hands back the input itself: no copy, no buffer
        l1 = {"input shard": x.shard_bytes}
    else:  # ttnn.graph reports a two-tile staging buffer for each sharded-to-sharded move
        l1 = {"input shard": x.shard_bytes, "output shard": target.shard_bytes, "staging CB (2 tiles)": 2 * tile_bytes(x.dtype)}
    return Step(op, target.name, target.grid, target.layout, target, [x], l1)


def _add_step(plan: ShardingPlan, op: str, a: Sharded, b: Sharded) -> Step:
    """The residual add; its output takes ``a``'s shard spec (ttnn also accepts operands on different specs)."""
    out = Sharded(op + " output", a.layout, a.grid, a.shard, plan.activation_dtype, shape=a.shape)
    l1 = {"input shards": a.shard_bytes + b.shard_bytes, "output shard": out.shard_bytes}
    return Step(op, "matmul_output_memory_config", a.grid, a.layout, out, [a, b], l1)


def _split_heads_step(plan: ShardingPlan, qkv: Sharded) -> tuple[Step, Sharded, Sharded, Sharded]:
    """create_qkv_heads (§2.5): the step (its output Q) and the Q, K^T and V heads."""
    op, dims, act, B = "split_heads", plan.dims, plan.activation_dtype, plan.batch
    S, hs = dims.padded_tokens, dims.head_size
    check_dtype(op, act, ACTIVATION_DTYPES)
    check_split_heads_input(op, qkv.layout)
    check_split_heads_output(op, plan.heads_memory_config.memory_layout)
    if plan.heads_memory_config.buffer_type != ttnn.BufferType.L1:
        fail(RULE_SPLIT_HEADS, op, f"heads live in L1, got {plan.heads_memory_config.buffer_type}")
    cols, rows = qkv.grid
    check_split_heads_batch_rows(op, B, rows)
    check_split_heads_cols(op, dims.heads, cols)
    check_split_heads_l1(op, qkv.shard_tiles, tile_bytes(act), plan.l1_bytes_per_core)
    cores = cols * rows
    q = Sharded("query", HEIGHT, qkv.grid, (B * dims.heads * S // cores, hs), act, shape=(B, dims.heads, S, hs))
    k_t = Sharded("key (transposed)", HEIGHT, qkv.grid, (B * dims.heads * hs // cores, S), act, shape=(B, dims.heads, hs, S))
    v = Sharded("value", HEIGHT, qkv.grid, (B * dims.heads * S // cores, hs), act, shape=(B, dims.heads, S, hs))
    l1 = {
        "input shard": qkv.shard_bytes,
        "Q+K^T+V shards": q.shard_bytes + k_t.shard_bytes + v.shard_bytes,
        "transpose CB": k_t.shard_bytes,  # ttnn.graph: one scratch buffer the size of a head shard, for K^T
    }
    return Step(op, "heads_memory_config", qkv.grid, HEIGHT, q, [qkv], l1), q, k_t, v


def _reuse_step(plan: ShardingPlan, op: str, cfg, in0: Sharded, in1: Sharded, Mt: int, Kt: int, Nt: int, out_name: str) -> Step:
    """§2.1 + §2.3 for one batched matmul of height-sharded heads (per-head Mt x Kt times Kt x Nt)."""
    grid = grid_of(cfg)
    total_Mt = plan.batch * plan.dims.heads * Mt
    check_grid_within_device(op, grid, plan.grid)
    check_grid_within_device(op, in0.grid, plan.grid)
    check_nonzero_block_dims(op, cfg.in0_block_w, cfg.per_core_M, cfg.per_core_N)
    check_subblock_fits_dest(op, cfg.out_subblock_h, cfg.out_subblock_w, plan.matmul_dest_tiles)
    check_reuse_subblock_divisibility(op, cfg.per_core_M, cfg.per_core_N, cfg.out_subblock_h, cfg.out_subblock_w)
    check_kt_divisible(op, Kt, cfg.in0_block_w)
    out_layout = plan.heads_memory_config.memory_layout
    check_sharded_output_subblock(op, cfg.out_subblock_h, cfg.out_subblock_w, cfg.per_core_N)
    check_reuse_m(op, Mt, total_Mt, cfg.per_core_M)
    check_reuse_full_n(op, Nt, cfg.per_core_N)
    check_reuse_in0(op, in0.layout, Kt, in0.shard, cfg.in0_block_w, cfg.per_core_M)
    check_reuse_in1(op, in1.layout, Mt, Kt, Nt, in1.shard, cfg.per_core_M, cfg.per_core_N)
    check_reuse_same_sharding(op, in0.grid, in1.grid, in0.layout, in1.layout)
    check_reuse_output_blocks(op, total_Mt, Nt, cfg.per_core_M, cfg.per_core_N, in0.grid[0] * in0.grid[1])
    check_reuse_output_layout(op, out_layout)
    if grid != in0.grid:
        fail(RULE_REUSE, op, f"program grid {fmt_grid(grid)} must be the heads' shard grid {fmt_grid(in0.grid)}")
    shape = (plan.batch, plan.dims.heads, Mt * TILE, Nt * TILE)
    out = Sharded(out_name, out_layout, in0.grid, (cfg.per_core_M * TILE, cfg.per_core_N * TILE), plan.activation_dtype, shape=shape)
    k_blocks = Kt // cfg.in0_block_w
    l1 = {
        "in0 shard": in0.shard_bytes,
        "in1 shard": in1.shard_bytes,
        "output shard": out.shard_bytes,
        "partials CB": (cfg.per_core_M * cfg.per_core_N * tile_bytes(ttnn.bfloat16)) if k_blocks > 1 else 0,
    }
    return Step(op, op, grid, out_layout, out, [in0, in1], l1)


def _softmax_step(plan: ShardingPlan, scores: Sharded) -> Step:
    """Scale + mask + softmax in place on the height-sharded scores (§2.7)."""
    op, cfg, dims, B = "softmax", plan.softmax, plan.dims, plan.batch
    S = dims.padded_tokens
    grid = grid_of(cfg)
    check_grid_within_device(op, grid, plan.grid)
    check_dtype(op, plan.activation_dtype, ACTIVATION_DTYPES)
    check_softmax(
        op,
        M=B * dims.heads * S,
        K=S,
        last_dim=S,
        grid=grid,
        block_h=cfg.block_h,
        block_w=cfg.block_w,
        subblock_w=cfg.subblock_w,
        shard=scores.shard,
        shard_grid=scores.grid,
        dest_tiles=plan.softmax_dest_tiles,
    )
    mask_sharded = plan.attention_mask_memory_config.is_sharded()
    check_softmax_mask(op, plan.attention_mask_shape, plan.attention_mask_layout, mask_sharded, (B, dims.heads, S, S))
    bf16_tile = tile_bytes(ttnn.bfloat16)
    l1 = {
        "scores shard (in place)": scores.shard_bytes,
        "mask CB": cfg.block_w * bf16_tile,
        "scaled+masked CB": cfg.block_w * bf16_tile,
        "exp CBs": 2 * cfg.block_w * bf16_tile,
        "scalar CBs": 5 * bf16_tile,  # ttnn.graph reports five one-tile buffers beside the four block_w ones
    }
    return Step(op, "softmax", grid, scores.layout, scores, [scores], l1)


def _concat_heads_step(plan: ShardingPlan, heads: Sharded) -> Step:
    """Concatenate heads -> [B, S, H] block sharded on the attention grid (nlp_concat_heads)."""
    op, dims = "concatenate_heads", plan.dims
    S = dims.padded_tokens
    context = from_memory_config("context_memory_config", plan.context_memory_config, plan.activation_dtype)
    context = dataclasses.replace(context, shape=(plan.batch * S, dims.hidden))
    check_concat_heads(op, heads.layout, context.layout, heads.shard, S, dims.heads)
    heads_per_shard = heads.shard[0] // S
    expected = (heads.shard[0] // heads_per_shard, heads.shard[1] * heads_per_shard)
    if context.grid != heads.grid or context.shard != expected:
        fail(
            RULE_CONCAT_HEADS,
            op,
            f"output is [{expected[0]}, {expected[1]}] shards on the input's {fmt_grid(heads.grid)} grid; "
            f"context_memory_config says {list(context.shard)} on {fmt_grid(context.grid)}",
        )
    check_block_shard("context_memory_config", (plan.batch * S, dims.hidden), context.grid, context.shard)
    l1 = {"input shard": heads.shard_bytes, "output shard": context.shard_bytes}
    return Step(op, "context_memory_config", context.grid, context.layout, context, [heads], l1)
