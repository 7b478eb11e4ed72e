"""Tables for teaching the Tensix numerics model (notebook 02): ideal vs tensix PCC per stage, and one
worked example per concept (math fidelity, math_approx_mode, fp32_dest_acc_en, packer L1 accumulation).

Every value comes from ``deit_tt.backends.tensix_numerics``; nothing here was measured on a card.
"""

from __future__ import annotations

import pandas as pd
import torch
import ttnn

from deit_tt.backends import tensix_numerics as tn
from deit_tt.backends.executor import HostExecutor
from deit_tt.analysis.host_memory import release_freed_memory
from deit_tt.model.deit import TtDeiT
from deit_tt.pipeline import build_pipeline
from deit_tt.analysis.reference import compare_in_lockstep

FIDELITIES = (ttnn.MathFidelity.LoFi, ttnn.MathFidelity.HiFi2, ttnn.MathFidelity.HiFi3, ttnn.MathFidelity.HiFi4)


def random_pixels(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def numerics_ladder(checkpoint, policies=("bf16", "bf8", "bf4"), pixels: torch.Tensor | None = None) -> pd.DataFrame:
    """PCC against Hugging Face fp32 of every stage, per policy, with ideal and with tensix numerics
    (columns policy, layer, stage, ideal, tensix, tensix - ideal)."""
    pixels = random_pixels(1) if pixels is None else pixels
    tables = []
    for policy in policies:
        reports = {}
        for numerics in tn.NUMERICS:
            with build_pipeline(checkpoint, executor="host", dtype_policy=policy, batch_size=pixels.shape[0], numerics=numerics) as pipeline:
                report, _ = compare_in_lockstep(pipeline, checkpoint.model, pixels)
            reports[numerics] = report.set_index(["layer", "stage"])["pcc"]
            del pipeline  # one policy's converted weights at a time
            release_freed_memory()
        table = pd.DataFrame(reports).reset_index()
        table.insert(0, "policy", policy)
        tables.append(table)
    ladder = pd.concat(tables, ignore_index=True)
    ladder["tensix - ideal"] = ladder["tensix"] - ladder["ideal"]
    return ladder


def logits_summary(ladder: pd.DataFrame) -> pd.DataFrame:
    """Per policy: logits PCC and the worst stage, ideal and tensix."""
    rows = []
    for policy, table in ladder.groupby("policy", sort=False):
        row = {"policy": policy}
        for numerics in tn.NUMERICS:
            worst = table.loc[table[numerics].idxmin()]
            row[f"{numerics} logits"] = float(table.loc[table["stage"] == "logits", numerics].iloc[0])
            row[f"{numerics} worst stage"] = f"{worst['layer']}:{worst['stage']} {worst[numerics]:.4f}"
        rows.append(row)
    return pd.DataFrame(rows)


def fidelity_example(weight: float = 1.9921875, activation: float = 1.9921875) -> pd.DataFrame:
    """One product at each math fidelity: what SrcA (the weight) and SrcB (the activation) keep, the phases'
    sum and its error. The defaults have all 7 bf16 mantissa bits set, so every dropped bit shows."""
    a = torch.tensor([[activation]], dtype=torch.bfloat16)
    b = torch.tensor([[weight]], dtype=torch.bfloat16)
    exact = a.float().item() * b.float().item()
    rows = []
    for phases, fidelity in enumerate(FIDELITIES, start=1):
        product = tn.fidelity_matmul(a, b, fidelity).item()
        rows.append({"fidelity": fidelity.name, "phases": phases, "product": product, "relative error": product / exact - 1})
    return pd.DataFrame(rows)


def approx_exp_example(points=(-4.0, -2.0, -1.0, -0.5, 0.0)) -> pd.DataFrame:
    """exp with and without ``math_approx_mode``: the SFPU's bit trick against the exact value."""
    x = torch.tensor(points)
    fast = tn.fast_exp(x)
    return pd.DataFrame({"x": x, "exp": torch.exp(x), "fast exp": fast, "relative error": fast / torch.exp(x) - 1})


def accumulation_example(values: int = 768, seed: int = 0) -> pd.DataFrame:
    """A K = ``values`` dot product (one output element, 32-wide blocks) with a bf16 or fp32 destination and
    packer L1 accumulation on or off, for a bfloat8_b output: the error of each against the float64 sum."""
    generator = torch.Generator().manual_seed(seed)
    in0 = torch.randn(32, values, generator=generator).bfloat16().float()
    in1 = (torch.randn(values, 32, generator=generator) * 0.02).bfloat16().float()
    exact = (in0.double() @ in1.double()).float()
    rows = []
    for fp32 in (False, True):
        for l1_acc in (True, False):
            config = ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi4, fp32_dest_acc_en=fp32, packer_l1_acc=l1_acc)
            result = tn.blocked_matmul(in0, in1, config, tn.TILE, ttnn.bfloat8_b)
            rows.append({"fp32_dest_acc_en": fp32, "packer_l1_acc": l1_acc, "relative L2 error": float((result - exact).norm() / exact.norm())})
    return pd.DataFrame(rows)


def plan_variant_pcc(pipeline, plan, pixels: torch.Tensor | None = None) -> pd.DataFrame:
    """Per-stage PCC against HF fp32 of ``pipeline``'s model (tensix numerics) under its own plan and under
    ``plan`` (e.g. ``with_matmul_compute(pipeline.plan, "qkv", math_fidelity=HiFi2)``)."""
    pixels = random_pixels(pipeline.batch_size) if pixels is None else pixels
    eps = pipeline.checkpoint.config.layer_norm_eps
    reports = {}
    for name, variant in (("plan", pipeline.plan), ("variant", plan)):
        model = TtDeiT.from_parameters(pipeline.parameters, variant, HostExecutor(numerics="tensix"), eps)
        report, _ = compare_in_lockstep(model, pipeline.checkpoint.model, pixels)
        reports[name] = report.set_index(["layer", "stage"])["pcc"]
    table = pd.DataFrame(reports).reset_index()
    table["variant - plan"] = table["variant"] - table["plan"]
    return table

