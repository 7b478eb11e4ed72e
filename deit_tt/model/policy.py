"""Dtype policies: which ttnn data type each tensor family is stored and computed in.

``bf8`` is the default and mirrors tt-metal's sharded ViT: bfloat8_b for matmul weights and
encoder activations, bfloat16 for LayerNorm parameters and embeddings. ``bf16`` keeps everything
in bfloat16 (the reference for PCC ladders); ``bf4`` stores matmul weights in bfloat4_b.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import ttnn

from deit_tt.errors import UserFacingError
from deit_tt.sharding.dims import dtype_name


@dataclass(frozen=True)
class DtypePolicy:
    name: str
    matmul_weights: ttnn.DataType
    matmul_biases: ttnn.DataType
    layernorm: ttnn.DataType
    embeddings: ttnn.DataType
    activations: ttnn.DataType

    def describe(self) -> dict[str, str]:
        """Human-readable summary, also used as part of the conversion cache key."""
        return {key: (value if isinstance(value, str) else dtype_name(value)) for key, value in asdict(self).items()}



POLICIES: dict[str, DtypePolicy] = {
    "bf16": DtypePolicy("bf16", ttnn.bfloat16, ttnn.bfloat16, ttnn.bfloat16, ttnn.bfloat16, ttnn.bfloat16),
    "bf8": DtypePolicy("bf8", ttnn.bfloat8_b, ttnn.bfloat8_b, ttnn.bfloat16, ttnn.bfloat16, ttnn.bfloat8_b),
    "bf4": DtypePolicy("bf4", ttnn.bfloat4_b, ttnn.bfloat8_b, ttnn.bfloat16, ttnn.bfloat16, ttnn.bfloat8_b),
}
DEFAULT_POLICY = "bf8"


def get_policy(name: str | DtypePolicy | None = None) -> DtypePolicy:
    if isinstance(name, DtypePolicy):
        return name
    name = name or DEFAULT_POLICY
    if name not in POLICIES:
        raise UserFacingError(f"unknown dtype policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name]
