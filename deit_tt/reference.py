"""Intermediates of the Hugging Face model itself, captured with forward hooks (no copy of HF code).

The keys match ``TtDeiT``'s captures so the two can be compared stage by stage:
embeddings; per layer ln1, qkv ([Q | K | V]), attention_probs, context, attention_residual, ln2,
ff1 (after GELU), output (after the MLP residual); final_ln; cls/distillation/averaged logits.
"""

from __future__ import annotations

import contextlib

import torch


def capture_reference(hf_model, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``hf_model`` (eager attention) once and return float32 captures keyed like the ttnn model's."""
    captures: dict[str, torch.Tensor] = {}
    deit = hf_model.deit
    with contextlib.ExitStack() as stack:

        def output_hook(name):
            def hook(module, args, output):
                captures[name] = (output[0] if isinstance(output, tuple) else output).detach().float()

            return hook

        def input_hook(name):
            def hook(module, args):
                captures[name] = args[0].detach().float()

            return hook

        def register(module, name, on_input=False):
            handle = module.register_forward_pre_hook(input_hook(name)) if on_input else module.register_forward_hook(output_hook(name))
            stack.callback(handle.remove)

        register(deit.embeddings, "embeddings")
        for index, layer in enumerate(deit.layers):
            prefix = f"layers.{index}."
            register(layer.layernorm_before, prefix + "ln1")
            for projection in ("q_proj", "k_proj", "v_proj"):
                register(getattr(layer.attention, projection), prefix + projection)
            register(layer.attention.o_proj, prefix + "context", on_input=True)
            register(layer.layernorm_after, prefix + "attention_residual", on_input=True)
            register(layer.layernorm_after, prefix + "ln2")
            register(layer.mlp.fc2, prefix + "ff1", on_input=True)
            register(layer, prefix + "output")
        register(deit.layernorm, "final_ln")

        with torch.no_grad():
            outputs = hf_model(pixel_values=pixel_values.to(next(hf_model.parameters()).dtype), output_attentions=True)

    for index, attentions in enumerate(outputs.attentions):
        prefix = f"layers.{index}."
        captures[prefix + "qkv"] = torch.cat([captures.pop(prefix + p) for p in ("q_proj", "k_proj", "v_proj")], dim=-1)
        captures[prefix + "attention_probs"] = attentions.detach().float()
    if hasattr(outputs, "cls_logits"):
        captures["cls_logits"] = outputs.cls_logits.detach().float()
        captures["distillation_logits"] = outputs.distillation_logits.detach().float()
    else:
        captures["cls_logits"] = outputs.logits.detach().float()
    captures["logits"] = outputs.logits.detach().float()
    return captures
