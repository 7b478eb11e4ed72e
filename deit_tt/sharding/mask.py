"""The additive key-padding mask the softmax adds to the scaled scores: 0 for real keys, a large negative value for
the padded ones (the sequence is padded from 198 to 224 tokens)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import ttnn

if TYPE_CHECKING:
    from deit_tt.sharding.plan import ShardingPlan

MASKED_VALUE = -1.0e4


def attention_mask(plan: ShardingPlan, dtype=torch.bfloat16, masked_value: float = MASKED_VALUE) -> torch.Tensor:
    """The additive key-padding mask for ``ttnn.scale_mask_softmax_in_place`` in ``plan.attention_mask_shape``.

    0 for key columns < ``dims.tokens`` (198), ``masked_value`` for the padded columns 198..223. Convert with
    ``ttnn.from_torch(mask, dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT, device=..., memory_config=plan.attention_mask_memory_config)``.

    Why these choices (ttnn 0.81.1; sources in tenstorrent/tt-metal):
    - ``ttnn/cpp/ttnn/operations/transformer/attention_softmax/attention_softmax.cpp``: ``attention_softmax_``
      requires a mask and calls ``scale_mask_softmax_in_place(scale = 1/sqrt(head_size), mask, program_config)``
      (non-causal); the mask is added after scaling.
    - ``ttnn/cpp/ttnn/operations/normalization/softmax/device/softmax_device_operation.cpp`` (validate): a
      non-sharded mask needs dims 1..rank-3 == 1; a ROW_MAJOR one must be [B, 1, S/32, 32]; a sharded one must
      be TILE with the input's shape. No batch-equality check for the sharded config.
    - ``.../softmax_program_factory_attention_optimized_sharded.cpp``: the reader reads ``block_w`` mask tiles
      from ``mask_start_tile_id``, which advances by ``padded_shape[-1]/32`` after each image's cores, so the
      mask needs one tile row per image ([B, ...], no batch broadcast).
    - ``.../kernels/attention/compute/softmax_sharded.cpp`` (shipped in the 0.81.1 wheel): the non-causal mask is
      added with ``BroadcastDim::Row`` — only row 0 of each mask tile is used — and reused for every row of the block.
    - tt-metal's own sharded test (``run_softmax_sharded_stable``) uses ``[B, 1, 1, W]`` bfloat16 TILE masks in
      DRAM with ``-inf``. We use a finite ``-1e4`` instead: exp() of it is exactly 0 in bf16/fp32, it needs no
      inf arithmetic in the approximate exp, and it survives a bfloat8_b conversion (an inf exponent would be
      shared by the 16 values of its block).
    """
    dtype = _torch_dtype(dtype)
    mask = torch.zeros(plan.attention_mask_shape, dtype=torch.float32)
    mask[..., plan.dims.tokens :] = masked_value
    return mask.to(dtype)


def _torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    mapping = {ttnn.bfloat16: torch.bfloat16, ttnn.float32: torch.float32}
    if dtype in mapping:
        return mapping[dtype]
    raise ValueError(f"attention masks are bfloat16 or float32 (block-float masks are not used), got {dtype}")


