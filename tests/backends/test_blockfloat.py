"""deit_tt.backends.blockfloat must store exactly what ttnn's own host conversion stores, bit for bit.

The reference is ``ttnn.to_torch(ttnn.from_torch(t, dtype=..., layout=ttnn.TILE_LAYOUT))``, the real
ttnn packing code (conftest calls prepare_host() so it runs without a card). Bit patterns are
compared, so NaN payloads, signed zeros and subnormals count. Every test runs on both ways of rounding
block floats: the compiled one (``deit_tt.backends.native``) and the torch one used without a C compiler.
"""

from __future__ import annotations

import pytest
import torch
import ttnn

import deit_tt.backends.blockfloat as blockfloat
from deit_tt.backends import native
from deit_tt.backends.blockfloat import (
    bytes_per_tile,
    face_index_map,
    face_row_exponents,
    flushed_to_zero,
    largest_value_tile,
    round_to_dtype,
    row_steps,
    tile_bytes_table,
    tile_faces,
    tile_format_errors,
    tile_of,
)
from deit_tt.sharding import TILE_BYTES

BLOCK_FLOATS = [pytest.param(ttnn.bfloat8_b, id="bfloat8_b"), pytest.param(ttnn.bfloat4_b, id="bfloat4_b")]
INPUT_DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
NEGATIVE_ZERO_BF16 = -0x8000


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def rounding_path(request, monkeypatch):
    """Each test once with the compiled block-float rounding and once with the torch ops."""
    if request.param == "compiled":
        if not native.available():
            pytest.skip("no C compiler: block floats are rounded by the torch path only")
    else:
        monkeypatch.setattr(native, "round_rows", lambda *args: False)
    return request.param


def ttnn_stores(tensor: torch.Tensor, dtype) -> torch.Tensor:
    return ttnn.to_torch(ttnn.from_torch(tensor, dtype=dtype, layout=ttnn.TILE_LAYOUT))


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns (bfloat16 -> float32 is a plain 16-bit shift, NaNs included)."""
    return tensor.to(torch.float32).view(torch.int32)


def assert_matches_ttnn(tensor: torch.Tensor, dtype) -> torch.Tensor:
    ours = round_to_dtype(tensor, dtype)
    theirs = ttnn_stores(tensor, dtype)
    assert ours.shape == tensor.shape
    if dtype == ttnn.float32:
        assert ours.dtype == torch.float32
    else:
        assert ours.dtype == torch.bfloat16
    if dtype in (ttnn.bfloat8_b, ttnn.bfloat4_b):
        # ttnn hands block floats back as float32: every value must fit bfloat16 exactly (the low
        # 16 bits are zero), which is what lets round_to_dtype return bfloat16 without loss.
        assert theirs.dtype == torch.float32
        assert not (theirs.view(torch.int32) & 0xFFFF).any()
    differ = bits(ours) != bits(theirs)
    if differ.any():
        where = tuple(differ.nonzero()[0].tolist())
        pytest.fail(
            f"{int(differ.sum())} of {differ.numel()} values differ from ttnn; first at {where}: "
            f"input {tensor[where].item()!r} ours {ours[where].item()!r} ttnn {theirs[where].item()!r}"
        )
    return ours


def from_bits(values: list[int]) -> torch.Tensor:
    """float32 tensor from unsigned 32-bit patterns."""
    return torch.tensor([v - (1 << 32) if v >= 1 << 31 else v for v in values], dtype=torch.int32).view(torch.float32)


def rows_of_16(values: torch.Tensor, rows: int = 32) -> torch.Tensor:
    """Pad a flat float32 vector with zeros to whole 16-value rows, lay it out as [rows, cols]."""
    cols = 16 * -(-values.numel() // (16 * rows))
    flat = torch.zeros(rows * cols, dtype=values.dtype)
    flat[: values.numel()] = values
    return flat.view(rows, cols)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
@pytest.mark.parametrize("shape", [[3, 50, 70], [2, 198, 192], [1, 224, 768], [2, 3, 40, 50], [40]])
def test_random_normal_tensors_match_ttnn(shape, input_dtype, dtype):
    generator = torch.Generator().manual_seed(len(shape) * 1000 + shape[-1])
    x = torch.randn(shape, generator=generator) * 3.0
    assert_matches_ttnn(x.to(input_dtype), dtype)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_wide_dynamic_range_rows(input_dtype, dtype):
    generator = torch.Generator().manual_seed(7)
    # Each 16-value row holds one value per power of two from 2**-30 to 2**30 (in steps of 4),
    # with random signs and mantissas, shuffled; then rows of randn scaled by random 2**k.
    exponents = torch.arange(-30, 31, 4, dtype=torch.float32)  # 16 of them
    order = torch.argsort(torch.rand(64, 16, generator=generator), dim=1)
    mantissas = 1 + torch.rand(64, 16, generator=generator)
    signs = torch.where(torch.rand(64, 16, generator=generator) < 0.5, -1.0, 1.0)
    spread = signs * mantissas * torch.exp2(exponents[order])
    scaled = torch.randn(64, 64, generator=generator) * torch.exp2(
        torch.randint(-30, 31, (64, 64), generator=generator).float()
    )
    x = torch.cat([spread, scaled], dim=1)
    ours = assert_matches_ttnn(x.to(input_dtype), dtype)
    assert (ours[:, :16] == 0).sum() > 0  # small values next to 2**30 really are flushed


def test_rounding_rule_bfloat8_b():
    # The documented rules, value by value, on float32 input. Row 0 has max 2.0: shared exponent
    # 2**1, unit 2**-5, and bits below 2**-22 (= 2**(E - 150)) fall off before rounding.
    row0 = [  # (input, stored)
        (2.0, 2.0),
        (0.5 + 2**-6, 0.5),  # tie, 16.5 units -> even 16
        (0.5 + 3 * 2**-6, 0.5625),  # tie, 17.5 units -> even 18
        (0.5 + 2**-6 + 2**-23, 0.5),  # 2**-23 is truncated away first: a tie again -> 16
        (0.5 + 2**-6 + 2**-22, 0.53125),  # 2**-22 survives the truncation: above the tie -> 17
        (-(0.5 + 3 * 2**-6), -0.5625),
        (2**-6 - 2**-20, 0.0),  # below half a unit
        (-(2**-7), 0.0),  # a negative value rounded to zero is stored as +0
        (2**-6, 0.0),  # exactly half a unit: tie -> even 0
        (3 * 2**-6, 2**-4),  # 1.5 units -> 2
        (2.0**-130, 0.0),  # subnormal
    ]
    # Row 1 has max 1.999 (unit 2**-6): 127.9 units would round to 128; stored as 127 units.
    row1 = [(1.999, 1.984375), (-1.999, -1.984375), (1.0 + 2**-7, 1.0)]
    x = torch.zeros(32, 32)
    x[0, : len(row0)] = torch.tensor([value for value, _ in row0])
    x[1, : len(row1)] = torch.tensor([value for value, _ in row1])
    ours = assert_matches_ttnn(x, ttnn.bfloat8_b)
    assert ours[0, : len(row0)].float().tolist() == [stored for _, stored in row0]
    assert ours[1, : len(row1)].float().tolist() == [stored for _, stored in row1]
    assert not (ours.view(torch.int16) == NEGATIVE_ZERO_BF16).any()


def tie_rows(dtype, seed: int, rows: int = 256) -> torch.Tensor:
    """Rows of 16 led by a power of two 2**k, then exact ties (odd multiples of half a unit), some
    nudged by half of 2**(E - 150), the last bit that survives truncation: in float32 those stay
    ties after truncation although they are not ties before it."""
    generator = torch.Generator().manual_seed(seed)
    step_bits = 24 - blockfloat.MANTISSA_BITS[dtype]
    top = torch.exp2(torch.randint(-20, 21, (rows, 1), generator=generator).float())
    unit = top * 2.0 ** -(23 - step_bits)
    halves = (2 * torch.randint(0, 1 << (24 - step_bits), (rows, 15), generator=generator) + 1).float()
    nudge = torch.randint(-1, 2, (rows, 15), generator=generator).float() * top * 2.0**-24
    signs = torch.where(torch.rand(rows, 15, generator=generator) < 0.5, -1.0, 1.0)
    return torch.cat([top, signs * (halves * unit / 2 + nudge)], dim=1)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_exact_ties(input_dtype, dtype):
    assert_matches_ttnn(tie_rows(dtype, seed=11).to(input_dtype), dtype)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_zeros_and_negative_zeros(input_dtype, dtype):
    x = torch.zeros(32, 64)
    x[0] = -0.0  # whole rows of -0
    x[1, :16] = torch.tensor([-0.0, 0.0] * 8)
    x[2, :16] = -0.0
    x[2, 3] = 1.0  # -0 next to a value
    x[3, :16] = -(2.0**-20)
    x[3, 0] = 1.0  # negative values that round to zero
    ours = assert_matches_ttnn(x.to(input_dtype), dtype)
    assert not (ours.view(torch.int16) == NEGATIVE_ZERO_BF16).any()
    assert (ours == 0).sum() == x.numel() - 2  # only the two 1.0s survive


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_tiny_and_subnormal_values(input_dtype, dtype):
    generator = torch.Generator().manual_seed(13)
    x = torch.randn(64, 96, generator=generator)
    # rows of subnormals only, subnormals beside normals, and rows whose largest exponent is small
    x[0:8] *= 2.0**-130  # subnormal (bfloat16 keeps most of them)
    x[8:16, :48] *= 2.0**-133
    x[8:16, 48:] *= 2.0**-124
    scale = torch.exp2(-torch.arange(90, 127, dtype=torch.float32))  # shared exponents 1 .. 37
    x[16:53] *= scale[:, None]
    x[53, :16] = torch.tensor([2.0**-126, -(2.0**-126)] * 8)  # smallest normal
    x[54, :16] = 2.0**-149  # smallest subnormal
    x[55, :16] = torch.tensor([2.0**-97, 2.0**-98] * 8)  # the fast path's lower edge (E = 30 / 29)
    assert_matches_ttnn(x.to(input_dtype), dtype)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_large_values_inf_and_nan(input_dtype, dtype):
    generator = torch.Generator().manual_seed(17)
    x = torch.randn(32, 64, generator=generator)
    bf16_max = torch.finfo(torch.bfloat16).max
    x[0] *= bf16_max / 4
    x[1, :16] = bf16_max
    x[1, 16:32] = -bf16_max * 0.999
    x[2, :16] = 1.999 * 2.0**127  # rounds past the largest step: clamped, not inf
    x[3] *= 2.0**110
    x[4, 3] = float("inf")  # one inf sets the shared exponent of its 16 neighbours to 255
    x[5, 20] = float("-inf")
    x[6, 40] = float("nan")
    x[7, :16] = from_bits([0x7F800001, 0xFFC00000, 0x7FC00001, 0x7FBFFFFF] * 4)  # NaNs with payloads
    if input_dtype == torch.float32:
        x[8, :16] = torch.finfo(torch.float32).max  # above bfloat16's max
    assert_matches_ttnn(x.to(input_dtype), dtype)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_random_bit_patterns(input_dtype, dtype):
    # Every float32/bfloat16 bit pattern is equally likely: NaNs, infs, subnormals, huge and tiny.
    generator = torch.Generator().manual_seed(19)
    if input_dtype == torch.float32:
        x = torch.randint(-(2**31), 2**31, (2, 64, 96), generator=generator).to(torch.int32).view(torch.float32)
    else:
        x = torch.randint(-(2**15), 2**15, (2, 64, 96), generator=generator).to(torch.int16).view(torch.bfloat16)
    assert_matches_ttnn(x, dtype)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
def test_slices_and_fallback_rows(monkeypatch, dtype):
    # Small slices, a ragged last slice, and fallback rows (tiny, inf) in several slices.
    monkeypatch.setattr(blockfloat, "_CHUNK_ROWS", 1000)
    generator = torch.Generator().manual_seed(23)
    x = torch.randn(2, 198, 192, generator=generator)  # 4752 rows of 16: 5 slices
    x[0, 5, :16] *= 2.0**-120
    x[1, 100, 100] = float("inf")
    x[1, 197, -1] = float("nan")
    assert_matches_ttnn(x, dtype)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_rows_split_over_threads(input_dtype, dtype):
    # Enough rows for the compiled path to split them over torch's threads (and the torch path over slices), with
    # rows for the exact rules (inf, NaN, tiny, huge) at the ends and in the middle of the split.
    generator = torch.Generator().manual_seed(37)
    x = torch.randn(8, 224, 768, generator=generator) * torch.exp2(torch.randint(-30, 30, (8, 224, 1), generator=generator).float())
    x[0, 0, 0], x[3, 223, 767], x[4, 0, 20] = float("inf"), float("nan"), 2.0**120
    x[7, 223, -16:] = 2.0**-110
    assert_matches_ttnn(x.to(input_dtype), dtype)


@pytest.mark.parametrize("dtype", BLOCK_FLOATS)
def test_exact_path_alone_matches_ttnn(dtype):
    # The bit-level fallback, run on every row (not only the rare ones the fast path hands it).
    generator = torch.Generator().manual_seed(29)
    normal = torch.randn(32, 256, generator=generator) * torch.exp2(
        torch.randint(-40, 40, (32, 1), generator=generator).float()
    )
    random_bits = torch.randint(-(2**31), 2**31, (32, 256), generator=generator).to(torch.int32).view(torch.float32)
    ties = tie_rows(dtype, seed=30).view(32, -1)
    for x in (normal, random_bits, ties):
        ours = blockfloat._round_block_float_exact(x.reshape(-1, 16), blockfloat.MANTISSA_BITS[dtype])
        assert torch.equal(bits(ours.view(x.shape)), bits(ttnn_stores(x, dtype)))


@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_bfloat16(input_dtype):
    generator = torch.Generator().manual_seed(31)
    specials = from_bits(
        [0x3F808000, 0x3F818000, 0x3F808001, 0x80000000, 0x00000001, 0x00008000, 0x807FFFFF, 0x7F7FFFFF]
        + [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC12345, 0x7F800001, 0x477FF000, 0x7F7F8000, 0xFF7FFFFF]
    )  # ties (1+2**-8, 1+3*2**-8), -0, subnormals, float32 max, infs, NaNs, bf16-max rounding
    x = torch.cat([
        rows_of_16(specials),
        torch.randn(32, 64, generator=generator),
        torch.randint(-(2**31), 2**31, (32, 64), generator=generator).to(torch.int32).view(torch.float32),
    ], dim=1)
    if input_dtype == torch.bfloat16:
        x = torch.randint(-(2**15), 2**15, (32, 96), generator=generator).to(torch.int16).view(torch.bfloat16)
    ours = assert_matches_ttnn(x, ttnn.bfloat16)
    if input_dtype == torch.float32:
        assert ours[0, 0] == 1.0 and ours[0, 1] == 1.015625 and ours[0, 2] == 1.0078125  # round half to even
        assert torch.isinf(ours[0, 7])  # float32 max is above bfloat16's max


@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
def test_float32_is_passed_through(input_dtype):
    generator = torch.Generator().manual_seed(37)
    x = torch.randint(-(2**31), 2**31, (40, 50), generator=generator).to(torch.int32).view(torch.float32)
    ours = assert_matches_ttnn(x.to(input_dtype), ttnn.float32)
    if input_dtype == torch.float32:
        assert torch.equal(ours.view(torch.int32), x.view(torch.int32))


@pytest.mark.parametrize(
    "dtype", [ttnn.bfloat16, ttnn.bfloat8_b, ttnn.bfloat4_b], ids=["bfloat16", "bfloat8_b", "bfloat4_b"]
)
@pytest.mark.parametrize("input_dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
def test_other_float_inputs_go_through_bfloat16(input_dtype, dtype):
    generator = torch.Generator().manual_seed(41)
    x = (torch.randn(40, 50, generator=generator, dtype=torch.float64) * 4).to(input_dtype)
    ours = assert_matches_ttnn(x, dtype)
    if dtype != ttnn.bfloat16:  # packing the float32 values directly would differ
        direct = round_to_dtype(x.to(torch.float32), dtype)
        assert not torch.equal(bits(ours), bits(direct))


def test_non_contiguous_input_and_input_untouched():
    generator = torch.Generator().manual_seed(43)
    base = torch.randn(2, 64, 80, generator=generator)
    before = base.clone()
    x = base.transpose(-1, -2)  # [2, 80, 64], rows of 16 are strided in memory
    ours = round_to_dtype(x, ttnn.bfloat8_b)
    assert torch.equal(bits(ours), bits(ttnn_stores(x.contiguous(), ttnn.bfloat8_b)))
    assert torch.equal(base, before)


def test_rejects_what_it_cannot_round():
    with pytest.raises(TypeError):
        round_to_dtype(torch.arange(32), ttnn.bfloat8_b)
    with pytest.raises(ValueError):
        round_to_dtype(torch.randn(4, 32), ttnn.uint32)


def test_empty_tensor():
    assert round_to_dtype(torch.empty(0, 32), ttnn.bfloat8_b).shape == (0, 32)


# -- one tile, looked at (notebook 01) ---------------------------------------------------------------


def test_bytes_per_tile_come_from_ttnn_and_match_the_documented_sizes():
    expected = {ttnn.float32: 4096, ttnn.bfloat16: 2048, ttnn.bfloat8_b: 1024 + 64, ttnn.bfloat4_b: 512 + 64}
    for dtype, size in expected.items():
        assert bytes_per_tile(dtype) == size == TILE_BYTES[dtype]
    table = tile_bytes_table().set_index("dtype")
    assert table.loc["bfloat8_b", "exponent_bytes"] == table.loc["bfloat4_b", "exponent_bytes"] == 64
    assert table.loc["bfloat16", "exponent_bytes"] == 0
    assert table.loc["bfloat8_b", "bits_per_value"] == 8.5


def test_faces_tile_the_tile_in_storage_order():
    tile = torch.arange(32 * 32, dtype=torch.float32).reshape(32, 32)
    faces = tile_faces(tile)
    assert [tuple(f.shape) for f in faces] == [(16, 16)] * 4
    assert faces[1][0, 0] == tile[0, 16] and faces[2][0, 0] == tile[16, 0] and faces[3][-1, -1] == tile[-1, -1]
    face_map = face_index_map()
    assert (face_map[0, 0], face_map[0, 31], face_map[31, 0], face_map[31, 31]) == (0, 1, 2, 3)
    assert torch.bincount(face_map.flatten()).tolist() == [256] * 4


def test_face_row_exponents_are_the_exponents_block_floats_share():
    generator = torch.Generator().manual_seed(0)
    tile = torch.randn(32, 32, generator=generator) * torch.logspace(-3, 2, 32).reshape(32, 1)
    tile[5, :16] = 0.0  # a face row of zeros has no exponent
    tile[7, 16:] = torch.linspace(-0.5, 3.0, 16)  # row max 3.0 = 1.5 * 2**1
    exponents = face_row_exponents(tile)
    assert exponents.shape == (32, 2)
    assert exponents[7, 1] == 1
    assert exponents[5, 0] == torch.iinfo(torch.int32).min
    # every bfloat8_b value of a face row is a multiple of that row's step 2**(e - 6)
    stored = round_to_dtype(tile, ttnn.bfloat8_b).double().reshape(32, 2, 16)
    for row in range(32):
        for half in range(2):
            if row == 5 and half == 0:
                continue
            step = 2.0 ** (int(exponents[row, half]) - 6)
            units = stored[row, half] / step
            assert torch.equal(units, units.round()), (row, half)
            assert units.abs().max() <= 127


def test_tile_format_errors_order_the_formats():
    tile = torch.randn(32, 32, generator=torch.Generator().manual_seed(1)) * 0.02
    errors = tile_format_errors(tile).set_index("dtype")
    assert list(errors.index) == ["bfloat16", "bfloat8_b", "bfloat4_b"]
    assert errors["relative_error"].is_monotonic_increasing
    assert errors["pcc"].is_monotonic_decreasing
    assert errors.loc["bfloat4_b", "distinct_values"] <= 2 * 7 * 64 + 1  # sign x 3-bit magnitude per row, plus 0
    assert errors.loc["bfloat16", "bytes_per_tile"] == 2048


def test_tile_of_and_largest_value_tile():
    matrix = torch.full((64, 96), 1.0)
    matrix[32 + 3, 64 + 20] = -1e4  # one huge value in tile (1, 2)
    matrix[63, 95] = 2.0
    assert largest_value_tile(matrix) == (1, 2)
    assert tile_of(matrix, 1, 2)[3, 20] == -1e4
    with pytest.raises(ValueError):
        tile_of(matrix, 2, 0)


def test_row_steps_bound_the_rounding_error_and_mark_what_is_flushed():
    tile = torch.randn(32, 32, generator=torch.Generator().manual_seed(2)) * 0.02
    tile[3, 5] = 1.0  # an outlier: its face row (columns 0-15) gets exponent 0, step 2**-6 in bfloat8_b
    tile[4, :16] = 0.0
    steps = row_steps(tile, ttnn.bfloat8_b)
    assert steps[3, 0] == steps[3, 15] == 2.0**-6 and steps[3, 16] < 2.0**-6
    assert (steps[4, :16] == 0).all()
    for dtype in (ttnn.bfloat8_b, ttnn.bfloat4_b):
        steps = row_steps(tile, dtype)
        error = (round_to_dtype(tile, dtype).float() - tile).abs()
        nonzero = steps > 0
        assert (error[nonzero] <= steps[nonzero]).all()  # truncation then rounding: under one step
        flushed = flushed_to_zero(tile, dtype)
        assert (tile[flushed].abs() <= steps[flushed]).all()
    assert flushed_to_zero(tile, ttnn.bfloat4_b)[3, :16].sum() > flushed_to_zero(tile, ttnn.bfloat8_b)[3, :16].sum()
    with pytest.raises(ValueError, match="not a block-float"):
        row_steps(tile, ttnn.bfloat16)
