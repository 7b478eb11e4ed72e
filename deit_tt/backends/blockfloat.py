"""The values ttnn stores for a tensor in bfloat16, bfloat8_b or bfloat4_b, computed fast in torch.

**bfloat16** keeps the top 16 bits of a float32: sign, 8 exponent bits, 7 mantissa bits. ttnn rounds
float32 input to nearest, ties to even (like ``tensor.to(torch.bfloat16)``), and writes every NaN as
the one quiet NaN ``0x7FC0``. Subnormals survive.

**bfloat8_b / bfloat4_b** are *block floats*. A TILE-layout tensor is cut into 32x32 tiles, each tile
into four 16x16 faces, and each face row (16 neighbouring values of one row, starting at a column
that is a multiple of 16) shares a single 8-bit exponent. Every value keeps only a sign and a 7-bit
(bfloat8_b) or 3-bit (bfloat4_b) magnitude, counted in steps of one shared unit:

    shared exponent E = largest float32 exponent field among the 16 values
    unit              = 2**(E - 127 - 6)   (bfloat8_b)      2**(E - 127 - 2)   (bfloat4_b)
    stored value      = sign * m * unit,    m = 0..127      (bfloat8_b)        m = 0..7 (bfloat4_b)

So the largest value of a row keeps 7 (or 3) significant bits, and a value 2**k times smaller
keeps k fewer bits: anything below half a unit becomes zero. Only the face row matters, so the
tiling reduces to "groups of 16 along the last dimension"; rows never share an exponent.

How ttnn 0.81's host packing picks m (worked out against ``ttnn.from_torch(..., TILE_LAYOUT)`` and
``ttnn.to_torch``, checked bit for bit in tests/backends/test_blockfloat.py):

1. Subnormal inputs count as zero (and do not raise E). Zeros of either sign are stored as +0.
2. The 24-bit mantissa (hidden 1 included) is shifted right by ``E - e`` (e: the value's own
   exponent field), dropping the bits that fall off (truncation), then rounded to 7 (3) bits:
   round to nearest, ties to even. So truncation can turn a value just above a tie into a tie.
3. Rounding up past the largest m (1.1111111b) does not bump the exponent: m is clamped to 127 (7),
   so a row maximum like 1.998 * 2**k is stored as 1.984375 * 2**k.
4. A result of m = 0 is +0 whatever the sign. Inf stays inf; NaN stays NaN (or becomes inf when its
   payload sits only in the low mantissa bits), and a NaN/inf in a row sets E = 255 for its
   neighbours too (so 1.0 next to an inf is stored as 0). float32 input is packed directly, not
   rounded to bfloat16 first; float64/float16 input is rounded to bfloat16 first.

Every stored value is m * 2**(E - 133) (bfloat8_b) with m < 128 and a normal exponent, so it has at
most 7 significant bits where bfloat16 has 8: it is exactly representable in bfloat16. :func:`round_to_dtype` therefore
returns torch.bfloat16 for all three formats.

Rows of 16 are rounded by ``deit_tt.backends.native`` (these rules compiled from C at first
use, one pass over memory) wherever a C compiler is available. Without one, the torch path below does
the arithmetic in float32 with about a dozen vectorised torch ops per cache-sized slice; rows whose
shared exponent is tiny (E < 30: values below about 2**-97) or 255 (inf/NaN) go through an exact
bit-level port of the same rules instead. Either is several times faster than ttnn's own round trip,
which packs the tiles and unpacks them again.
"""

from __future__ import annotations

import threading

import pandas as pd
import torch
import ttnn

from deit_tt.analysis.pcc import pcc
from deit_tt.backends import native
from deit_tt.model.policy import dtype_name
from deit_tt.sharding.dims import TILE

__all__ = [
    "round_to_dtype",
    "BLOCK_SIZE",
    "MANTISSA_BITS",
    "TILE",
    "FACE",
    "TILE_DTYPES",
    "bytes_per_tile",
    "tile_bytes_table",
    "tile_of",
    "face_index_map",
    "tile_faces",
    "face_row_exponents",
    "tile_format_errors",
    "largest_value_tile",
    "row_steps",
    "flushed_to_zero",
]

BLOCK_SIZE = 16  # values sharing one exponent: one row of a 16x16 face
MANTISSA_BITS = {ttnn.bfloat8_b: 7, ttnn.bfloat4_b: 3}  # magnitude bits, hidden bit included
FACE = 16  # a tile is four 16x16 faces: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
TILE_DTYPES = (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b, ttnn.bfloat4_b)

_BF16_CANONICAL_NAN = 0x7FC0
# Fast path bounds on the shared exponent E (see _round_block_float). Rows of zeros/subnormals
# (E == 0) are fine on the fast path too: they round to +0.
_FAST_MIN_EXPONENT = 30
_NAN_EXPONENT = 255
_F32_SHIFT = 23  # mantissa bits of float32
_CHUNK_ROWS = 32768  # rows of 16 per slice: 2 MiB of float32
_INVERSE_FINE_BITS = 277 << _F32_SHIFT  # minus E << 23: the float32 bits of 2**(150 - E) = 1 / fine
_SCRATCH = threading.local()


def round_to_dtype(tensor: torch.Tensor, dtype: ttnn.DataType) -> torch.Tensor:
    """The values ttnn would store for ``tensor`` in ``dtype``, bit for bit.

    ``dtype`` is ttnn.bfloat16, ttnn.bfloat8_b or ttnn.bfloat4_b (result: torch.bfloat16, same
    shape) or ttnn.float32 (result: the tensor as torch.float32). ``tensor`` is any floating-point
    torch tensor; like ttnn, other dtypes than float32 and bfloat16 go through bfloat16 first.
    Block floats group values along the last dimension, so any rank works; ttnn's padding of the
    last two dims to 32 adds zeros, which never change a row's shared exponent. Like
    ``Tensor.to``, it returns ``tensor`` itself when nothing changes (float32 -> float32,
    bfloat16 -> bfloat16).
    """
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise TypeError(f"round_to_dtype expects a floating-point torch.Tensor, got {type(tensor).__name__}")
    tensor = tensor.detach()
    if dtype == ttnn.float32:
        return tensor.to(torch.float32)
    if tensor.dtype not in (torch.float32, torch.bfloat16):
        tensor = tensor.to(torch.bfloat16)
    if dtype == ttnn.bfloat16:
        return _round_bfloat16(tensor)
    if dtype in MANTISSA_BITS:
        return _round_block_float(tensor, MANTISSA_BITS[dtype])
    raise ValueError(f"round_to_dtype supports bfloat16, bfloat8_b, bfloat4_b and float32, not {dtype}")


def _round_bfloat16(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype == torch.bfloat16:
        return tensor  # stored as is, NaN payloads included
    out = tensor.to(torch.bfloat16)  # round to nearest even, like ttnn
    # ttnn writes every NaN as one canonical NaN; torch's vectorised cast may keep sign and payload.
    # A sum is NaN when any value is (or inf meets -inf): a cheap test before the exact one.
    if torch.isnan(tensor.sum()):
        out.view(torch.int16).masked_fill_(torch.isnan(tensor), _BF16_CANONICAL_NAN)
    return out


def _round_block_float(tensor: torch.Tensor, mantissa_bits: int) -> torch.Tensor:
    shape = tensor.shape
    if tensor.numel() == 0:
        return torch.empty(shape, dtype=torch.bfloat16)
    width = tensor.shape[-1] if tensor.dim() else 1
    pad = (-width) % BLOCK_SIZE
    x = tensor.reshape(-1, width)
    if pad:  # zero padding, as ttnn pads tiles: zeros never raise a row's shared exponent
        x = torch.nn.functional.pad(x, (0, pad))
    groups = x.contiguous().view(-1, BLOCK_SIZE)
    n = groups.shape[0]
    out = torch.empty((n, BLOCK_SIZE), dtype=torch.bfloat16)
    if not native.round_rows(groups, out, mantissa_bits):  # no C compiler: torch ops
        _round_rows_in_torch(groups, out, mantissa_bits)
    out = out.view(x.shape)
    if pad:
        out = out[:, :width]
    return out.reshape(shape)


def _round_rows_in_torch(groups: torch.Tensor, out: torch.Tensor, mantissa_bits: int) -> None:
    """Round rows of 16 (``groups``, float32 or bfloat16) into ``out`` with vectorised torch ops."""
    n = groups.shape[0]

    # Shared exponent E per row of 16: the largest exponent field. With the sign bit cleared,
    # float32 bit patterns order like their magnitudes (inf and NaN come out on top), so a max over
    # int32 finds it: one amax over each row of 16.
    #
    # Step 2 in float32: in units of fine = 2**(E - 150) the shifted mantissa is trunc(x / fine),
    # an integer below 2**24, and m is that integer rounded half-to-even to a multiple of
    # 2**step_bits. For bfloat16 input (8 significant bits) x / fine is an integer whenever
    # E - e <= 16, and below 2**7, far under half a step, otherwise: the truncation is a no-op and
    # a multiplication by the power of two 1 / fine computes x / fine exactly. Adding
    # 1.5 * 2**(23 + step_bits) does the rounding (the sum's last bit is worth exactly one step); subtracting it again leaves m * 2**step_bits, with -0 turned into +0.
    # Finally m * 2**step_bits * fine = m * unit is exact in bfloat16.
    #
    # This runs on slices of _CHUNK_ROWS rows (a loop over cache-sized slices, not over tiles: each
    # slice is handled by the same dozen whole-slice torch ops). A slice stays in the CPU cache from
    # one op to the next, so the dozen passes cost little more than one pass over main memory.
    step_bits = 24 - mantissa_bits
    magic = 1.5 * 2.0 ** (23 + step_bits)
    largest = float((1 << mantissa_bits) - 1) * 2.0**step_bits
    low, high = _FAST_MIN_EXPONENT << _F32_SHIFT, ((_NAN_EXPONENT - 1) << _F32_SHIFT) | 0x7FFFFF

    rows = min(n, _CHUNK_ROWS)
    scratch_a, scratch_b, as_float = _scratch(rows * BLOCK_SIZE)
    if groups.dtype == torch.float32:
        as_float = None
    row_max = torch.empty((n, 1), dtype=torch.int32)  # |largest value| of each row, as bits
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        k = (stop - start) * BLOCK_SIZE
        chunk = groups[start:stop]
        if as_float is not None:  # bfloat16 -> float32 is exact; ttnn packs both the same way
            chunk = as_float[:k].view(-1, BLOCK_SIZE).copy_(chunk)
        magnitudes = scratch_a[:k].view(-1, BLOCK_SIZE)
        torch.abs(chunk, out=magnitudes.view(torch.float32))  # clears the sign bit
        chunk_max = torch.amax(magnitudes, dim=1, keepdim=True, out=row_max[start:stop])
        exponent_bits = torch.clamp(chunk_max, low, high).bitwise_and_(0x7F800000)  # E << 23, E clamped
        q = scratch_b[:k].view(torch.float32).view(-1, BLOCK_SIZE)
        if as_float is None:
            fine = exponent_bits.view(torch.float32).mul(2.0**-23)  # 2**(E - 150)
            torch.div(chunk, fine, rounding_mode="trunc", out=q)
        else:  # bfloat16 input: x / fine is exact and truncation never changes the result (see above)
            torch.mul(chunk, exponent_bits.neg().add_(_INVERSE_FINE_BITS).view(torch.float32), out=q)
            fine = exponent_bits.view(torch.float32).mul_(2.0**-23)
        q.add_(magic).sub_(magic).clamp_(-largest, largest)  # step 3: m <= 127 (7), never a carry
        out[start:stop].copy_(q.mul_(fine))  # m * unit, exact in bfloat16

    # Rows the fast path cannot do exactly: inf/NaN (E = 255) or tiny (0 < E < 30). Two quick
    # reductions tell whether there are any; usually there are none.
    row_max = row_max.view(-1)
    above_zero = (row_max - (1 << _F32_SHIFT)).bitwise_and_(0x7FFFFFFF)  # rows with E = 0 wrap to the top
    if int(row_max.max()) > high or int(above_zero.min()) < low - (1 << _F32_SHIFT):
        exponent = row_max >> _F32_SHIFT
        exact_rows = (exponent == _NAN_EXPONENT) | ((exponent > 0) & (exponent < _FAST_MIN_EXPONENT))
        out[exact_rows] = _round_block_float_exact(groups[exact_rows].to(torch.float32), mantissa_bits)


def _scratch(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Work buffers for one slice, kept between calls (one set per thread): allocating them afresh
    each call costs page faults, which are slow on virtual machines."""
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None or buffers[0].numel() < size:
        capacity = max(size, _CHUNK_ROWS * BLOCK_SIZE)
        buffers = (
            torch.empty(capacity, dtype=torch.int32),
            torch.empty(capacity, dtype=torch.int32),
            torch.empty(capacity, dtype=torch.float32),
        )
        _SCRATCH.buffers = buffers
    return tuple(buffer[:size] for buffer in buffers)


def _round_block_float_exact(groups: torch.Tensor, mantissa_bits: int) -> torch.Tensor:
    """Bit-level version of the same rules for float32 rows of 16 (any values, used for the rare
    rows outside the fast path's range; tests also run it on everything)."""
    bits = groups.contiguous().view(torch.int32)
    exp = (bits >> _F32_SHIFT) & 0xFF  # 0 for zeros and for subnormals, which count as zero
    shared = exp.amax(dim=-1, keepdim=True)
    mantissa = (bits & 0x7FFFFF) | 0x800000  # 24 bits with the hidden 1
    mantissa = mantissa >> (shared - exp).clamp_(max=31)  # truncate to the shared exponent
    step_bits = 24 - mantissa_bits
    remainder = mantissa & ((1 << step_bits) - 1)
    m = mantissa >> step_bits
    half = 1 << (step_bits - 1)
    round_up = (remainder > half) | ((remainder == half) & ((m & 1) == 1))
    m = (m + round_up.to(torch.int32)).clamp_(max=(1 << mantissa_bits) - 1)
    m = torch.where(exp == 0, 0, m)

    # Back to a float: normalise m (shift its leading 1 to the hidden bit), lower the exponent to match.
    leading = (m.float().view(torch.int32) >> _F32_SHIFT) - 127  # floor(log2(m)) for m >= 1
    shift = (mantissa_bits - 1) - leading
    out_exp = shared - shift  # >= 1 for every m > 0: m * unit is never below the smallest normal float
    frac = (m << (_F32_SHIFT - leading)) & 0x7FFFFF  # drop the leading 1
    sign = bits & torch.iinfo(torch.int32).min
    out = sign | (out_exp << _F32_SHIFT) | frac
    out = torch.where(m == 0, 0, out)  # +0, whatever the sign
    # Only the top 16 bits can be set: bfloat16 keeps them exactly (NaN payloads included).
    return (out >> 16).to(torch.int16).view(torch.bfloat16)


# --------------------------------------------------------------------------------------------------
# One tile, looked at: its faces, the exponents its face rows share, what each format does to it
# (the tables and maps of notebook 01).


def bytes_per_tile(dtype) -> int:
    """Bytes one 32x32 tile takes in ``dtype``, as ttnn itself reports it (``ttnn.Tile.get_tile_size``).

    Needs a chip description: on a machine without a card, call ``deit_tt.backends.runtime.prepare_host()`` first.
    """
    from deit_tt.backends.runtime import prepare_host

    prepare_host()
    return int(ttnn.Tile((TILE, TILE)).get_tile_size(dtype))


def tile_bytes_table() -> pd.DataFrame:
    """Per format: bytes per tile (from ttnn), how they split into values and shared exponents, bits per value."""
    rows = []
    values = TILE * TILE
    for dtype in TILE_DTYPES:
        total = bytes_per_tile(dtype)
        exponents = TILE * TILE // BLOCK_SIZE if dtype in MANTISSA_BITS else 0  # one byte per 16-value face row
        rows.append(
            {
                "dtype": dtype_name(dtype),
                "bytes_per_tile": total,
                "value_bytes": total - exponents,
                "exponent_bytes": exponents,
                "bits_per_value": 8 * total / values,
                "vs_bfloat16": total / bytes_per_tile(ttnn.bfloat16),
            }
        )
    return pd.DataFrame(rows)


def tile_of(tensor, tile_row: int = 0, tile_col: int = 0) -> torch.Tensor:
    """Tile (``tile_row``, ``tile_col``) of a 2-D tensor (torch, or a ttnn host tensor) as float32 [32, 32]."""
    if isinstance(tensor, ttnn.Tensor):
        tensor = ttnn.to_torch(tensor)
    matrix = tensor.reshape(-1, tensor.shape[-1]).float()
    rows, cols = matrix.shape
    if (tile_row + 1) * TILE > rows or (tile_col + 1) * TILE > cols:
        raise ValueError(f"tile ({tile_row}, {tile_col}) is outside a {rows}x{cols} matrix")
    return matrix[tile_row * TILE : (tile_row + 1) * TILE, tile_col * TILE : (tile_col + 1) * TILE].clone()


def face_index_map() -> torch.Tensor:
    """[32, 32] int: the face (0..3) each element of a tile lives in."""
    rows = torch.arange(TILE).div(FACE, rounding_mode="floor").reshape(-1, 1)
    cols = torch.arange(TILE).div(FACE, rounding_mode="floor").reshape(1, -1)
    return (2 * rows + cols).to(torch.int64)


def tile_faces(tile: torch.Tensor) -> list[torch.Tensor]:
    """The four 16x16 faces of a 32x32 tile, in the order ttnn stores them (row-major over faces)."""
    _check_tile(tile)
    return [tile[r : r + FACE, c : c + FACE] for r in (0, FACE) for c in (0, FACE)]


def face_row_exponents(tile: torch.Tensor) -> torch.Tensor:
    """[32, 2] int: the shared exponent (unbiased, i.e. floor(log2 |x|) of the row's largest value) of
    every 16-value face row. Column 0 covers tile columns 0-15 (faces 0 and 2), column 1 columns 16-31.

    These are the 64 exponent bytes a bfloat8_b or bfloat4_b tile stores next to its values. A row of
    zeros has no exponent (reported as the most negative int32).
    """
    _check_tile(tile)
    largest = tile.float().abs().reshape(TILE, TILE // BLOCK_SIZE, BLOCK_SIZE).amax(dim=-1)
    field = (largest.view(torch.int32) >> 23) & 0xFF
    exponent = field - 127
    return torch.where(field == 0, torch.iinfo(torch.int32).min, exponent)


def tile_format_errors(tile: torch.Tensor) -> pd.DataFrame:
    """What storing one fp32 tile in bfloat16, bfloat8_b and bfloat4_b does to it (via ``round_to_dtype``).

    Columns: dtype, bytes_per_tile, pcc, max_abs_error, mean_abs_error, relative_error (Frobenius norm of
    the error over the tile's), flushed_to_zero (non-zero values stored as 0), distinct_values.
    """
    _check_tile(tile)
    tile = tile.float()
    rows = []
    for dtype in (ttnn.bfloat16, ttnn.bfloat8_b, ttnn.bfloat4_b):
        stored = round_to_dtype(tile, dtype).float()
        error = stored - tile
        rows.append(
            {
                "dtype": dtype_name(dtype),
                "bytes_per_tile": bytes_per_tile(dtype),
                "pcc": pcc(stored, tile),
                "max_abs_error": float(error.abs().max()),
                "mean_abs_error": float(error.abs().mean()),
                "relative_error": float(error.norm() / tile.norm()) if tile.norm() > 0 else 0.0,
                "flushed_to_zero": int(flushed_to_zero(tile, dtype).sum()),
                "distinct_values": int(stored.unique().numel()),
            }
        )
    return pd.DataFrame(rows)


def largest_value_tile(tensor) -> tuple[int, int]:
    """(tile_row, tile_col) of the whole tile holding the tensor's largest magnitude: the outlier whose face
    row gets the largest shared exponent, so that its 15 neighbours are measured in the coarsest steps."""
    if isinstance(tensor, ttnn.Tensor):
        tensor = ttnn.to_torch(tensor)
    matrix = tensor.reshape(-1, tensor.shape[-1]).float()
    rows, cols = (matrix.shape[0] // TILE) * TILE, (matrix.shape[1] // TILE) * TILE
    if rows == 0 or cols == 0:
        raise ValueError(f"a {matrix.shape[0]}x{matrix.shape[1]} matrix holds no whole {TILE}x{TILE} tile")
    index = int(matrix[:rows, :cols].abs().argmax())
    row, col = divmod(index, cols)
    return row // TILE, col // TILE


def row_steps(tile: torch.Tensor, dtype) -> torch.Tensor:
    """[32, 32] float32: the step (unit) of ``dtype`` in which each value of the tile is stored, i.e. the
    unit of its face row's shared exponent (2**(e - 6) in bfloat8_b, 2**(e - 2) in bfloat4_b). A value's
    rounding error is at most about half its step; values under half a step are flushed to zero.
    Rows of zeros get step 0."""
    if dtype not in MANTISSA_BITS:
        raise ValueError(f"{dtype} is not a block-float format; choose one of {', '.join(map(str, MANTISSA_BITS))}")
    exponents = face_row_exponents(tile)
    zero_row = exponents == torch.iinfo(torch.int32).min
    steps = torch.pow(2.0, (exponents.clamp_min(-126) - (MANTISSA_BITS[dtype] - 1)).float())
    steps = torch.where(zero_row, 0.0, steps)
    return steps.repeat_interleave(BLOCK_SIZE, dim=1)


def flushed_to_zero(tile: torch.Tensor, dtype) -> torch.Tensor:
    """[32, 32] bool: the non-zero values of the tile that ``dtype`` stores as zero."""
    return (round_to_dtype(tile.float(), dtype) == 0) & (tile != 0)


def _check_tile(tile: torch.Tensor) -> None:
    if tuple(tile.shape) != (TILE, TILE):
        raise ValueError(f"expected one {TILE}x{TILE} tile, got shape {tuple(tile.shape)}")
