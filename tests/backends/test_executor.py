"""The host executor's float32 matrix products against the golden functions' bfloat16 ones.

Both accumulate exact products in float32 and round once, so they differ only where the two
summation orders land on different sides of a bfloat16 rounding boundary. This is measured here:
per product, per captured stage of the model, and on the logits.
"""

from __future__ import annotations

import torch
import ttnn

from deit_tt.backends.executor import HostExecutor
from deit_tt.data.images import load_image
from deit_tt.analysis.pcc import pcc
from deit_tt.data.preprocessing import preprocess
from deit_tt.model.vocabulary import ALL_STAGES
from test_classify import shallow_pipeline
from test_images import DATA_IMAGES


def bfloat16_normal(shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))).to(torch.bfloat16)


def test_a_product_differs_from_the_golden_one_only_by_float32_summation_order():
    a, b = bfloat16_normal((2, 224, 192), seed=0), bfloat16_normal((192, 576), seed=1, scale=0.05)
    golden = HostExecutor(float32_products=False, numerics="ideal").run(ttnn.matmul, a, b, dtype=ttnn.bfloat16)
    fast = HostExecutor(float32_products=True, numerics="ideal").run(ttnn.matmul, a, b, dtype=ttnn.bfloat16)
    differ = golden != fast
    assert differ.float().mean() < 1e-3
    # Most differences are neighbouring bfloat16 values (a sum crossing one rounding boundary)...
    steps = (golden[differ].view(torch.int16).int() - fast[differ].view(torch.int16).int()).abs()
    assert (steps == 1).float().mean() > 0.5
    # ...and every one is within what two float32 summation orders can disagree by: K * 2**-24 * sum |a_i b_i|
    # each (the classic bound on recursive summation), plus the bfloat16 step of the result.
    K = a.shape[-1]
    magnitude = (a.double().abs() @ b.double().abs())[differ]
    step = torch.maximum(golden[differ].abs(), fast[differ].abs()).double() * 2.0**-7
    assert bool(((golden[differ].double() - fast[differ].double()).abs() <= 2 * K * 2.0**-24 * magnitude + step).all())


def test_model_outputs_with_float32_products_match_the_golden_products():
    """On the AVX2 machine this was written on, every stage agrees bit for bit (bfloat8_b rounding absorbs
    the rare one-step differences of the products); the bounds leave room for other kernels' orders."""
    pipeline = shallow_pipeline(1)
    pixels = preprocess([load_image(DATA_IMAGES / "cat_chelsea.jpg")])
    executor = pipeline.model.executor
    previous = executor.float32_products
    outputs = {}
    try:
        for float32_products in (False, True):
            executor.float32_products = float32_products
            outputs[float32_products] = pipeline(pixels, stages=ALL_STAGES)
    finally:
        executor.float32_products = previous
    golden, fast = outputs[False], outputs[True]
    for name, value in golden.stages.items():
        differing = (value != fast.stages[name]).float().mean().item()
        assert differing < 1e-3, f"{name}: {differing:.3%} of the values differ"
    assert pcc(golden.logits[0], fast.logits[0]) > 0.99999
    assert golden.logits[0].topk(5).indices.tolist() == fast.logits[0].topk(5).indices.tolist()
