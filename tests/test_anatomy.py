"""deit_tt.anatomy: the numbers behind notebooks 01 and 02."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
import ttnn

from deit_tt import anatomy
from deit_tt.blockfloat import round_to_dtype
from deit_tt.checkpoint import random_config
from deit_tt.conversion import convert_parameters, fuse_qkv
from deit_tt.sharding import TILE_BYTES, ModelDims, make_plan

WORMHOLE_GRID, WORMHOLE_L1 = (8, 8), 1_499_136


@pytest.fixture(scope="module")
def tiny_bf16(tiny_checkpoint):
    return convert_parameters(tiny_checkpoint, "bf16", cache_dir=False)


def base_plan(batch: int = 8):
    return make_plan(ModelDims.from_config(random_config("base")), batch, WORMHOLE_GRID, WORMHOLE_L1)


# -- checkpoint anatomy ------------------------------------------------------------------------------


def test_every_hugging_face_parameter_belongs_to_a_converter_family(tiny_checkpoint):
    listing = anatomy.parameter_listing(tiny_checkpoint)
    assert "other" not in set(listing["family"]), listing[listing["family"] == "other"]
    assert set(listing["family"]) == set(anatomy.FAMILY_ORDER)


def test_parameter_table_counts_add_up(tiny_checkpoint):
    table = anatomy.parameter_table(tiny_checkpoint)
    model_total = sum(p.numel() for p in tiny_checkpoint.model.parameters())
    total = table[table["family"] == "total"].iloc[0]
    families = table[table["family"] != "total"].set_index("family")
    assert total["parameters"] == model_total == families["parameters"].sum()
    assert families["share_percent"].sum() == pytest.approx(100.0)
    layers = tiny_checkpoint.config.num_hidden_layers
    assert families.loc["qkv", "tensors"] == layers * 6  # q, k, v weight and bias per layer
    assert families.loc["layernorm", "tensors"] == layers * 4 + 2
    assert families.loc["ff1", "parameters"] == layers * (192 * 768 + 768)
    assert table["parameters"].iloc[:-1].is_monotonic_decreasing


@pytest.mark.parametrize(
    "name, family",
    [
        ("deit.layers.3.attention.k_proj.weight", "qkv"),
        ("deit.layers.3.attention.o_proj.bias", "attention_output"),
        ("deit.layers.0.mlp.fc2.weight", "ff2"),
        ("deit.layers.0.layernorm_after.bias", "layernorm"),
        ("deit.layernorm.weight", "layernorm"),
        ("deit.embeddings.position_embeddings", "embeddings"),
        ("deit.embeddings.patch_embeddings.projection.weight", "patch_embedding"),
        ("distillation_classifier.weight", "classifier"),
        ("something.else", "other"),
    ],
)
def test_family_of(name, family):
    assert anatomy.family_of(name) == family


# -- tiles and formats -------------------------------------------------------------------------------


def test_bytes_per_tile_come_from_ttnn_and_match_the_documented_sizes():
    expected = {ttnn.float32: 4096, ttnn.bfloat16: 2048, ttnn.bfloat8_b: 1024 + 64, ttnn.bfloat4_b: 512 + 64}
    for dtype, size in expected.items():
        assert anatomy.bytes_per_tile(dtype) == size == TILE_BYTES[dtype]
    table = anatomy.tile_bytes_table().set_index("dtype")
    assert table.loc["bfloat8_b", "exponent_bytes"] == table.loc["bfloat4_b", "exponent_bytes"] == 64
    assert table.loc["bfloat16", "exponent_bytes"] == 0
    assert table.loc["bfloat8_b", "bits_per_value"] == 8.5


def test_stored_bytes_counts_whole_tiles():
    tensor = ttnn.from_torch(torch.randn(40, 70), dtype=ttnn.bfloat8_b, layout=ttnn.TILE_LAYOUT)  # pads to 64 x 96
    assert anatomy.stored_bytes(tensor) == 2 * 3 * 1088
    row_major = ttnn.from_torch(torch.randn(3, 5), dtype=ttnn.bfloat16, layout=ttnn.ROW_MAJOR_LAYOUT)
    assert anatomy.stored_bytes(row_major) == 3 * 5 * 2


def test_storage_table_shrinks_matmul_families_but_not_layernorm(tiny_checkpoint, tiny_bf16):
    bf8 = convert_parameters(tiny_checkpoint, "bf8", cache_dir=False)
    table = anatomy.storage_table({"bf16": tiny_bf16, "bf8": bf8}).set_index("family")
    assert table.loc["ff1", "bf8_mib"] / table.loc["ff1", "bf16_mib"] == pytest.approx(1088 / 2048, rel=1e-3)
    assert table.loc["layernorm", "bf8_mib"] == table.loc["layernorm", "bf16_mib"]
    assert table.loc["total", "bf16_mib"] == pytest.approx(table.drop(index="total")["bf16_mib"].sum())


def test_faces_tile_the_tile_in_storage_order():
    tile = torch.arange(32 * 32, dtype=torch.float32).reshape(32, 32)
    faces = anatomy.tile_faces(tile)
    assert [tuple(f.shape) for f in faces] == [(16, 16)] * 4
    assert faces[1][0, 0] == tile[0, 16] and faces[2][0, 0] == tile[16, 0] and faces[3][-1, -1] == tile[-1, -1]
    face_map = anatomy.face_index_map()
    assert (face_map[0, 0], face_map[0, 31], face_map[31, 0], face_map[31, 31]) == (0, 1, 2, 3)
    assert torch.bincount(face_map.flatten()).tolist() == [256] * 4


def test_face_row_exponents_are_the_exponents_block_floats_share():
    generator = torch.Generator().manual_seed(0)
    tile = torch.randn(32, 32, generator=generator) * torch.logspace(-3, 2, 32).reshape(32, 1)
    tile[5, :16] = 0.0  # a face row of zeros has no exponent
    tile[7, 16:] = torch.linspace(-0.5, 3.0, 16)  # row max 3.0 = 1.5 * 2**1
    exponents = anatomy.face_row_exponents(tile)
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
    errors = anatomy.tile_format_errors(tile).set_index("dtype")
    assert list(errors.index) == ["bfloat16", "bfloat8_b", "bfloat4_b"]
    assert errors["relative_error"].is_monotonic_increasing
    assert errors["pcc"].is_monotonic_decreasing
    assert errors.loc["bfloat4_b", "distinct_values"] <= 2 * 7 * 64 + 1  # sign x 3-bit magnitude per row, plus 0
    assert errors.loc["bfloat16", "bytes_per_tile"] == 2048


def test_tile_of_and_widest_range_tile():
    matrix = torch.full((64, 96), 1.0)
    matrix[32 + 3, 64 + 20] = 1e4  # one huge value in tile (1, 2)
    assert anatomy.widest_range_tile(matrix) == (1, 2)
    assert anatomy.tile_of(matrix, 1, 2)[3, 20] == 1e4
    with pytest.raises(ValueError):
        anatomy.tile_of(matrix, 2, 0)


# -- fused QKV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden, heads", [(192, 3), (768, 12)])
def test_qkv_column_owners_describe_the_converter_layout(hidden, heads):
    head_size = hidden // heads
    # rows of HF q/k/v encode (part, head, offset) so the fused weight's columns can be decoded
    rows = torch.arange(hidden)
    codes = [10000 * part + 100 * (rows // head_size) + rows % head_size for part in range(3)]
    q, k, v = (c.double().reshape(-1, 1).expand(hidden, 4) for c in codes)
    fused = fuse_qkv(q, k, v, heads).T  # the [in, 3H] layout ttnn stores
    owners = anatomy.qkv_column_owners(hidden, heads, layout="fused")
    decoded = fused[0].long()
    assert torch.equal(decoded // 10000, torch.tensor(owners["part_index"].to_numpy()))
    assert torch.equal((decoded % 10000) // 100, torch.tensor(owners["head"].to_numpy()))
    assert torch.equal(decoded % 100, torch.tensor(owners["offset"].to_numpy()))
    hf = anatomy.qkv_column_owners(hidden, heads, layout="hf")
    assert hf.loc[hidden, "part"] == "k" and hf.loc[hidden, "head"] == 0
    assert (hf.groupby(["head", "part"]).size() == head_size).all()


def test_qkv_roundtrip_is_exact_for_bfloat16(tiny_checkpoint, tiny_bf16):
    heads = tiny_checkpoint.config.num_attention_heads
    table = anatomy.qkv_roundtrip(tiny_checkpoint, tiny_bf16, layer=2)
    assert len(table) == heads * 3 * 2
    assert table["exact"].all()
    assert table["pcc"].min() > 0.9999
    assert table.loc[(table["tensor"] == "weight") & (table["head"] == 1) & (table["part"] == "v"), "fused_columns"].item() == "320-383"


def test_qkv_roundtrip_catches_a_wrong_interleave(tiny_checkpoint, tiny_bf16):
    layer = tiny_bf16.layers[0]
    hf_order = ttnn.to_torch(layer.qkv_weight).reshape(192, 3, 3, 64).transpose(1, 2).reshape(192, 576)  # [Q | K | V]
    wrong = ttnn.from_torch(hf_order, dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT)
    broken = dataclasses.replace(tiny_bf16, layers=[dataclasses.replace(layer, qkv_weight=wrong)] + tiny_bf16.layers[1:])
    table = anatomy.qkv_roundtrip(tiny_checkpoint, broken, layer=0)
    weights = table[table["tensor"] == "weight"]
    assert not weights["exact"].all()
    assert weights["pcc"].min() < 0.5


def test_qkv_roundtrip_reports_block_float_error_without_exactness(tiny_checkpoint):
    bf8 = convert_parameters(tiny_checkpoint, "bf8", cache_dir=False)
    table = anatomy.qkv_roundtrip(tiny_checkpoint, bf8, layer=0)
    assert table["exact"].isna().all()
    assert 0.999 < table["pcc"].min() < 1.0


# -- padding -----------------------------------------------------------------------------------------


def test_padding_table():
    table = anatomy.padding_table(ModelDims.from_config(random_config("base"))).set_index("quantity")
    assert tuple(table.loc["sequence (tokens)", ["real", "padded", "tiles"]]) == (198, 224, 7)
    assert tuple(table.loc["classifier outputs", ["real", "padded", "tiles"]]) == (1000, 1152, 36)
    assert tuple(table.loc["patch features", ["real", "padded"]]) == (768, 1024)
    assert (table["padded"] % anatomy.TILE == 0).all()


# -- sharding maps -----------------------------------------------------------------------------------


def test_encoder_shard_map_covers_the_activation_exactly_once():
    plan = base_plan()
    cores = anatomy.encoder_shard_map(plan)
    assert len(cores) == plan.encoder_grid.x * plan.encoder_grid.y == 64
    covered = torch.zeros(plan.batch * 224, 768, dtype=torch.int32)
    for r in cores.itertuples():
        covered[r.row_start : r.row_end, r.col_start : r.col_end] += 1
    assert torch.equal(covered, torch.ones_like(covered))
    core = cores[(cores["x"] == 3) & (cores["y"] == 5)].iloc[0]
    assert (core.image_first, core.image_last, core.col_start, core.col_end) == (5, 5, 288, 384)
    assert (core.token_tile_start, core.token_tile_end) == (0, 7)
    assert core.shard_bytes == 7 * 3 * 1088  # 224x96 bfloat8_b


def test_encoder_shard_map_splits_one_image_by_token_tiles():
    plan = make_plan(ModelDims.from_config(random_config("tiny")), 1, WORMHOLE_GRID, WORMHOLE_L1)
    cores = anatomy.encoder_shard_map(plan)
    assert plan.encoder_grid.y == 7  # 7 token tiles of one image, one per core row
    assert set(cores["image_first"]) == set(cores["image_last"]) == {0}
    assert sorted(set(zip(cores["token_tile_start"], cores["token_tile_end"]))) == [(t, t + 1) for t in range(7)]


def test_attention_shard_map_gives_each_image_every_head_once():
    plan = base_plan()
    cores = anatomy.attention_shard_map(plan)
    assert len(cores) == plan.attention_grid.x * plan.batch
    for _, image_cores in cores.groupby("image"):
        heads = sorted(h for r in image_cores.itertuples() for h in range(r.head_first, r.head_last + 1))
        assert heads == list(range(12))
    assert cores["qkv_shard_shape"].iloc[0] == "224x384" and cores["scores_shard_shape"].iloc[0] == "448x224"


def test_l1_by_grid_reports_the_peak_of_each_grid():
    plan = base_plan()
    summary = anatomy.l1_by_grid(plan).set_index("grid role")
    assert list(summary.index) == ["encoder", "attention", "classifier"]
    table = plan.table()
    encoder_ops = table[[anatomy.grid_role(op) == "encoder" for op in table["op"]]]
    assert summary.loc["encoder", "L1 bytes/core"] == encoder_ops["L1 bytes/core"].max()
    assert summary.loc["attention", "grid"] == "6x8"
    assert summary["ops"].sum() == len(table)
