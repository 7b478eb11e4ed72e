"""Intermediates of the Hugging Face model itself, captured with forward hooks (no copy of HF code).

The keys match ``TtDeiT``'s captures so the two can be compared stage by stage:
embeddings; per layer ln1, qkv ([Q | K | V]), attention_probs, context, attention_residual, ln2,
ff1 (after GELU), output (after the MLP residual); final_ln; cls/distillation/averaged logits.

``capture_reference`` keeps the stages it is asked for; ``compare_with_reference`` keeps none: each stage
is compared with the ttnn model's capture as its hook fires and then dropped, so a whole-model report on
DeiT-base at batch 8 holds one stage of float32 reference at a time instead of about 0.9 GB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection

import pandas as pd
import torch

from deit_tt.pcc import pcc_report_from_rows, pcc_row, split_stage_name

_QKV_PARTS = ("q_proj", "k_proj", "v_proj")


def capture_reference(hf_model, pixel_values: torch.Tensor, stages: Collection[str] | None = None) -> dict[str, torch.Tensor]:
    """Run ``hf_model`` (eager attention) once and return float32 captures keyed like the ttnn model's:
    every stage, or only those whose stage name (``attention_probs``, ``logits``, ...) is in ``stages``."""
    captures: dict[str, torch.Tensor] = {}

    def keep(name: str, value: torch.Tensor) -> None:
        if stages is None or split_stage_name(name)[1] in stages:
            captures[name] = value

    run_reference(hf_model, pixel_values, keep)
    return captures


def compare_with_reference(captures: dict[str, torch.Tensor], hf_model, pixel_values: torch.Tensor) -> pd.DataFrame:
    """``pcc_report(captures, capture_reference(hf_model, pixel_values))``, holding one reference stage at a time."""
    rows = {}

    def compare(name: str, expected: torch.Tensor) -> None:
        if name in captures:
            rows[name] = pcc_row(name, captures[name], expected)

    run_reference(hf_model, pixel_values, compare)
    return pcc_report_from_rows([rows[name] for name in captures if name in rows])  # in the captures' order


def run_reference(hf_model, pixel_values: torch.Tensor, consume: Callable[[str, torch.Tensor], None]) -> None:
    """Run ``hf_model`` once and pass each stage to ``consume(name, float32 tensor)`` in forward order."""
    deit = hf_model.deit
    pending: dict[str, torch.Tensor] = {}  # Q and K of a layer, until its V arrives

    def emit(name: str, value: torch.Tensor) -> None:
        prefix, _, part = name.rpartition(".")
        if part not in _QKV_PARTS:
            consume(name, value.detach().float())
            return
        pending[part] = value
        if part == _QKV_PARTS[-1]:
            consume(f"{prefix}.qkv", torch.cat([pending.pop(p) for p in _QKV_PARTS], dim=-1).detach().float())

    with contextlib.ExitStack() as stack:

        def register(module, name, on_input=False, pick=lambda output: output[0] if isinstance(output, tuple) else output):
            if on_input:
                handle = module.register_forward_pre_hook(lambda module, args: emit(name, args[0]))
            else:
                handle = module.register_forward_hook(lambda module, args, output: emit(name, pick(output)))
            stack.callback(handle.remove)

        register(deit.embeddings, "embeddings")
        for index, layer in enumerate(deit.layers):
            prefix = f"layers.{index}."
            register(layer.layernorm_before, prefix + "ln1")
            for projection in _QKV_PARTS:
                register(getattr(layer.attention, projection), prefix + projection)
            register(layer.attention, prefix + "attention_probs", pick=lambda output: output[1])  # eager attention's weights
            register(layer.attention.o_proj, prefix + "context", on_input=True)
            register(layer.layernorm_after, prefix + "attention_residual", on_input=True)
            register(layer.layernorm_after, prefix + "ln2")
            register(layer.mlp.fc2, prefix + "ff1", on_input=True)
            register(layer, prefix + "output")
        register(deit.layernorm, "final_ln")

        with torch.no_grad():
            outputs = hf_model(pixel_values=pixel_values.to(next(hf_model.parameters()).dtype))

    if hasattr(outputs, "cls_logits"):
        emit("cls_logits", outputs.cls_logits)
        emit("distillation_logits", outputs.distillation_logits)
    else:
        emit("cls_logits", outputs.logits)
    emit("logits", outputs.logits)
