"""Tensix numerics primitives against values worked out by hand from the documented semantics.

Sources (ttnn 0.81.1 wheel, site-packages/ttnn/; SFPU = tt_metal/hw/ckernels/wormhole_b0/metal/llk_api/llk_sfpu):
tech_reports/matrix_engine/matrix_engine.md (tt-metal) for the fidelity phases,
tt_metal/tt-llk/tt_llk_wormhole_b0/llk_lib/llk_unpack_AB_matmul.h L56-57 for in0 -> SrcB, in1 -> SrcA,
ttnn/cpp/ttnn/operations/matmul/device/kernels/compute/bmm_large_block_zm_fused_bias_activation.cpp for the
K-block accumulation, SFPU/ckernel_sfpu_exp.h and SFPU/ckernel_sfpu_gelu.h for exp and GELU.
"""

from __future__ import annotations

import pytest
import torch
import ttnn

from deit_tt.backends import tensix_numerics as tn
from deit_tt.errors import UserFacingError
from deit_tt.model.vocabulary import ALL_STAGES

FIDELITY = ttnn.MathFidelity


def config(fidelity=FIDELITY.LoFi, approx=False, fp32=False, l1_acc=True):
    return ttnn.WormholeComputeKernelConfig(math_fidelity=fidelity, math_approx_mode=approx, fp32_dest_acc_en=fp32, packer_l1_acc=l1_acc)


# 1 + 127/128 = 1.9921875 is bf16 with all 7 mantissa bits set (0x3FFF).
ALL_BITS = 1.9921875


def test_truncation_keeps_hidden_plus_4_bits_of_srca_and_6_of_srcb():
    # matrix_engine.md: LoFi reads SrcA with 1 hidden + 4 MSBs (1.1111b = 1.9375), SrcB with 1 + 6 (1.111111b = 1.984375)
    x = torch.tensor([ALL_BITS, -ALL_BITS], dtype=torch.bfloat16)
    assert tn.truncate_mantissa(x, tn.SRCA_HIGH).tolist() == [1.9375, -1.9375]
    assert tn.truncate_mantissa(x, tn.SRCB_HIGH).tolist() == [1.984375, -1.984375]
    assert tn.truncate_mantissa(x.float(), tn.SRCA_HIGH).tolist() == [1.9375, -1.9375]


@pytest.mark.parametrize(
    "fidelity, expected",
    [
        (FIDELITY.LoFi, 1.9375 * 1.984375),  # A_hi x B_hi
        (FIDELITY.HiFi2, ALL_BITS * 1.984375),  # + A_lo x B_hi: all of A's 7 bits
        (FIDELITY.HiFi3, ALL_BITS * 1.984375 + 1.9375 * (ALL_BITS - 1.984375)),  # + A_hi x B_lo
        (FIDELITY.HiFi4, ALL_BITS * ALL_BITS),  # + A_lo x B_lo: the exact product
    ],
)
def test_product_is_the_sum_of_the_fidelity_phases(fidelity, expected):
    a = torch.tensor([[ALL_BITS]], dtype=torch.bfloat16)  # in0 -> SrcB
    b = torch.tensor([[ALL_BITS]], dtype=torch.bfloat16)  # in1 -> SrcA
    assert tn.fidelity_matmul(a, b, fidelity).item() == expected


def test_bfloat8_b_weights_lose_their_low_mantissa_bits_at_lofi():
    # a bfloat8_b value of a block with shared exponent 2^0 and mantissa 0b1011011 (7 bits): 1 + 91/128
    weight = torch.tensor([[1 + 91 / 128]])
    activation = torch.tensor([[1.0]])
    # SrcA keeps 1 + 0b1011/16 = 1.6875; the activation 1.0 is exact in any phase
    assert tn.fidelity_matmul(activation, weight, FIDELITY.LoFi).item() == 1.6875
    assert tn.fidelity_matmul(activation, weight, FIDELITY.HiFi2).item() == 1 + 91 / 128


def test_k_blocked_bf16_accumulation_of_a_known_sum():
    # K = 96 in three blocks of 32 (in0_block_w = 1 tile), block sums 256, 0.75, 0.75 (exact sum 257.5).
    # bf16 spacing at 256 is 2: 256 + 0.75 rounds back to 256, twice -> 256. One block of 96 rounds 257.5 once
    # -> 258. fp32 dest keeps 257.5.
    in0 = torch.ones(1, 96)
    in1 = torch.zeros(96, 1)
    in1[:32] = 8.0  # 32 x 8 = 256
    in1[32:35] = 0.25
    in1[64:67] = 0.25
    bf16 = config(FIDELITY.HiFi4)
    assert tn.blocked_matmul(in0, in1, bf16, 32, ttnn.bfloat16).item() == 256.0
    assert tn.blocked_matmul(in0, in1, bf16, 96, ttnn.bfloat16).item() == 258.0
    assert tn.blocked_matmul(in0, in1, config(FIDELITY.HiFi4, fp32=True), 32, ttnn.bfloat16).item() == 257.5


@pytest.mark.parametrize("fidelity", [FIDELITY.LoFi, FIDELITY.HiFi2, FIDELITY.HiFi3, FIDELITY.HiFi4])
def test_bfloat16_block_products_agree_with_float32_ones(fidelity):
    # bfloat16 operands take one bfloat16 GEMM per K block (HiFi3's two phases side by side along K); the same
    # values as float32 tensors take the float32 products, each block's sum rounded to bfloat16 by hand. The two
    # may differ only where float32 summation order moves a sum across a rounding boundary: one bfloat16 step.
    generator = torch.Generator().manual_seed(0)
    in0 = torch.randn(64, 256, generator=generator).bfloat16()
    in1 = (0.05 * torch.randn(256, 96, generator=generator)).bfloat16()
    fast = tn.blocked_matmul(in0, in1, config(fidelity), 64, ttnn.bfloat16)
    exact = tn.blocked_matmul(in0.float(), in1.float(), config(fidelity), 64, ttnn.bfloat16)
    differ = fast != exact
    assert differ.float().mean() < 0.01
    steps = (fast[differ].bfloat16().view(torch.int16).int() - exact[differ].bfloat16().view(torch.int16).int()).abs()
    assert bool((steps == 1).all())
    # a dropped phase would move far more than that: HiFi4 against LoFi differs almost everywhere
    if fidelity != FIDELITY.LoFi:
        assert (fast != tn.blocked_matmul(in0, in1, config(FIDELITY.LoFi), 64, ttnn.bfloat16)).float().mean() > 0.5


def test_fast_exp_at_chosen_points():
    # ckernel_sfpu_exp.h exp_init: i = round(369.3299 x + 32500.818), clamped at x >= -88.5, bits = i << 15.
    # x = 0: i = 32501 = 0x7EF5 -> exponent 0x7E (2^-1), mantissa 0xF5/256 -> 0.5 * (1 + 245/256)
    # x = -1: 32131.488 -> 32131 = 0x7D83 -> 2^-2 * (1 + 131/256)
    # x = -100: clamped to -88.5 -> negative -> saturates to 0 -> 0.0
    x = torch.tensor([0.0, -1.0, -100.0])
    assert tn.fast_exp(x).tolist() == [0.5 * (1 + 245 / 256), 0.25 * (1 + 131 / 256), 0.0]


@pytest.mark.parametrize("fp32, stored", [(False, torch.bfloat16), (True, torch.float32)])
def test_softmax_probabilities_are_packed_from_dest(fp32, stored):
    # softmax_sharded.cpp: exps x 1/sum is a ckl::mul into dest, packed from there: a Float16_b dest holds the
    # products rounded to bfloat16 (the pack to bfloat8_b starts from those), a float32 dest keeps them exact.
    scores = torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(0)).bfloat16()
    probabilities = tn.softmax(scores, compute_kernel_config=config(FIDELITY.HiFi4, approx=True, fp32=fp32, l1_acc=False))
    assert probabilities.dtype == stored
    assert torch.allclose(probabilities.float().sum(-1), torch.ones(2, 3, 32), atol=0.02)


@pytest.mark.parametrize(
    "x, expected",
    [
        # ckernel_sfpu_gelu.h gelu_init: 0.5 x + slope |x| + intercept; breakpoints 0.5, 1, 1.5, 2, 3 (TABLE1)
        (0.0, -0.00010443),
        (0.5, 0.25 + 0.4939 * 0.5 - 0.1604),  # segment [0.5, 1) starts here
        (1.0, 0.5 + 0.6188 * 1.0 - 0.2796),
        (1.5, 0.75 + 0.6099 * 1.5 - 0.2635),
        (2.0, 1.0 + 0.5402 * 2.0 - 0.1194),
        (3.0, 3.0),  # [3, inf): 0.5 x + 0.5 |x|
        (-3.0, 0.0),
        (-1.0, -0.5 + 0.6188 * 1.0 - 0.2796),  # even correction: same segment as +1
    ],
)
def test_gelu_at_the_segment_ends(x, expected):
    # coefficients are FP16 (spacing 2^-11 in [0.5, 1)): tolerance 1e-3, well under the 0.01 jump at 0.5
    assert tn.gelu_approx(torch.tensor([x])).item() == pytest.approx(expected, abs=1e-3)


def test_numerics_name_is_checked(monkeypatch):
    monkeypatch.setenv("DEIT_TT_NUMERICS", "exact")
    with pytest.raises(UserFacingError, match="use one of ideal, tensix"):
        tn.resolve_numerics()
    monkeypatch.delenv("DEIT_TT_NUMERICS")
    assert tn.resolve_numerics() == "tensix"
    assert tn.resolve_numerics("ideal") == "ideal"


def test_changing_a_config_in_the_plan_changes_the_emulation(tiny_checkpoint):
    """QKV at HiFi2 instead of LoFi changes the tensix host's QKV output, and only under tensix numerics."""
    from deit_tt.backends.executor import HostExecutor
    from deit_tt.model.deit import TtDeiT
    from deit_tt.pipeline import build_pipeline
    from deit_tt.sharding import with_matmul_compute

    pipeline = build_pipeline(tiny_checkpoint, executor="host", dtype_policy="bf8", batch_size=1, numerics="tensix")
    hifi2 = with_matmul_compute(pipeline.plan, "qkv", math_fidelity=FIDELITY.HiFi2)
    assert hifi2.matmul_compute_for("qkv").math_fidelity == FIDELITY.HiFi2
    assert hifi2.matmul_compute_for("ff1").math_fidelity == FIDELITY.LoFi
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def qkv(plan, numerics):
        model = TtDeiT.from_parameters(pipeline.parameters, plan, HostExecutor(numerics=numerics), tiny_checkpoint.config.layer_norm_eps)
        return model(pixels, stages=ALL_STAGES).stages["layers.0.qkv"]

    assert not torch.equal(qkv(pipeline.plan, "tensix"), qkv(hifi2, "tensix"))
    assert torch.equal(qkv(pipeline.plan, "ideal"), qkv(hifi2, "ideal"))


def test_numerics_apply_to_the_host_only(tiny_checkpoint):
    from deit_tt.pipeline import build_pipeline

    with pytest.raises(UserFacingError, match="host executor only"):
        build_pipeline(tiny_checkpoint, executor="mock", dtype_policy="bf8", batch_size=1, numerics="tensix")
    pipeline = build_pipeline(tiny_checkpoint, executor="host", dtype_policy="bf8", batch_size=1, numerics="ideal")
    assert "numerics: ideal" in pipeline.banner()
