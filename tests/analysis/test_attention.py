"""Attention maps, rollout and token similarity on constructed inputs whose answers are known by hand,
plus one pass over real (random-weight) Hugging Face attentions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import ttnn
from PIL import Image

from deit_tt.analysis import attention
from deit_tt.backends.blockfloat import round_to_dtype
from deit_tt.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, official_transform

N = 198
SIDE = 14


def one_hot_attention(batch=1, heads=3, query_targets=None) -> torch.Tensor:
    """[B, heads, N, N]: every query attends to itself, except those in ``query_targets`` {query: key}."""
    probs = torch.eye(N).repeat(batch, heads, 1, 1)
    for query, key in (query_targets or {}).items():
        probs[:, :, query] = 0
        probs[:, :, query, key] = 1
    return probs


@pytest.mark.parametrize("token, index", [("cls", 0), ("distillation", 1), (0, 0), (1, 1)])
@pytest.mark.parametrize("row, col", [(0, 0), (3, 5), (13, 2), (13, 13)])
def test_map_peaks_at_the_attended_patch(token, index, row, col):
    k = attention.patch_token(row, col)
    assert k == 2 + 14 * row + col
    other = 1 - index
    probs = one_hot_attention(query_targets={index: k, other: attention.patch_token(0, 1)})
    grid = attention.token_attention_map(probs, token=token, head="mean")
    assert grid.shape == (1, SIDE, SIDE)
    assert grid[0, row, col] == 1 and grid.sum() == 1
    peak = divmod(int(grid[0].argmax()), SIDE)
    assert peak == (row, col)


def test_head_selection_and_fusion():
    probs = torch.zeros(2, 3, N, N)
    probs[..., :, 0] = 1.0  # everything attends to CLS by default
    for head, key in enumerate([attention.patch_token(1, 1), attention.patch_token(2, 2), attention.patch_token(3, 3)]):
        probs[:, head, 0] = 0
        probs[:, head, 0, key] = 1
    mean = attention.token_attention_map(probs, "cls", "mean")
    assert mean.shape == (2, SIDE, SIDE)
    assert torch.allclose(mean[:, [1, 2, 3], [1, 2, 3]], torch.full((2, 3), 1 / 3))
    assert torch.equal(attention.token_attention_map(probs, "cls", "max")[0, 2, 2], torch.tensor(1.0))
    assert attention.token_attention_map(probs, "cls", "min").max() == 0
    single = attention.token_attention_map(probs, "cls", 2)
    assert single[0, 3, 3] == 1 and single.sum() == 2
    with pytest.raises(ValueError, match="3 heads"):
        attention.token_attention_map(probs, "cls", 3)
    with pytest.raises(ValueError):
        attention.token_attention_map(probs, "patch")
    with pytest.raises(ValueError):
        attention.token_attention_map(probs[0], "cls")  # missing batch dimension


def test_rollout_small_example_by_hand():
    # 3 tokens: CLS, distillation, one patch (a 1x1 grid), one head.
    a1 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # CLS looks at the patch
    a2 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # CLS looks at the distillation token
    layers = [a1[None, None], a2[None, None]]
    # A_hat = 0.5 A + 0.5 I:  A_hat1 = [[.5,0,.5],[0,1,0],[0,0,1]],  A_hat2 = [[.5,.5,0],[0,1,0],[0,0,1]]
    # rollout = A_hat2 @ A_hat1: row 0 = .5*[.5,0,.5] + .5*[0,1,0] = [.25,.5,.25]
    expected = torch.tensor([[0.25, 0.5, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(attention.rollout_matrix(layers)[0], expected)
    assert torch.allclose(attention.attention_rollout(layers, "cls"), torch.tensor([[[0.25]]]))
    assert torch.allclose(attention.attention_rollout(layers, "distillation"), torch.tensor([[[0.0]]]))
    # the order matters: first layer applied first
    reversed_rollout = attention.rollout_matrix(layers[::-1])[0]
    assert torch.allclose(reversed_rollout[0], torch.tensor([0.25, 0.25, 0.5]))


def test_rollout_rows_sum_to_one_with_every_fusion_and_discard():
    generator = torch.Generator().manual_seed(0)
    layers = [torch.softmax(torch.randn(2, 3, N, N, generator=generator) * 3, dim=-1) for _ in range(3)]
    for fusion in ("mean", "min", "max"):
        for discard in (0.0, 0.5, 0.9):
            matrix = attention.rollout_matrix(layers, fusion, discard)
            assert matrix.shape == (2, N, N)
            assert torch.allclose(matrix.sum(-1), torch.ones(2, N), atol=1e-5), (fusion, discard)
            assert (matrix >= 0).all()
            maps = attention.attention_rollout(layers, "cls", fusion, discard)
            assert maps.shape == (2, SIDE, SIDE)


def test_rollout_without_keepdim_bug():
    """Rows must be divided by their own sums (vit-explain's sum(dim=-1) without keepdim divides columns)."""
    probs = torch.softmax(torch.randn(1, 1, N, N) * 4, dim=-1)
    expected = probs[0, 0] + torch.eye(N)
    expected = expected / expected.sum(-1, keepdim=True)
    assert torch.allclose(attention.rollout_matrix([probs])[0], expected, atol=1e-6)


def test_discard_keeps_prefix_block():
    probs = torch.full((1, 1, N, N), 1.0 / N)
    probs[0, 0, 0, 1] = 1e-9  # the weakest link, but it joins the two prefix tokens
    fused = attention._discard_lowest(attention.fuse_heads(probs, "mean").double(), 0.5)
    assert fused[0, 0, 1] > 0
    assert int((fused == 0).sum()) == int(N * N * 0.5)


def test_rollout_accepts_captures_and_rejects_missing_attentions():
    layers = {f"layers.{i}.attention_probs": one_hot_attention() for i in range(3)}
    layers["layers.0.output"] = torch.zeros(1, N, 8)
    assert len(attention.attention_from_captures(layers)) == 3
    assert attention.attention_rollout(layers, "cls").shape == (1, SIDE, SIDE)
    with pytest.raises(attention.AttentionUnavailableError, match=r"run the pipeline with stages=\{.attention_probs.\}"):
        attention.attention_from_captures({"logits": torch.zeros(1, 1000)})
    with pytest.raises(attention.AttentionUnavailableError, match="eager"):
        attention.as_attention_list((None, None))


def test_token_cosine_similarity_constructed():
    def states(first, second, hidden=4):
        x = torch.randn(len(first), N, hidden)
        x[:, 0] = torch.tensor(first, dtype=torch.float32)
        x[:, 1] = torch.tensor(second, dtype=torch.float32)
        return x

    captures = {
        "embeddings": states([[1, 0, 0, 0], [0, 0, 1, 0]], [[0, 1, 0, 0], [0, 0, 0, 2]]),  # orthogonal: 0
        "layers.0.output": states([[1, 1, 0, 0], [1, 0, 0, 0]], [[1, 0, 0, 0], [1, 0, 0, 0]]),  # (0.7071 + 1) / 2
        "layers.1.output": states([[1, 2, 3, 4], [1, 0, 0, 0]], [[2, 4, 6, 8], [-1, 0, 0, 0]]),  # (1 + -1) / 2
        "final_ln": states([[3, 0, 0, 0], [0, 5, 0, 0]], [[1, 0, 0, 0], [0, 1, 0, 0]]),  # 1
    }
    table = attention.token_cosine_similarity(captures)
    assert list(table["stage"]) == ["embeddings", "layer 0", "layer 1", "final_ln"]
    assert list(table["depth"]) == [0, 1, 2, 2]
    assert np.allclose(table["cosine"], [0.0, (1 / math.sqrt(2) + 1) / 2, 0.0, 1.0])
    hidden_states = [captures["embeddings"], captures["layers.0.output"], captures["layers.1.output"]]
    from_sequence = attention.token_cosine_similarity(hidden_states)
    assert np.allclose(from_sequence["cosine"], table["cosine"][:3])


def test_learned_token_cosine(tiny_checkpoint):
    embeddings = tiny_checkpoint.model.deit.embeddings
    expected = torch.nn.functional.cosine_similarity(
        embeddings.cls_token.detach().flatten(), embeddings.distillation_token.detach().flatten(), dim=0
    )
    assert attention.learned_token_cosine(tiny_checkpoint) == pytest.approx(float(expected), abs=1e-6)


def test_model_view_is_the_crop_the_model_sees():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 451, 3), dtype=np.uint8))
    view = attention.model_view(image)
    assert view.size == (224, 224)
    normalised = (np.asarray(view, dtype=np.float32) / 255 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    assert np.allclose(normalised.transpose(2, 0, 1), official_transform(image).numpy(), atol=1e-5)


def test_overlay_highlights_the_attended_patch():
    image = Image.new("RGB", (320, 240), (128, 128, 128))
    grid = torch.zeros(SIDE, SIDE)
    grid[3, 5] = 1.0
    for mode in ("nearest", "bilinear"):
        picture = np.asarray(attention.overlay(image, grid, alpha=0.6, mode=mode), dtype=np.float64)
        assert picture.shape == (224, 224, 3)
        brightness = picture.sum(-1)
        y, x = np.unravel_index(brightness.argmax(), brightness.shape)
        assert 48 <= y < 64 and 80 <= x < 96, (mode, y, x)  # patch (3, 5) covers rows 48..63, cols 80..95
    constant = attention.overlay(image, torch.ones(1, SIDE, SIDE))
    assert constant.size == (224, 224)


def test_plot_token_maps_draws_three_panels_and_the_shared_colour_bar():
    image = Image.new("RGB", (256, 256), (90, 120, 150))
    figure = attention.plot_token_maps(image, torch.rand(SIDE, SIDE), torch.rand(SIDE, SIDE), title="test")
    assert len(figure.axes) == 4  # three panels and the colour bar the two maps share (it was never drawn)
    assert [axis.get_title() for axis in figure.axes][1:3] == ["CLS token", "distillation token"]
    assert attention.figure_to_png(figure)[:8] == b"\x89PNG\r\n\x1a\n"


def test_hugging_face_attentions(tiny_checkpoint):
    """The same functions on real (random-weight) attentions: 12 layers of [B, 3, 198, 198]."""
    from deit_tt.analysis.reference import capture_reference

    pixel_values = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    captures = capture_reference(tiny_checkpoint.model, pixel_values)
    layers = attention.attention_from_captures(captures)
    assert len(layers) == tiny_checkpoint.config.num_hidden_layers
    assert all(layer.shape == (1, 3, N, N) for layer in layers)
    assert torch.allclose(layers[0].sum(-1), torch.ones(1, 3, N), atol=1e-5)
    for token in ("cls", "distillation"):
        assert attention.token_attention_map(layers[-1], token).shape == (1, SIDE, SIDE)
        rollout = attention.attention_rollout(layers, token)
        assert rollout.shape == (1, SIDE, SIDE) and (rollout >= 0).all()
    # the same through Hugging Face's own output object
    with torch.no_grad():
        output = tiny_checkpoint.model(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    assert torch.allclose(attention.attention_rollout(output, "cls"), attention.attention_rollout(layers, "cls"), atol=1e-5)
    table = attention.token_cosine_similarity(captures)
    assert len(table) == 1 + 12 + 1 and table["cosine"].between(-1, 1).all()
    assert np.allclose(attention.token_cosine_similarity(output.hidden_states)["cosine"], table["cosine"][:13], atol=1e-5)


def test_token_attention_stats_constructed():
    k = attention.patch_token(4, 7)
    probs = one_hot_attention(heads=2)
    probs[:, :, 0] = 0
    probs[:, :, 0, 1] = 0.5  # CLS: half to the distillation token, half to patch k
    probs[:, :, 0, k] = 0.5
    probs[:, :, 1] = 0
    probs[:, :, 1, 2:] = 1 / 196  # distillation token: evenly over all patches
    stats = attention.token_attention_stats([probs, one_hot_attention(heads=2, query_targets={0: k, 1: k})])
    first, second = stats.iloc[0], stats.iloc[1]
    assert list(stats["layer"]) == [0, 1]
    assert first["cls_to_distillation"] == pytest.approx(0.5) and first["distillation_to_cls"] == pytest.approx(0.0)
    assert first["cls_patch_share"] == pytest.approx(0.5) and first["distillation_patch_share"] == pytest.approx(1.0)
    assert first["cls_entropy"] == pytest.approx(0.0, abs=1e-9) and first["distillation_entropy"] == pytest.approx(1.0)
    # one-hot vs uniform: no shared pattern (Pearson 0) and a large JS divergence; identical maps: 1 and 0
    p, q = np.zeros(196), np.full(196, 1 / 196)
    p[k - 2] = 1.0
    m = (p + q) / 2
    js = 0.5 * np.sum(p[p > 0] * np.log2(p[p > 0] / m[p > 0])) + 0.5 * np.sum(q * np.log2(q / m))
    assert first["map_pearson"] == pytest.approx(0.0, abs=1e-9) and first["map_js"] == pytest.approx(js)
    assert second["map_pearson"] == pytest.approx(1.0) and second["map_js"] == pytest.approx(0.0, abs=1e-12)
    assert second["cls_entropy"] == pytest.approx(0.0, abs=1e-9)


def test_map_similarity_discriminates_near_uniform_maps_where_a_cosine_cannot():
    generator = torch.Generator().manual_seed(0)
    base = torch.full((1, 196), 1 / 198)
    first = base + 1e-4 * torch.randn(1, 196, generator=generator)
    second = base + 1e-4 * torch.randn(1, 196, generator=generator)
    assert float(torch.nn.functional.cosine_similarity(first, second)) > 0.99  # the uncentred cosine sees nothing
    unrelated = attention.map_similarity(first, second)
    same = attention.map_similarity(first, first.clone())
    assert abs(float(unrelated["pearson"][0])) < 0.3 and float(same["pearson"][0]) == pytest.approx(1.0)
    assert float(same["js"][0]) == pytest.approx(0.0, abs=1e-12) and float(unrelated["js"][0]) > 0


def test_row_sum_deviation_of_block_float_probabilities():
    def stored_deviation(sharpness):
        scores = torch.randn(1, 2, N, N, generator=torch.Generator().manual_seed(1)) * sharpness
        probabilities = torch.softmax(scores, dim=-1)
        assert attention.row_sum_deviation([probabilities]) < 1e-5
        return attention.row_sum_deviation([round_to_dtype(probabilities, ttnn.bfloat8_b).float()])

    near_uniform, peaked = stored_deviation(0.3), stored_deviation(3.0)
    assert 1e-5 < near_uniform < 0.003  # rounding to a shared-exponent step breaks the exact sum, a little
    assert peaked > 3 * near_uniform  # a large probability sets a coarse step for its whole 16-value block


def test_overlay_with_an_absolute_scale_keeps_a_weak_map_dark():
    image = Image.new("RGB", (224, 224), (0, 0, 0))
    weak = torch.full((SIDE, SIDE), 0.0048)
    weak[3, 5] = 0.0053
    stretched = np.asarray(attention.overlay(image, weak, alpha=1.0, mode="nearest"), dtype=np.float64)
    absolute = np.asarray(attention.overlay(image, weak, alpha=1.0, mode="nearest", scale=(0.0, 1.0)), dtype=np.float64)
    assert stretched.max() > 200  # its own range turns a 10 % difference into full contrast
    assert absolute.max() < 30  # on the 0..1 probability scale it stays near the dark end
    assert attention.map_scale(weak, weak * 2) == (0.0, pytest.approx(0.0106))


def test_random_network_cosine_is_a_baseline_of_the_same_shape(tiny_checkpoint):
    pixel_values = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    baseline = attention.random_network_cosine(tiny_checkpoint.config, pixel_values)
    assert len(baseline) == 1 + tiny_checkpoint.config.num_hidden_layers
    assert baseline["cosine"].iloc[-1] > baseline["cosine"].iloc[0]  # untrained tokens converge too
    with torch.no_grad():
        hidden = tiny_checkpoint.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states
    patches = attention.token_cosine_similarity(hidden, other="patches")
    assert len(patches) == len(baseline) and patches["cosine"].between(-1, 1).all()


def test_attention_agreement():
    generator = torch.Generator().manual_seed(3)
    layers = [torch.softmax(torch.randn(1, 2, N, N, generator=generator), dim=-1) for _ in range(3)]
    same = attention.attention_agreement(layers, [layer.clone() for layer in layers])
    assert len(same) == 3 and (same.filter(like="pcc_") == 1.0).all().all() and (same["max_abs_error"] == 0).all()
    noisy = [torch.softmax(layer.log() + 0.5 * torch.randn(layer.shape, generator=generator), dim=-1) for layer in layers]
    report = attention.attention_agreement(layers, noisy)
    assert (report["pcc_probabilities"] < 1).all() and (report["max_abs_error"] > 0).all()
    assert list(report.columns) == [
        "layer", "pcc_probabilities", "pcc_cls_map", "pcc_distillation_map", "pcc_cls_rollout", "pcc_distillation_rollout", "max_abs_error",
    ]
    with pytest.raises(ValueError, match="2 attention layers vs 3"):
        attention.attention_agreement(layers[:2], layers)


def test_padded_key_mass_measures_what_real_keys_did_not_get():
    probabilities = torch.full((2, 3, 198, 198), 0.9 / 198)
    captures = {"layers.0.attention_probs": probabilities, "layers.1.attention_probs": probabilities * (1 / 0.9)}
    mass = attention.padded_key_mass(captures)
    assert mass["layer"].tolist() == [0, 1]
    assert mass.loc[0, "mean_mass"] == pytest.approx(0.1, abs=1e-6)
    assert mass.loc[1, "max_mass"] == pytest.approx(0.0, abs=1e-6)
