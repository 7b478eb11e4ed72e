"""Weight conversion: fused QKV layout, padding, the folded patch embedding, dtype policies."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import ttnn
from transformers import DeiTForImageClassification

from deit_tt.checkpoints.loading import Checkpoint, random_config
from deit_tt.model.conversion import (
    FAMILIES,
    DeiTParameters,
    convert_parameters,
    converted_tensors,
    fold_pixels,
    fuse_qkv,
    padded_num_labels,
    qkv_column_owners,
    qkv_roundtrip,
    split_fused_qkv,
)
from deit_tt.errors import UserFacingError
from deit_tt.model.policy import get_policy
from deit_tt.model.quantization import quantization_report, storage_table, stored_bytes, summarize, tensor_metrics


@pytest.fixture(scope="module")
def textured_checkpoint(tiny_checkpoint):
    """The tiny random checkpoint with CLS / distillation / position embeddings of its own seed.

    The random checkpoints draw those from N(0, 0.02) already; these tests do not rely on that, so that the
    padding and read-back checks stay meaningful whatever ``random_checkpoint`` initialises.
    """
    checkpoint = copy.deepcopy(tiny_checkpoint)
    generator = torch.Generator().manual_seed(1)
    embeddings = checkpoint.model.deit.embeddings
    with torch.no_grad():
        for parameter in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    checkpoint.identity += ":textured-embeddings"
    return checkpoint


@pytest.fixture(scope="module")
def tiny_bf16(textured_checkpoint) -> DeiTParameters:
    return convert_parameters(textured_checkpoint, "bf16", cache_dir=False)


@pytest.fixture(scope="module")
def tiny_bf8(textured_checkpoint) -> DeiTParameters:
    return convert_parameters(textured_checkpoint, "bf8", cache_dir=False)


def _torch(tensor: ttnn.Tensor) -> torch.Tensor:
    return ttnn.to_torch(tensor)


def test_layout_shapes_dtypes_and_layouts(textured_checkpoint, tiny_bf8):
    hidden = textured_checkpoint.config.hidden_size
    p = tiny_bf8
    policy = get_policy("bf8")
    tile, row_major = ttnn.TILE_LAYOUT, ttnn.ROW_MAJOR_LAYOUT
    expected = {
        "patch_embedding_weight": ([1024, hidden], policy.matmul_weights, tile),
        "patch_embedding_bias": ([1, hidden], policy.matmul_biases, tile),
        "cls_token": ([1, 1, hidden], ttnn.bfloat16, row_major),
        "distillation_token": ([1, 1, hidden], ttnn.bfloat16, row_major),
        "position_embeddings": ([1, 224, hidden], policy.embeddings, tile),
        "layernorm_weight": ([1, hidden], policy.layernorm, tile),
        "layernorm_bias": ([1, hidden], policy.layernorm, tile),
    }
    for name, (shape, dtype, layout) in expected.items():
        tensor = getattr(p, name)
        assert list(tensor.shape) == shape, name
        assert (tensor.dtype, tensor.layout) == (dtype, layout), name
        assert tensor.storage_type() == ttnn.StorageType.HOST, name
    layer_expected = {
        "layernorm_before_weight": [1, hidden],
        "qkv_weight": [hidden, 3 * hidden],
        "qkv_bias": [1, 3 * hidden],
        "attention_output_weight": [hidden, hidden],
        "attention_output_bias": [1, hidden],
        "layernorm_after_bias": [1, hidden],
        "ff1_weight": [hidden, 4 * hidden],
        "ff1_bias": [1, 4 * hidden],
        "ff2_weight": [4 * hidden, hidden],
        "ff2_bias": [1, hidden],
    }
    assert len(p.layers) == textured_checkpoint.config.num_hidden_layers
    for name, shape in layer_expected.items():
        tensor = getattr(p.layers[3], name)
        assert list(tensor.shape) == shape, name
        assert tensor.layout == tile
        role = "layernorm" if "layernorm" in name else "matmul_weights" if name.endswith("weight") else "matmul_biases"
        assert tensor.dtype == getattr(policy, role), name
    assert list(p.heads) == ["cls_classifier", "distillation_classifier"]
    for weight, bias in p.heads.values():
        assert list(weight.shape) == [hidden, 1152] and list(bias.shape) == [1, 1152]
    assert p.num_labels == 1000 and p.padded_num_labels == 1152 and p.policy == policy


def test_padded_label_count_divides_every_grid_width():
    assert padded_num_labels(1000) == 1152
    assert padded_num_labels(384) == 384 and padded_num_labels(385) == 768
    for columns in (1, 2, 3, 4, 6, 12):
        assert (padded_num_labels(1000) // 32) % columns == 0


def test_fused_qkv_is_head_interleaved_and_unfuses_exactly_in_bf16(textured_checkpoint, tiny_bf16):
    heads = textured_checkpoint.config.num_attention_heads
    head_size = textured_checkpoint.config.hidden_size // heads
    for index in (0, 5, 11):
        attention = textured_checkpoint.model.deit.layers[index].attention
        weight = _torch(tiny_bf16.layers[index].qkv_weight)
        bias = _torch(tiny_bf16.layers[index].qkv_bias)
        assert weight.dtype == torch.bfloat16
        q, k, v = split_fused_qkv(weight, heads)
        qb, kb, vb = split_fused_qkv(bias, heads)
        for got, projection in ((q, attention.q_proj), (k, attention.k_proj), (v, attention.v_proj)):
            assert torch.equal(got, projection.weight.detach().bfloat16())
        for got, projection in ((qb, attention.q_proj), (kb, attention.k_proj), (vb, attention.v_proj)):
            assert torch.equal(got, projection.bias.detach().bfloat16())
        # explicit layout: column block [3*h*d, 3*h*d + d) is head h of q, then k, then v
        for h in range(heads):
            rows = slice(h * head_size, (h + 1) * head_size)
            for j, projection in enumerate((attention.q_proj, attention.k_proj, attention.v_proj)):
                columns = slice((3 * h + j) * head_size, (3 * h + j + 1) * head_size)
                assert torch.equal(weight[:, columns], projection.weight.detach()[rows].T.bfloat16())
                assert torch.equal(bias[0, columns], projection.bias.detach()[rows].bfloat16())


def test_split_fused_qkv_accepts_ttnn_tensors_and_rejects_other_shapes(tiny_bf16, textured_checkpoint):
    heads = textured_checkpoint.config.num_attention_heads
    q, _, _ = split_fused_qkv(tiny_bf16.layers[0].qkv_weight, heads)
    assert torch.equal(q, textured_checkpoint.model.deit.layers[0].attention.q_proj.weight.detach().bfloat16())
    with pytest.raises(ValueError):
        split_fused_qkv(torch.zeros(4, 5), heads)


@pytest.mark.parametrize("policy", ["bf16", "bf8", "bf4"])
def test_padding_is_exactly_zero(textured_checkpoint, policy):
    # real regions are checked for being mostly non-zero only (bfloat4_b flushes some small values to 0)
    p = convert_parameters(textured_checkpoint, policy, cache_dir=False)
    labels = textured_checkpoint.config.num_labels
    for weight, bias in p.heads.values():
        weight, bias = _torch(weight), _torch(bias)
        assert torch.count_nonzero(weight[:, labels:]) == 0 and torch.count_nonzero(bias[:, labels:]) == 0
        assert torch.count_nonzero(weight[:, :labels]) > 0.5 * weight[:, :labels].numel()
    position = _torch(p.position_embeddings)
    assert torch.count_nonzero(position[:, 198:]) == 0
    assert torch.count_nonzero(position[:, :198]) > 0.5 * position[:, :198].numel()
    patch = _torch(p.patch_embedding_weight)
    assert torch.count_nonzero(patch[3::4]) == 0  # the padded 4th input channel
    assert torch.count_nonzero(patch[0::4]) > 0.5 * patch[0::4].numel()


def test_folded_patch_matmul_equals_hf_conv_patch_embedding(textured_checkpoint, tiny_bf16):
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 3, 224, 224, generator=generator)
    with torch.no_grad():
        expected = textured_checkpoint.model.deit.embeddings.patch_embeddings(pixels)  # (B, 196, H)

    fold = ttnn.get_golden_function(ttnn.fold)
    linear = ttnn.get_golden_function(ttnn.linear)
    folded = fold(fold_pixels(pixels).bfloat16(), 16, 1, collapse_output=True)  # (1, 1, B*196, 1024)
    assert folded.shape == (1, 1, 2 * 196, 1024)
    weight = _torch(tiny_bf16.patch_embedding_weight)
    bias = _torch(tiny_bf16.patch_embedding_bias)
    got = linear(folded.float(), weight.float(), bias=bias.float()).reshape(2, 196, -1)
    assert tensor_metrics(got, expected)["pcc"] >= 0.9999
    # a wrong weight layout (e.g. channels first) would not come close
    shuffled = weight.reshape(4, 16, 16, -1).permute(1, 2, 0, 3).reshape(1024, -1)
    assert tensor_metrics(linear(folded.float(), shuffled.float(), bias=bias.float()).reshape(2, 196, -1), expected)["pcc"] < 0.9


def test_bf8_weights_read_back_close_to_originals(textured_checkpoint, tiny_bf8):
    report = quantization_report(textured_checkpoint, tiny_bf8)
    assert len(report) == len(tiny_bf8.named_tensors())
    block_float = report[report["dtype"] == "bfloat8_b"]
    assert len(block_float) > 0 and set(block_float["family"]) >= {"qkv", "attention_output", "ff1", "ff2", "classifier", "patch_embedding"}
    weights = block_float[block_float["name"].str.endswith("weight")]
    assert weights["pcc"].min() >= 0.999, weights.sort_values("pcc").head()
    assert report["padding_zero"].dropna().all()
    summary = summarize(report)
    assert list(summary["family"]) == list(FAMILIES)
    assert summary.set_index("family").loc["qkv", "tensors"] == 2 * 12


def test_converted_tensors_pairs_every_tensor_with_its_original(textured_checkpoint, tiny_bf16):
    items = converted_tensors(textured_checkpoint, tiny_bf16)
    assert [item.name for item in items] == list(tiny_bf16.named_tensors())
    assert {item.family for item in items} == set(FAMILIES)
    for item in items:
        assert tuple(item.original.shape) == tuple(item.tensor.shape), item.name
        assert item.original.dtype == torch.float32
        if item.valid is not None:
            assert item.valid.shape == item.original.shape and torch.count_nonzero(item.original[~item.valid]) == 0
    by_name = {item.name: item for item in items}
    # bf16: every tensor is the original rounded to bfloat16, nothing else
    for name in ("layers.2.qkv.weight", "heads.distillation_classifier.weight", "position_embeddings", "cls_token"):
        assert torch.equal(_torch(by_name[name].tensor), by_name[name].original.bfloat16()), name


def test_plain_classifier_checkpoint_has_one_head():
    config = random_config("tiny")
    config.num_hidden_layers = 2
    config.num_labels = 10
    torch.manual_seed(0)
    model = DeiTForImageClassification(config).eval()
    checkpoint = Checkpoint(model, "random:plain", "test:plain-tiny-2-layers", is_random=True)
    p = convert_parameters(checkpoint, "bf16", cache_dir=False)
    assert list(p.heads) == ["classifier"] and len(p.layers) == 2 and p.num_labels == 10
    weight, bias = p.heads["classifier"]
    assert list(weight.shape) == [192, 384]
    assert torch.equal(_torch(weight)[:, :10], model.classifier.weight.detach().T.bfloat16())
    assert torch.count_nonzero(_torch(bias)[:, 10:]) == 0


def test_unsupported_geometry_is_a_user_facing_error():
    config = random_config("tiny")
    config.num_hidden_layers = 1
    config.image_size = 384
    checkpoint = Checkpoint(DeiTForImageClassification(config).eval(), "random:384", "test:384", is_random=True)
    with pytest.raises(UserFacingError, match="224/16"):
        convert_parameters(checkpoint, cache_dir=False)


@pytest.mark.slow
def test_base_bf8_twelve_head_layout(base_checkpoint):
    parameters = convert_parameters(base_checkpoint, "bf8", cache_dir=False)
    assert list(parameters.layers[0].qkv_weight.shape) == [768, 2304]
    attention = base_checkpoint.model.deit.layers[11].attention
    q, k, v = split_fused_qkv(parameters.layers[11].qkv_weight, 12)
    for got, projection in ((q, attention.q_proj), (k, attention.k_proj), (v, attention.v_proj)):
        assert tensor_metrics(got, projection.weight.detach())["pcc"] >= 0.999
    weight = ttnn.to_torch(parameters.heads["distillation_classifier"][0])
    assert list(weight.shape) == [768, 1152] and torch.count_nonzero(weight[:, 1000:]) == 0


# -- the fused QKV layout, looked at (notebook 01) ---------------------------------------------------


@pytest.mark.parametrize("hidden, heads", [(192, 3), (768, 12)])
def test_qkv_column_owners_describe_the_converter_layout(hidden, heads):
    head_size = hidden // heads
    # rows of HF q/k/v encode (part, head, offset) so the fused weight's columns can be decoded
    rows = torch.arange(hidden)
    codes = [10000 * part + 100 * (rows // head_size) + rows % head_size for part in range(3)]
    q, k, v = (c.double().reshape(-1, 1).expand(hidden, 4) for c in codes)
    fused = fuse_qkv(q, k, v, heads).T  # the [in, 3H] layout ttnn stores
    owners = qkv_column_owners(hidden, heads, layout="fused")
    decoded = fused[0].long()
    assert torch.equal(decoded // 10000, torch.tensor(owners["part_index"].to_numpy()))
    assert torch.equal((decoded % 10000) // 100, torch.tensor(owners["head"].to_numpy()))
    assert torch.equal(decoded % 100, torch.tensor(owners["offset"].to_numpy()))
    hf = qkv_column_owners(hidden, heads, layout="hf")
    assert hf.loc[hidden, "part"] == "k" and hf.loc[hidden, "head"] == 0
    assert (hf.groupby(["head", "part"]).size() == head_size).all()


def test_qkv_roundtrip_is_exact_for_bfloat16(textured_checkpoint, tiny_bf16):
    heads = textured_checkpoint.config.num_attention_heads
    table = qkv_roundtrip(textured_checkpoint, tiny_bf16, layer=2)
    assert len(table) == heads * 3 * 2
    assert table["exact"].all()
    assert table["pcc"].min() > 0.9999
    assert table.loc[(table["tensor"] == "weight") & (table["head"] == 1) & (table["part"] == "v"), "fused_columns"].item() == "320-383"


def test_qkv_roundtrip_catches_a_wrong_interleave(textured_checkpoint, tiny_bf16):
    layer = tiny_bf16.layers[0]
    hf_order = ttnn.to_torch(layer.qkv_weight).reshape(192, 3, 3, 64).transpose(1, 2).reshape(192, 576)  # [Q | K | V]
    wrong = ttnn.from_torch(hf_order, dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT)
    broken = dataclasses.replace(tiny_bf16, layers=[dataclasses.replace(layer, qkv_weight=wrong)] + tiny_bf16.layers[1:])
    table = qkv_roundtrip(textured_checkpoint, broken, layer=0)
    weights = table[table["tensor"] == "weight"]
    assert not weights["exact"].all()
    assert weights["pcc"].min() < 0.5


def test_qkv_roundtrip_reports_block_float_error_without_exactness(textured_checkpoint, tiny_bf8):
    table = qkv_roundtrip(textured_checkpoint, tiny_bf8, layer=0)
    assert table["exact"].isna().all()
    assert 0.999 < table["pcc"].min() < 1.0




# -- storage per family --------------------------------------------------------------------------------


def test_stored_bytes_counts_whole_tiles():
    tensor = ttnn.from_torch(torch.randn(40, 70), dtype=ttnn.bfloat8_b, layout=ttnn.TILE_LAYOUT)  # pads to 64 x 96
    assert stored_bytes(tensor) == 2 * 3 * 1088
    row_major = ttnn.from_torch(torch.randn(3, 5), dtype=ttnn.bfloat16, layout=ttnn.ROW_MAJOR_LAYOUT)
    assert stored_bytes(row_major) == 3 * 5 * 2


def test_storage_table_shrinks_matmul_families_but_not_layernorm(textured_checkpoint, tiny_bf16, tiny_bf8):
    table = storage_table(textured_checkpoint, {"bf16": tiny_bf16, "bf8": tiny_bf8}).set_index("family")
    assert table.loc["ff1", "bf8_mib"] / table.loc["ff1", "bf16_mib"] == pytest.approx(1088 / 2048, rel=1e-3)
    assert table.loc["layernorm", "bf8_mib"] == table.loc["layernorm", "bf16_mib"]
    assert table.loc["total", "bf16_mib"] == pytest.approx(table.drop(index="total")["bf16_mib"].sum())
