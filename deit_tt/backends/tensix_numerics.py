"""What a Tensix core computes, modelled on the host ("tensix" numerics).

The host executor evaluates ttnn's golden functions ("ideal" numerics: exact products, float32 sums,
exact exp / erf-GELU / LayerNorm, one rounding to the stored dtype). A Wormhole core differs where the
compute kernel config says so; this module reproduces that, op by op, from the config each op is given
(the plan's ``matmul_compute`` / ``softmax_compute`` / ``layernorm_compute`` and program configs).

Every fact is read from the kernel and LLK sources the ttnn 0.81.1 wheel ships (paths below are
relative to ``site-packages/ttnn/``; ``SFPU`` = ``tt_metal/hw/ckernels/wormhole_b0/metal/llk_api/llk_sfpu``)
and from tt-metal's ``tech_reports/matrix_engine/matrix_engine.md``.
Nothing here has been compared with a card yet. Everything is vectorised tensor arithmetic: float32, or
bfloat16 for what a Float16_b dest holds (see ``round_bf16``), with bfloat16 GEMMs for the K blocks. Where a
C compiler targets AVX512-BF16, the plan's linears and the softmax's exps run as compiled kernels instead
(``deit_tt.backends.native``), bit for bit the same (tests/backends/test_native.py).

Known simplifications, each said where it is made: destination-register rounding is applied per K block
(``in0_block_w`` tiles), not per 16-wide face; the approximate reciprocal and rsqrt are exact then rounded.
"""

from __future__ import annotations


import torch
import ttnn

from deit_tt.backends import native
from deit_tt.backends.blockfloat import round_to_dtype
from deit_tt import settings
from deit_tt.errors import UserFacingError
from deit_tt.sharding.dims import TILE

NUMERICS = ("ideal", "tensix")


def resolve_numerics(numerics: str | None = None) -> str:
    """``numerics``, else ``settings.NUMERICS``, else tensix; anything else is a one-line error."""
    value = settings.NUMERICS.get(numerics)
    if value not in NUMERICS:
        raise UserFacingError(f"unknown numerics {value!r} (from {'the argument' if numerics else '$' + settings.NUMERICS.variable}): use one of {', '.join(NUMERICS)}")
    return value


# -- storage ----------------------------------------------------------------------------------------


def round_bf16(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to bfloat16 (nearest even): a value held in a 16-bit dest or CB.

    It stays a bfloat16 tensor: torch evaluates an elementwise op on bfloat16 tensors in float32 and rounds
    the result to bfloat16 once, which is ``round_bf16`` of the float32 op, at half the memory traffic.
    """
    return x.to(torch.bfloat16)


def dest_round(x: torch.Tensor, config) -> torch.Tensor:
    """The destination register's storage: float32 with ``fp32_dest_acc_en``, else Float16_b
    (tech_reports/matrix_engine/matrix_engine.md, "Fp32 Dest Acc")."""
    return x.float() if config.fp32_dest_acc_en else round_bf16(x)


def in_dest(x: torch.Tensor, config) -> torch.Tensor:
    """``x`` loaded into dest: float32 with ``fp32_dest_acc_en`` (arithmetic on it stays float32), else as
    it is (a bfloat16 input's arithmetic rounds to bfloat16, as ``dest_round`` would)."""
    return x.float() if config.fp32_dest_acc_en else x


# -- matrix engine: math fidelity -------------------------------------------------------------------


def truncate_mantissa(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` keeping the hidden bit and the ``bits`` most significant mantissa bits, the rest dropped
    (towards zero): what the 5b x 7b multipliers read of a source register. bfloat16 stays bfloat16
    (7 mantissa bits: nothing to drop from 7 bits on), anything else becomes float32. A tensor marked by
    ``keep_truncations`` (a weight) is truncated once per ``bits``, not at every op."""
    if x.dtype == torch.bfloat16 and bits >= 7:
        return x
    return _kept(x, bits, lambda: _truncated(x, bits))


def _kept(x: torch.Tensor, key, make):
    """``make()``, computed once and kept under ``key`` for a tensor marked by ``keep_truncations``, afresh for any other."""
    kept = getattr(x, "truncations", None)
    if kept is None:
        return make()
    if key not in kept:
        kept[key] = make()
    return kept[key]


def keep_truncations(constant: torch.Tensor) -> torch.Tensor:
    """Mark ``constant`` (a tensor no op writes, such as a weight) so that ``truncate_mantissa`` keeps what it computes."""
    constant.truncations = {}
    return constant


def _truncated(x: torch.Tensor, bits: int) -> torch.Tensor:
    if x.dtype == torch.bfloat16:
        return x if bits >= 7 else (x.contiguous().view(torch.int16) & -(1 << (7 - bits))).view(torch.bfloat16)
    mask = -(1 << (23 - bits))  # ...1110000: sign, exponent and the top ``bits`` mantissa bits
    return (x.float().contiguous().view(torch.int32) & mask).view(torch.float32)


# Bits of each source register a phase reads (tech_reports/matrix_engine/matrix_engine.md, "Math Fidelity"):
# SrcA: hidden + 4 MSBs, then the next 4 bits; SrcB: hidden + 6 MSBs, then the next 6 bits. The registers are
# TF32 (10 mantissa bits), so SrcB's second half reaches at most bit 10.
SRCA_HIGH, SRCA_FULL = 4, 8
SRCB_HIGH, SRCB_FULL = 6, 10
# (SrcA bits, SrcB bits) of the one product each of these fidelities amounts to (see ``fidelity_operands``).
ONE_PRODUCT_BITS = {
    ttnn.MathFidelity.LoFi: (SRCA_HIGH, SRCB_HIGH),
    ttnn.MathFidelity.HiFi2: (SRCA_FULL, SRCB_HIGH),
    ttnn.MathFidelity.HiFi4: (SRCA_FULL, SRCB_FULL),
}


def fidelity_operands(src_a: torch.Tensor, src_b: torch.Tensor, fidelity) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (SrcA part, SrcB part) pairs whose products the phases of ``fidelity`` add up.

    LoFi runs A_hi x B_hi; HiFi2 adds A_lo x B_hi; HiFi3 adds A_hi x B_lo; HiFi4 adds A_lo x B_lo
    (matrix_engine.md). Pairs sharing a factor are merged (A_hi x B_hi + A_lo x B_hi = A x B_hi), so
    LoFi, HiFi2 and HiFi4 cost one product and HiFi3 two. Only the parts a fidelity reads are computed.
    """
    if fidelity in ONE_PRODUCT_BITS:
        a_bits, b_bits = ONE_PRODUCT_BITS[fidelity]
        return [(truncate_mantissa(src_a, a_bits), truncate_mantissa(src_b, b_bits))]
    if fidelity == ttnn.MathFidelity.HiFi3:
        b_high = truncate_mantissa(src_b, SRCB_HIGH)
        return [(truncate_mantissa(src_a, SRCA_FULL), b_high), (truncate_mantissa(src_a, SRCA_HIGH), truncate_mantissa(src_b, SRCB_FULL) - b_high)]
    raise ValueError(f"unknown math fidelity {fidelity}")


def fidelity_multiply(src_a: torch.Tensor, src_b: torch.Tensor, fidelity) -> torch.Tensor:
    """Elementwise product on the matrix engine (eltwise mul and the reduce scaler use the fidelity too:
    matrix_engine.md, "Eltwise" and "Reduction")."""
    return _sum(_float_product(a, b) for a, b in fidelity_operands(src_a, src_b, fidelity))


def dest_product(src_a: torch.Tensor, src_b: torch.Tensor, config) -> torch.Tensor:
    """``fidelity_multiply`` as dest holds it (``dest_round``). With a Float16_b dest and one phase of bfloat16
    parts this is torch's bfloat16 multiply: the float32 product of two bfloat16 values is exact, so its one
    rounding to bfloat16 is the same, in one pass."""
    pairs = fidelity_operands(src_a, src_b, config.math_fidelity)
    if not config.fp32_dest_acc_en and len(pairs) == 1 and all(part.dtype == torch.bfloat16 for part in pairs[0]):
        return pairs[0][0] * pairs[0][1]
    return dest_round(_sum(_float_product(a, b) for a, b in pairs), config)


def _float_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a x b`` in float32: the larger operand copied to float32 and multiplied in place. (Letting torch.mul
    convert a bfloat16 operand on the fly, one pass, takes torch's unvectorised mixed-dtype loop: 5.1 ms
    against 1.1 ms for 8x12x224x224 on 2 cores.)"""
    if a.shape != torch.broadcast_shapes(a.shape, b.shape):
        a, b = b, a
    return a.to(torch.float32, copy=True).mul_(b.float())


def fidelity_matmul(in0: torch.Tensor, in1: torch.Tensor, fidelity) -> torch.Tensor:
    """``in0 @ in1`` as the phases of ``fidelity`` compute it, summed in float32.

    A matmul unpacks in1 (weights, K^T, V) to SrcA and in0 (activations) to SrcB:
    tt_metal/tt-llk/tt_llk_wormhole_b0/llk_lib/llk_unpack_AB_matmul.h L56-57 ("in0/inA - loaded to SrcB,
    in1/inB - loaded to SrcA") and tt_metal/hw/ckernels/wormhole_b0/metal/llk_api/llk_unpack_AB_matmul_api.h L29-30.
    """
    return _block_product([(a.float(), b.float()) for a, b in fidelity_operands(in1, in0, fidelity)], slice(None))


def _sum(terms):
    terms = iter(terms)
    total = next(terms)
    for term in terms:
        total = total + term
    return total


# -- matmul: accumulation over K blocks -------------------------------------------------------------


def partials_round(x: torch.Tensor, config, output_dtype) -> torch.Tensor:
    """How a K block's partial sum is kept in L1 between blocks.

    bmm_large_block_zm_fused_bias_activation.cpp (ttnn/cpp/ttnn/operations/matmul/device/kernels/compute/)
    L427-450: every block but the last is packed to the partials CB, with ``pack_reconfig_l1_acc(1)`` from
    block 1 on when PACKER_L1_ACC is defined (the packer adds dest to what L1 holds), else reloaded into
    dest (``reload_from_cb_to_dst``, L100-115) before the next block. The partials CB holds float32 with
    ``fp32_dest_acc_en``, Float16_b with packer L1 accumulation, else the output format [inference from
    matrix_engine.md "Packer L1 acc": accumulate at higher precision, convert on the final pack].
    """
    if config.fp32_dest_acc_en:
        return x
    if config.packer_l1_acc:
        return round_bf16(x)
    return round_to_dtype(x, output_dtype).float()


def blocked_matmul(in0: torch.Tensor, in1: torch.Tensor, config, block_k: int, output_dtype, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``in0 @ in1 (+ bias)`` summed over K in blocks of ``block_k`` (= in0_block_w x 32) the way the kernel does:
    each block's product in dest (``dest_round``), the running sum kept between blocks by ``partials_round``, the
    bias added in dest after the last block. The result is in dest's format: bfloat16, or float32 with
    ``fp32_dest_acc_en``.

    Simplification: within a block the hardware adds each 16-wide face into dest, rounding it when dest is
    Float16_b; here a block's sum is rounded once (per-face rounding would cost K/16 passes over the output).
    A linear whose partials stay bfloat16 (the plan's: packer L1 accumulation) runs as one compiled kernel where
    it is built (``_compiled_linear``). Otherwise the operands are truncated once, and every block after the first
    is computed into one reused buffer and added to the running sum in place.
    """
    K = in0.shape[-1]
    blocks = K // block_k
    if blocks * block_k != K:
        raise ValueError(f"K ({K}) is not a multiple of the K block ({block_k})")
    bfloat16_dest = not config.fp32_dest_acc_en
    if bfloat16_dest and (config.packer_l1_acc or blocks == 1):
        output = _compiled_linear(in0, in1, config.math_fidelity, block_k, bias)
        if output is not None:
            return output
    pairs = fidelity_operands(in1, in0, config.math_fidelity)
    if not (bfloat16_dest and all(a.dtype == b.dtype == torch.bfloat16 for a, b in pairs)):
        pairs = [(a.float(), b.float()) for a, b in pairs]
    total = dest_round(_block_product(pairs, slice(0, block_k)), config)
    product = None
    for index in range(1, blocks):
        product = _block_product(pairs, slice(index * block_k, (index + 1) * block_k), out=product)
        in_dest = dest_round(product, config)  # the block's sum in dest (the same tensor when nothing rounds)
        if bfloat16_dest and not config.packer_l1_acc:  # the partials went through the output format
            total = round_bf16(partials_round(total, config, output_dtype))
        total.add_(in_dest)  # a bfloat16 add rounds the sum to nearest, as the Float16_b dest / L1 does
    if bias is not None:
        total = dest_round(partials_round(total, config, output_dtype) + bias.reshape(-1), config)
    return total


def _compiled_linear(in0: torch.Tensor, in1: torch.Tensor, fidelity, block_k: int, bias: torch.Tensor | None) -> torch.Tensor | None:
    """``native.blocked_linear``: bfloat16 activations times a bfloat16 weight [K, N] at a one-product fidelity, every
    block's product, running sum and the bias rounded to bfloat16 (what ``blocked_matmul``'s loop computes for a
    Float16_b dest with bfloat16 partials, in one pass over the output). None where it does not apply."""
    operands = (in0, in1) if bias is None else (in0, in1, bias)
    if fidelity not in ONE_PRODUCT_BITS or in1.dim() != 2 or any(t.dtype != torch.bfloat16 for t in operands) or block_k > native.GEMM_K_IN_ORDER:
        return None
    if not native.linear_fits(in0.numel() // in0.shape[-1], *in1.shape, block_k):
        return None
    a_bits, b_bits = ONE_PRODUCT_BITS[fidelity]
    return native.blocked_linear(truncate_mantissa(in0, b_bits), _weight_pairs(in1, a_bits), bias, block_k)


def _weight_pairs(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` as SrcA reads it (``bits`` mantissa bits), packed for ``native.blocked_linear``: kept with a
    constant's truncations (``keep_truncations``) in place of the truncated weight itself."""
    return _kept(weight, ("pairs", bits), lambda: native.weight_pairs(_truncated(weight, bits)))


def _block_product(pairs, k: slice, out: torch.Tensor | None = None) -> torch.Tensor:
    """One K block's sum of the fidelity phases' products (into ``out`` when given and the product is one GEMM).

    bfloat16 operands (every fidelity's parts of bfloat16 / bfloat8_b / bfloat4_b values are exact in bfloat16)
    go through one bfloat16 GEMM, the phases side by side along K: it accumulates in float32 and rounds the
    block's sum to bfloat16 once, as a Float16_b dest holds it (up to summation order; on a CPU without a
    native bfloat16 GEMM the host executor's ``Float32Products`` computes it in float32). Float32 operands
    are multiplied in float32 and the block's sum stays float32.
    """
    if len(pairs) == 1:
        a, b = pairs[0]
        return torch.matmul(b[..., k], a[..., k, :], out=out)
    if pairs[0][0].dtype != torch.bfloat16:
        return _sum(b[..., k] @ a[..., k, :] for a, b in pairs)
    return torch.matmul(torch.cat([b[..., k] for _, b in pairs], dim=-1), torch.cat([a[..., k, :] for a, _ in pairs], dim=-2), out=out)


# -- SFPU: GELU and exp -----------------------------------------------------------------------------

# ckernel_sfpu_gelu.h (SFPU/) L203-218, gelu_init<APPROXIMATION_MODE=true>: the 6-entry SFPLUTFP32 table, FP16
# slopes and intercepts for |x| in [0,0.5) [0.5,1) [1,1.5) [1.5,2) [2,3) [3,inf) (TABLE1 breakpoints, named in
# ckernel_sfpu_tanh.h L219).
GELU_BREAKPOINTS = (0.5, 1.0, 1.5, 2.0, 3.0)
GELU_SLOPES = (0.1928, 0.4939, 0.6188, 0.6099, 0.5402, 0.5)
GELU_INTERCEPTS = (-0.00010443, -0.1604, -0.2796, -0.2635, -0.1194, 0.0)


def gelu_approx(x: torch.Tensor) -> torch.Tensor:
    """The fused approximate GELU: 0.5 x + (slope |x| + intercept) of |x|'s segment.

    ckernel_sfpu_gelu.h (SFPU/) L226-246, calculate_gelu_appx: ``half_in + lut(in, ..., LutSign::Update)``
    (Update: the table's result keeps its own sign, so the correction is even in x).
    """
    x = x.float()
    magnitude = x.abs()
    # segment index: floor(2|x|) for |x| < 2 (0..3), 4 on [2, 3), 5 from 3 on (the breakpoints above)
    segment = (magnitude * 2).floor_().clamp_(max=4).to(torch.int64)
    segment += magnitude >= GELU_BREAKPOINTS[-1]
    slopes = torch.take(torch.tensor(GELU_SLOPES).half().float(), segment)
    intercepts = torch.take(torch.tensor(GELU_INTERCEPTS).half().float(), segment)
    return slopes.mul_(magnitude).add_(intercepts).add_(x, alpha=0.5)


# ckernel_sfpu_exp.h (SFPU/) L692-738, exp_init<APPROXIMATION_MODE, ..., CLAMP_NEGATIVE=true>.
EXP_THRESHOLD = -88.5
EXP_A = 369.329925537109375  # 2^8 / ln 2 as the float32 the kernel stores (0x43b8aa3b)
EXP_B_MINUS_C = 32500.818359375  # 127 * 2^8 minus Schraudolph's correction


def fast_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with ``math_approx_mode``: Schraudolph's bit trick at 8 mantissa bits.

    ckernel_sfpu_exp.h (SFPU/) L484-495 (the sequence the load macros of L497-856 run): clamp to >= -88.5
    (SWAP with LREG14), ``i = A x + (B - C)`` (MAD), round to an unsigned 16-bit integer (SFP_STOCH_RND
    FP32_TO_UINT16, saturating), shift left by 15: the bits of the float result. The MAD is two float32
    roundings here, not one: ``i`` can differ only where A x + (B - C) is within 0.002 of a half-integer.
    Rounding to an integer in [0, 65535] is done by adding 2**23 (the float32 whose bits are 0x4B000000 + the
    integer, rounded half to even); shifted left by 15 the 0x4B000000 falls off the 32 bits, leaving the integer's.
    Clamping before rounding equals clamping after: the bounds are integers.
    """
    mad = x.to(torch.float32, copy=True).clamp_(min=EXP_THRESHOLD).mul_(EXP_A).add_(EXP_B_MINUS_C)
    integer_bits = mad.clamp_(0, 65535).add_(2.0**23).view(torch.int32)
    return integer_bits.bitwise_left_shift_(15).view(torch.float32)


# -- ops, with the golden functions' signatures -----------------------------------------------------


def _block_k(program_config, K: int) -> int:
    """K elements per block: ``in0_block_w`` tiles; a matmul without a program config (ttnn picks one) is
    modelled as one block."""
    in0_block_w = getattr(program_config, "in0_block_w", None)
    return in0_block_w * TILE if in0_block_w else K


def matmul(input_tensor_a, input_tensor_b, *, bias=None, program_config=None, compute_kernel_config, dtype, **_):
    """ttnn.matmul / ttnn.linear: fidelity, blocked accumulation, bias added in dest, fused activation.

    bmm_large_block_zm_fused_bias_activation.cpp L500-540: with FUSE_BIAS the last block goes to the partials
    too, then ``add_bcast_rows`` adds the bias in dest and the SFPU activation runs on dest before the pack.
    """
    config = compute_kernel_config
    in0, in1 = input_tensor_a, input_tensor_b
    output = blocked_matmul(in0, in1, config, _block_k(program_config, in0.shape[-1]), dtype, bias)
    activation = getattr(program_config, "fused_activation", None)
    if activation is not None:
        if activation.op_type != ttnn.UnaryOpType.GELU:
            raise NotImplementedError(f"tensix numerics model no fused {activation.op_type}")
        output = dest_round(gelu_approx(output) if config.math_approx_mode else torch.nn.functional.gelu(output), config)
    return output


def reduce_sum(x: torch.Tensor, scaler: float, config, keepdim: bool = True) -> torch.Tensor:
    """A row reduce-sum on the matrix engine, input in SrcA times a scaler tile in SrcB (bf16): each 32-wide
    tile's sum lands in dest, tiles accumulate in dest (``dest_round`` after each)."""
    scaler = torch.tensor(scaler).to(torch.bfloat16)
    tile_sums = fidelity_multiply(x, scaler, config.math_fidelity).unflatten(-1, (-1, TILE)).sum(dim=-1)
    total = dest_round(tile_sums[..., 0], config)
    for tile in range(1, tile_sums.shape[-1]):
        total = dest_round(total + tile_sums[..., tile], config)
    return total.unsqueeze(-1) if keepdim else total


def softmax(input_tensor, scale=None, mask=None, *, compute_kernel_config, **_):
    """ttnn.scale_mask_softmax_in_place with ``numeric_stable=True``.

    ttnn/cpp/ttnn/operations/normalization/softmax/device/kernels/attention/compute/softmax_sharded.cpp:
    scale and mask applied in dest (L95-120), row max, ``exp(x - max)`` with ``Exp<EXP_APPROX>`` (L126-147;
    EXP_APPROX is ``math_approx_mode``), exps packed to a CB (bf16 unless fp32 dest), SUM reduce with the
    reciprocal (L151-160), then exps x 1/sum in dest (``ckl::mul``, L176-183), packed from there. The reciprocal
    is modelled exact, then rounded.
    """
    config = compute_kernel_config
    exps = _exps(input_tensor, scale, mask, config)
    recip = dest_round(1.0 / reduce_sum(exps, 1.0, config), config)
    return dest_product(exps, recip, config)


def _exps(input_tensor, scale, mask, config) -> torch.Tensor:
    """The softmax's exps as packed to their CB: in one compiled pass (``native.softmax_exps``) for the plan's
    config (Float16_b dest, approximate exp) where it is built, else with torch ops."""
    if not config.fp32_dest_acc_en and config.math_approx_mode:
        exps = native.softmax_exps(input_tensor, scale, mask, (EXP_THRESHOLD, EXP_A, EXP_B_MINUS_C))
        if exps is not None:
            return exps
    x = in_dest(input_tensor, config)
    if scale is not None:
        x = dest_round(x * scale, config)
    if mask is not None:
        x = dest_round(x + mask, config)
    shifted = dest_round(x - x.amax(dim=-1, keepdim=True), config)
    return dest_round(fast_exp(shifted) if config.math_approx_mode else torch.exp(shifted), config)


def layer_norm(input_tensor, *, epsilon=1e-12, weight=None, bias=None, compute_kernel_config, **_):
    """ttnn.layer_norm, sharded: ttnn/cpp/ttnn/operations/normalization/layernorm/device/kernels/compute/
    layernorm_sharded.cpp: E[x] by a reduce with the 1/W scaler, x - E[x], its square, Var by the same reduce,
    + eps, ``rsqrt_tile`` (L522-523; modelled exact, then rounded), the normalised x, x gamma, + beta. Each
    intermediate is packed to a CB in bf16 unless fp32 dest; the multiplies run at the config's fidelity.
    """
    config = compute_kernel_config
    x = in_dest(input_tensor, config)
    inverse_width = 1.0 / x.shape[-1]
    mean = reduce_sum(x, inverse_width, config)
    centred = dest_round(x - mean, config)
    variance = reduce_sum(dest_product(centred, centred, config), inverse_width, config)
    rstd = dest_round(torch.rsqrt(dest_round(variance.float() + epsilon, config)), config)
    output = dest_product(centred, rstd, config)
    if weight is not None:
        output = dest_product(output, weight.reshape(-1), config)
    if bias is not None:
        output = dest_round(output + bias.reshape(-1), config)  # + beta in dest, packed from there
    return output


# The ops tensix numerics replaces; every other op keeps its golden function.
TENSIX_OPS = {
    ttnn.linear: matmul,
    ttnn.matmul: matmul,
    ttnn.scale_mask_softmax_in_place: softmax,
    ttnn.layer_norm: layer_norm,
}
