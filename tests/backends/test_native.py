"""The compiled tensix linear and softmax exps (``deit_tt.backends.native``) against the torch paths they replace.

``tensix_numerics.blocked_matmul`` sums a linear's K blocks with one bfloat16 GEMM and one bfloat16 add per block
where the kernel is not built; where it is, the kernel must give the same bits (NaN where torch has NaN, whatever
its payload). The block-float rounding compiled beside it is checked in test_blockfloat.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import ttnn

from deit_tt.backends import native
from deit_tt.backends import tensix_numerics as tn

pytestmark = pytest.mark.skipif(not native.tensix_kernels_available(), reason="the compiled tensix kernels need a C compiler targeting AVX512-BF16")

# bfloat16 bit patterns where rounding or special values decide: NaN, +-inf, the largest finite, subnormals, -0, 1
# and a tie for it (1 + 2^-8), values 2^24 apart.
EDGES = [0x7FC0, 0x7F80, 0xFF80, 0x7F7F, 0xFF7F, 0x0001, 0x8001, 0x8000, 0x3F80, 0x3B80, 0x4B80, 0x3380]


def config(fidelity=ttnn.MathFidelity.LoFi):
    return ttnn.WormholeComputeKernelConfig(math_fidelity=fidelity, math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=True)


def with_edges(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    spots = torch.randint(0, tensor.numel(), (2 * len(EDGES),), generator=generator)
    tensor.view(-1)[spots] = torch.tensor(EDGES, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).repeat(2)
    return tensor


def by_torch(in0, in1, cfg, block_k, bias, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(native, "tensix_kernels_available", lambda: False)
        return tn.blocked_matmul(in0, in1, cfg, block_k, ttnn.bfloat8_b, bias)


def assert_same_bits(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype == torch.bfloat16
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan)
    assert torch.equal(got.view(torch.int16)[~nan], expected.view(torch.int16)[~nan])


@pytest.mark.parametrize("fidelity", [ttnn.MathFidelity.LoFi, ttnn.MathFidelity.HiFi2, ttnn.MathFidelity.HiFi4])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("shape,block_k", [((2, 6, 64), 64), ((3, 40, 256), 32), ((448, 768), 96), ((4, 3072), 384)])
def test_compiled_linear_gives_the_torch_paths_bits(monkeypatch, fidelity, with_bias, shape, block_k):
    generator = torch.Generator().manual_seed(0)
    in0 = with_edges(torch.randn(shape, generator=generator).bfloat16(), generator)
    in1 = with_edges((0.05 * torch.randn(shape[-1], 192, generator=generator)).bfloat16(), generator)
    bias = torch.randn(192, generator=generator).bfloat16() if with_bias else None
    assert tn._compiled_linear(in0, in1, fidelity, block_k, bias) is not None  # the kernel ran
    assert_same_bits(tn.blocked_matmul(in0, in1, config(fidelity), block_k, ttnn.bfloat8_b, bias), by_torch(in0, in1, config(fidelity), block_k, bias, monkeypatch))


def test_each_block_and_each_sum_is_rounded_to_bfloat16():
    # K = 96 in three blocks of 32 with sums 256, 0.75, 0.75: bfloat16's spacing at 256 is 2, so 256 + 0.75 rounds
    # back to 256, twice; one block of 96 rounds 257.5 once, to 258.
    in0 = torch.ones(4, 96, dtype=torch.bfloat16)
    in1 = torch.zeros(96, 96)
    in1[:32], in1[32:35], in1[64:67] = 8.0, 0.25, 0.25
    pairs = native.weight_pairs(in1.bfloat16())
    assert native.blocked_linear(in0, pairs, None, 32).unique().tolist() == [256.0]
    assert native.blocked_linear(in0, pairs, None, 96).unique().tolist() == [258.0]


def test_shapes_the_kernel_does_not_take_keep_the_torch_path(monkeypatch):
    in0 = torch.randn(6, 64).bfloat16()  # 6 rows: not whole tiles of 4
    in1 = torch.randn(64, 96).bfloat16()
    assert not native.linear_fits(6, 64, 96, 32)
    assert tn._compiled_linear(in0, in1, ttnn.MathFidelity.LoFi, 32, None) is None
    assert_same_bits(tn.blocked_matmul(in0, in1, config(), 32, ttnn.bfloat8_b), by_torch(in0, in1, config(), 32, None, monkeypatch))
    with pytest.raises(ValueError, match="does not take 6 x 64 @ 64 x 96"):
        native.blocked_linear(in0, native.weight_pairs(in1), None, 32)


def test_a_weight_is_packed_once_in_place_of_its_truncation():
    weight = tn.keep_truncations(torch.randn(64, 96).bfloat16())
    first = tn._weight_pairs(weight, tn.SRCA_HIGH)
    assert tn._weight_pairs(weight, tn.SRCA_HIGH) is first
    assert list(weight.truncations) == [("pairs", tn.SRCA_HIGH)]
    assert torch.equal(first, native.weight_pairs(tn.truncate_mantissa(weight.clone(), tn.SRCA_HIGH)))


def exps_by_torch(x, scale, mask, cfg, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(native, "tensix_kernels_available", lambda: False)
        return tn._exps(x, scale, mask, cfg)


SOFTMAX = ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi4, math_approx_mode=True, fp32_dest_acc_en=False, packer_l1_acc=False)
# finite edges: the largest bfloat16, subnormals, -0, 1 and a tie for it, values far apart; and the masked value
FINITE_EDGES = [0x7F7F, 0xFF7F, 0x0001, 0x8001, 0x8000, 0x3F80, 0x3B80, 0x4B80, 0x3380, 0xC61C]


@pytest.mark.parametrize("scale", [None, 0.125])
@pytest.mark.parametrize("shape,mask_shape", [((2, 3, 32, 224), (2, 1, 1, 224)), ((2, 3, 32, 224), (1, 1, 1, 224)), ((5, 64), None)])
def test_softmax_exps_give_the_torch_paths_bits(monkeypatch, shape, mask_shape, scale):
    generator = torch.Generator().manual_seed(0)
    x = (8 * torch.randn(shape, generator=generator)).bfloat16()
    spots = torch.randint(0, x.numel(), (3 * len(FINITE_EDGES),), generator=generator)
    x.view(-1)[spots] = torch.tensor(FINITE_EDGES, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).repeat(3)
    mask = None
    if mask_shape is not None:
        mask = torch.zeros(mask_shape)
        mask[..., 198:] = -1.0e4
        mask = mask.bfloat16()
    compiled = native.softmax_exps(x, scale, mask, (tn.EXP_THRESHOLD, tn.EXP_A, tn.EXP_B_MINUS_C))
    assert compiled is not None
    assert_same_bits(compiled, exps_by_torch(x, scale, mask, SOFTMAX, monkeypatch))


def test_a_mask_that_does_not_broadcast_by_rows_keeps_the_torch_path():
    x = torch.randn(2, 3, 32, 224).bfloat16()
    assert native.softmax_exps(x, None, torch.zeros(2, 3, 1, 224).bfloat16(), (tn.EXP_THRESHOLD, tn.EXP_A, tn.EXP_B_MINUS_C)) is None


def test_the_library_is_compiled_once_and_then_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(native.settings.CACHE.variable, str(tmp_path))
    monkeypatch.setattr(native, "_STATE", {})
    assert native.available()
    (built,) = (tmp_path / "native").glob("native-*.so")
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setattr(native.subprocess, "run", lambda *args, **kwargs: pytest.fail("compiled again"))
    assert native.tensix_kernels_available()  # loaded from the cache
    monkeypatch.undo()
    # a damaged library (in a new process: this one keeps the library it loaded) is built again and replaced
    damaged = tmp_path / "damaged"
    damaged.write_bytes(b"not a library")
    damaged.replace(built)
    check = "from deit_tt.backends import native; print(native.tensix_kernels_available())"
    environment = {**os.environ, native.settings.CACHE.variable: str(tmp_path)}
    assert subprocess.run([sys.executable, "-c", check], env=environment, capture_output=True, text=True, check=True).stdout.strip() == "True"
    assert built.stat().st_size > 10_000


def test_the_kernels_are_refused_where_torch_sums_in_another_order(monkeypatch):
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setattr(native.torch.Tensor, "__matmul__", lambda a, b: torch.matmul(a.float(), b.float()).mul_(1.0001).bfloat16())
    assert not native.tensix_kernels_available()
    monkeypatch.undo()
    assert native.tensix_kernels_available()
