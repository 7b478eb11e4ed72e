"""The names the forward, the converter, the reference capture and the reports share: stages and classifier heads."""

from __future__ import annotations

from dataclasses import dataclass

# Stages the forward can hand out, in the order it computes them. A layer's stages are named "layers.{i}.{stage}".
EMBEDDINGS = "embeddings"
LAYER_STAGES = ("ln1", "qkv", "attention_probs", "context", "attention_residual", "ln2", "ff1", "output")
FINAL_LAYERNORM = "final_ln"
LOGIT_STAGES = ("cls_logits", "distillation_logits", "logits")
# Every kind of stage, for ``TtDeiT(pixels, stages=ALL_STAGES)``.
ALL_STAGES = frozenset((EMBEDDINGS, *LAYER_STAGES, FINAL_LAYERNORM, *LOGIT_STAGES))


def layer_stage(index: int, stage: str) -> str:
    return f"layers.{index}.{stage}"


@dataclass(frozen=True)
class Head:
    """A classifier head: its Hugging Face module name, the token it reads, the stage its logits are captured as."""

    name: str
    token: int
    stage: str


CLS_HEAD = Head("cls_classifier", 0, "cls_logits")
DISTILLATION_HEAD = Head("distillation_classifier", 1, "distillation_logits")
PLAIN_HEAD = Head("classifier", 0, "cls_logits")  # DeiTForImageClassification: one head on the CLS token

# The heads of each architecture, in the order their weights are concatenated into one classifier matmul.
DISTILLED_HEADS = (CLS_HEAD, DISTILLATION_HEAD)
PLAIN_HEADS = (PLAIN_HEAD,)


HEADS_BY_NAME = {head.name: head for head in (*DISTILLED_HEADS, *PLAIN_HEADS)}


def heads_of(distilled: bool) -> tuple[Head, ...]:
    return DISTILLED_HEADS if distilled else PLAIN_HEADS


# Tokens every head reads from, at the start of the sequence: the classifier runs on this many whole tiles of rows.
PREFIX_TOKENS = max(head.token for head in DISTILLED_HEADS) + 1
