"""Intermediates of the Hugging Face model itself, captured with forward hooks (no copy of HF code).

The keys match ``TtDeiT``'s captures so the two can be compared stage by stage:
embeddings; per layer ln1, qkv ([Q | K | V]), attention_probs, context, attention_residual, ln2,
ff1 (after GELU), output (after the MLP residual); final_ln; cls/distillation/averaged logits.

``capture_reference`` keeps the stages it is asked for; ``compare_with_reference`` keeps none: each stage
is compared with the ttnn model's capture as its hook fires and then dropped, so a whole-model report on
DeiT-base at batch 8 holds one stage of float32 reference at a time instead of about 0.9 GB.
``compare_in_lockstep`` holds neither side's captures: the two models run side by side, stage by stage
(the ttnn side's whole-model captures of DeiT-base at batch 8 are another 0.5 GB).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Collection

import pandas as pd
import torch

from deit_tt.analysis.pcc import pcc_report_from_rows, pcc_row, split_stage_name
from deit_tt.model.vocabulary import ALL_STAGES

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


def compare_in_lockstep(
    model: Callable[..., object], hf_model, pixel_values: torch.Tensor, keep: Collection[str] = ()
) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """The report ``compare_with_reference`` gives, with no model's captures held: ``model(pixel_values, ALL_STAGES, record)``
    (a ``DeiTPipeline`` or ``TtDeiT``) runs once, handing each stage to ``record(name, tensor)``, while Hugging Face
    runs on the same pixels in a second thread and waits at each stage until the ttnn model asks for it. Each
    pair is compared and dropped. Returns the report and the ttnn captures of the stages named in ``keep``.

    The two forwards order a layer's stages slightly differently (Hugging Face's context precedes its attention
    probabilities), so stages the reference produced before they were asked for wait in ``ahead``: a few at most.
    """
    handover: queue.Queue = queue.Queue(maxsize=1)
    cancelled = threading.Event()
    finished = False  # the reference thread's last message has been received (only this thread reads the queue)
    ahead: dict[str, torch.Tensor] = {}
    rows, kept = [], {}

    def hand_over(name: str, value: torch.Tensor) -> None:
        if cancelled.is_set():
            raise _Cancelled
        handover.put((name, value))

    def run_hugging_face() -> None:
        try:
            run_reference(hf_model, pixel_values, hand_over)
            handover.put((_FINISHED, None))
        except BaseException as error:  # handed to the caller's thread, which raises it
            handover.put((_FINISHED, error))

    def receive() -> None:
        nonlocal finished
        name, value = handover.get()
        if name is _FINISHED:
            finished = True
            if value is not None and not isinstance(value, _Cancelled):
                raise value
            return
        ahead[name] = value

    def record(name: str, value: torch.Tensor) -> None:
        while name not in ahead:
            if finished:
                raise ValueError(f"the Hugging Face model has no stage {name!r} to compare with")
            receive()
        rows.append(pcc_row(name, value, ahead.pop(name)))
        if split_stage_name(name)[1] in keep:
            kept[name] = value

    thread = threading.Thread(target=run_hugging_face, name="hugging-face-reference", daemon=True)
    thread.start()
    try:
        model(pixel_values, ALL_STAGES, record)
    finally:
        cancelled.set()
        while not finished:  # let the reference thread end; what it still hands over is dropped
            receive()
            ahead.clear()
        thread.join()
    return pcc_report_from_rows(rows), kept


_FINISHED = object()


class _Cancelled(Exception):
    """Stops the reference thread's forward once the ttnn model has finished or failed."""


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
