"""The executor protocol, and the two executors that run the op sequence on a card and on the host.

The model issues every ttnn op through ``executor.run(op, *args, **kwargs)`` with the arguments the
device needs (program configs, memory configs, output dtypes). ``DeviceExecutor`` calls the op.
``HostExecutor`` evaluates ttnn's golden (torch) function for that op with the same arguments and
stores the result the way the device would store it in the requested dtype (bfloat16, or
bfloat8_b/bfloat4_b tiles through ``deit_tt.backends.blockfloat``). Memory placement (sharding, L1/DRAM,
layout) has no meaning on the host; the sharding plan still validates every config before use.

The golden matmuls multiply bfloat16 tensors. Where torch has no native bfloat16 GEMM (oneDNN needs
AVX512 or AMX; on an AVX2-only CPU torch falls back to a reference loop, about 90x slower than its
float32 GEMM: 11.9 s vs 0.13 s for 1792x768 @ 768x3072 on 2 cores), the host executor evaluates the
same golden functions with each bfloat16 matrix product computed in float32 and rounded to bfloat16
(``Float32Products``). The products of bfloat16 values are exact in float32 and both kernels
accumulate in float32, so the two differ only in summation order: about 1 element in 10,000 of a
product rounds to the neighbouring bfloat16 value (tests/backends/test_executor.py measures it).

``numerics`` says which arithmetic the host models: "ideal" (the golden functions as they are) or "tensix"
(matmuls, softmax and LayerNorm as a Tensix core computes them for the compute kernel config each op is
given, see ``deit_tt.backends.tensix_numerics``).
"""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

import torch
import ttnn

from deit_tt.backends.blockfloat import BLOCK_SIZE, MANTISSA_BITS, round_to_dtype
from deit_tt.backends.tensix_numerics import TENSIX_OPS, keep_truncations, resolve_numerics

# Ops that only move data or change its placement: identity on the host (plus dtype rounding).
_PLACEMENT_OPS = {
    ttnn.to_layout,
    ttnn.to_memory_config,
    ttnn.reshard,
    ttnn.reallocate,
    ttnn.interleaved_to_sharded,
    ttnn.sharded_to_interleaved,
}


@runtime_checkable
class Executor(Protocol):
    """What ``TtDeiT`` issues everything through. Besides ``DeviceExecutor`` and ``HostExecutor``: the dry run's
    ``RecordingExecutor``, ``CallRecorder`` (deit_tt.backends.op_calls), ``OpCounter`` (deit_tt.backends.tracing) and
    the sharding walk's ``PlanningExecutor`` (deit_tt.sharding.walk), which issues nothing."""

    tensor_type: type  # what this executor's tensors are (``release`` frees every one)
    data_parallel: int  # chips running the plan side by side, each on its own images

    def run(self, op, *args, **kwargs):
        """Issue ttnn ``op`` with the arguments a device takes (program, memory and compute configs, dtype)."""

    def from_torch(self, tensor: torch.Tensor, *, dtype, layout, memory_config=None, batch_sharded: bool = False):
        """A host tensor placed for the ops (split over a mesh along dim 0 when ``batch_sharded``)."""

    def parameter(self, tensor: ttnn.Tensor):
        """A converted host parameter placed where the ops read weights."""

    def to_torch(self, tensor) -> torch.Tensor:
        """A tensor read back to the host, float32."""

    def deallocate(self, tensor) -> None:
        """Free a tensor the forward no longer needs."""


class DeviceExecutor:
    """Runs ops on an open ttnn mesh: one chip, or several running the same plan data parallel.

    On a mesh of N chips, a tensor made from a whole batch is split along dim 0 (chip i gets images
    i*B..(i+1)*B-1), every other tensor is replicated, and outputs are gathered back along dim 0.
    """

    name = "device"
    tensor_type = ttnn.Tensor

    def __init__(self, device):
        self.device = device
        self.data_parallel = device.get_num_devices()

    def run(self, op, *args, **kwargs):
        return op(*args, **kwargs)

    def from_torch(self, tensor: torch.Tensor, *, dtype, layout, memory_config=None, batch_sharded: bool = False):
        return ttnn.from_torch(
            tensor, dtype=dtype, layout=layout, device=self.device, memory_config=memory_config, mesh_mapper=self._mapper(batch_sharded)
        )

    def host_tensor(self, tensor: torch.Tensor, *, dtype, layout, batch_sharded: bool = False):
        """``tensor`` converted and split over the mesh as ``from_torch`` would, but left on the host: the source of
        ``ttnn.copy_host_to_device_tensor`` into a buffer that stays allocated (see ``deit_tt.backends.tracing``)."""
        return ttnn.from_torch(tensor, dtype=dtype, layout=layout, mesh_mapper=self._mapper(batch_sharded))

    def _mapper(self, batch_sharded: bool):
        if self.data_parallel == 1:
            return None
        # ttnn 0.81's mappers (the ShardTensorToMesh / ReplicateTensorToMesh wrappers are deprecated there)
        return ttnn.shard_tensor_to_mesh_mapper(self.device, dim=0) if batch_sharded else ttnn.replicate_tensor_to_mesh_mapper(self.device)

    def parameter(self, tensor: ttnn.Tensor):
        """Move a converted host parameter to DRAM, where the sharded matmuls stream weights from (every chip of a mesh)."""
        return ttnn.to_device(tensor, self.device, memory_config=ttnn.DRAM_MEMORY_CONFIG)

    def to_torch(self, tensor) -> torch.Tensor:
        composer = ttnn.concat_mesh_to_tensor_composer(self.device, dim=0) if self.data_parallel > 1 else None
        return ttnn.to_torch(tensor, mesh_composer=composer).float()

    def deallocate(self, tensor) -> None:
        ttnn.deallocate(tensor)


def native_bfloat16_matmul() -> bool:
    """True when torch multiplies bfloat16 matrices with a native oneDNN kernel (AVX512, AVX512-BF16, AMX)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


class Float32Products(torch.overrides.TorchFunctionMode):
    """Within this mode, a matrix product of two bfloat16 tensors is computed in float32 and rounded to
    bfloat16 once, as a native bfloat16 GEMM rounds its float32 accumulator (up to summation order)."""

    _PRODUCTS = {torch.matmul, torch.Tensor.__matmul__, torch.Tensor.matmul}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._PRODUCTS and len(args) == 2 and all(arg.dtype == torch.bfloat16 for arg in args):
            return torch.matmul(args[0].float(), args[1].float()).to(torch.bfloat16)
        return func(*args, **kwargs)


class HostExecutor:
    """Evaluates each op with ttnn's golden function; tensors are torch tensors in bfloat16.

    Like the device, an op without a ``dtype`` argument produces its first input's dtype, so each
    host tensor remembers the ttnn dtype it is stored in. ``float32_products`` (default: when torch
    has no native bfloat16 GEMM) evaluates the golden functions and the tensix ops under ``Float32Products``. ``numerics``:
    "ideal" or "tensix" (default: ``settings.NUMERICS``, then tensix).
    """

    name = "host"
    tensor_type = torch.Tensor
    data_parallel = 1

    def __init__(self, float32_products: bool | None = None, numerics: str | None = None):
        if float32_products is None:
            float32_products = not native_bfloat16_matmul()
        self.float32_products = float32_products
        self.numerics = resolve_numerics(numerics)

    def run(self, op, *args, **kwargs):
        dtype = kwargs.pop("dtype", None) or _stored_dtype(args)
        if op in _PLACEMENT_OPS:
            output = args[0]
            if getattr(output, "ttnn_dtype", None) == dtype:
                return output  # a pure move keeps the stored values
        elif op is ttnn.transformer.split_query_key_value_and_split_heads:
            return self._split_heads(*args, dtype=dtype, **kwargs)
        elif op is ttnn.transformer.concatenate_heads:
            return self._concatenate_heads(*args, dtype=dtype, **kwargs)
        elif self.numerics == "tensix" and op in TENSIX_OPS:
            if kwargs.get("compute_kernel_config") is None:
                raise ValueError(f"tensix numerics model {op.__name__} from its compute_kernel_config: pass one (the plan has them)")
            with self._products():
                output = TENSIX_OPS[op](*args, dtype=dtype, **kwargs)
        else:
            with self._products():
                output = ttnn.get_golden_function(op)(*args, **kwargs)
        if isinstance(output, tuple):
            return tuple(_store(t, dtype) for t in output)
        return _store(output, dtype)

    def _products(self):
        """Where bfloat16 matrix products run: oneDNN's native kernel, or ``Float32Products``."""
        return Float32Products() if self.float32_products else contextlib.nullcontext()

    def from_torch(self, tensor: torch.Tensor, *, dtype, layout, memory_config=None, batch_sharded: bool = False):
        return _store(tensor, dtype)

    def parameter(self, tensor: ttnn.Tensor) -> torch.Tensor:
        """Read a converted parameter back as quantised: its values are already those of its dtype and
        exact in bfloat16 (see deit_tt.backends.blockfloat), so there is nothing to round again. Tensix numerics
        truncates a weight's mantissas once per math fidelity, not at every matmul."""
        stored = keep_truncations(ttnn.to_torch(tensor).to(torch.bfloat16))
        stored.ttnn_dtype = tensor.dtype
        return stored

    def to_torch(self, tensor) -> torch.Tensor:
        return tensor.float()

    def deallocate(self, tensor) -> None:
        pass

    @staticmethod
    def _split_heads(fused_qkv: torch.Tensor, *, num_heads: int, dtype, transpose_key: bool = True, **kwargs):
        """The golden function's query [B, H, S, D], key [B, H, D, S] (or [B, H, S, D]) and value [B, H, S, D],
        read straight from the head-interleaved columns [q0 k0 v0 | q1 k1 v1 | ...] the sharded split reads (see
        the op's documentation; the golden function models the interleaved-memory variant, which reads
        [Q | K | V]): one copy per output. Only values move, so a query or value whose rows of 16 are rows of 16
        of the stored input (D a multiple of 16) keeps the input's stored values; the transposed key is rounded."""
        if kwargs.get("kv_input_tensor") is not None or kwargs.get("num_kv_heads") not in (None, num_heads):
            raise NotImplementedError("the host split models one fused QKV input with as many key/value heads as query heads")
        batch, sequence, width = fused_qkv.shape
        head_size = width // (3 * num_heads)
        heads = fused_qkv.view(batch, sequence, num_heads, 3, head_size)
        query, key, value = (heads[:, :, :, index].permute(0, 2, 1, 3) for index in range(3))
        if transpose_key:
            key = key.transpose(-2, -1)
        return tuple(_moved(part, fused_qkv, dtype) for part in (query, key, value))

    @staticmethod
    def _concatenate_heads(heads: torch.Tensor, *, dtype, **kwargs):
        """[B, H, S, D] -> [B, S, H x D], as the golden function (rows of 16 stay rows of 16 when D is a multiple of 16)."""
        batch, num_heads, sequence, head_size = heads.shape
        return _moved(heads.transpose(1, 2).reshape(batch, sequence, num_heads * head_size), heads, dtype)


def _moved(view: torch.Tensor, source: torch.Tensor, dtype) -> torch.Tensor:
    """``view`` (values of ``source`` moved around) stored in ``dtype``. Rounding to a block float is idempotent
    when every row of 16 of ``view`` was a row of 16 of ``source`` already stored in ``dtype``: the same
    shared exponent, the same m. Then only a copy is made, else the values are rounded as by any op."""
    source_dtype = getattr(source, "ttnn_dtype", ttnn.bfloat16)
    rows_kept = source.is_contiguous() and source.shape[-1] % BLOCK_SIZE == 0 and view.shape[-1] % BLOCK_SIZE == 0
    rows_kept = rows_kept and view.stride(-1) == 1 and view.storage_offset() % BLOCK_SIZE == 0
    rows_kept = rows_kept and all(stride % BLOCK_SIZE == 0 for stride in view.stride()[:-1])
    if source_dtype == dtype and (dtype not in MANTISSA_BITS or rows_kept):
        moved = view.contiguous()
        moved.ttnn_dtype = dtype
        return moved
    return _store(view.contiguous(), dtype)


def _store(tensor: torch.Tensor, dtype) -> torch.Tensor:
    stored = round_to_dtype(tensor, dtype)
    stored.ttnn_dtype = dtype
    return stored


def _stored_dtype(args):
    """dtype of the first tensor argument (looking inside a list, as for concat)."""
    for arg in args:
        candidates = arg if isinstance(arg, (list, tuple)) else [arg]
        for candidate in candidates:
            if isinstance(candidate, torch.Tensor):
                return getattr(candidate, "ttnn_dtype", ttnn.bfloat16)
    return ttnn.bfloat16
