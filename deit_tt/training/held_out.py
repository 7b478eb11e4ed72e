"""The shapes student (``shapes:tiny``) on held-out scenes, image by image.

For each test scene: its label and object box; the CNN teacher's prediction; each head's prediction from
Hugging Face in float32 and from the ttnn pipeline; and whether the attention rollout of the CLS and of the
distillation token (from the pipeline's own attention probabilities) peaks inside the object's box. The
tests, notebook 05 and the training note all read this one table.
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm.auto import tqdm

from deit_tt.analysis.attention import attention_from_captures, attention_rollout
from deit_tt.checkpoints.builtin import TEACHER_FILE, scenes_model_folder
from deit_tt.training.distillation import HEADS, PATCH, scene_pixels
from deit_tt.data.preprocessing import normalise
from deit_tt.data.scenes import DEFAULT_SEED
from deit_tt.training.teacher import ShapesTeacher, load_teacher

ROLLOUT_TOKENS = ("cls", "distillation")


def shapes_teacher(checkpoint) -> ShapesTeacher:
    """The CNN teacher saved beside a scenes checkpoint (``shapes:tiny`` or a ``train_shapes`` folder)."""
    folder = scenes_model_folder(checkpoint.name)
    if folder is None:
        raise ValueError(f"{checkpoint.name!r} has no teacher beside it; use shapes:tiny or a folder written by deit_tt.training.train_shapes")
    return load_teacher(folder / TEACHER_FILE)


def patches_in_box(boxes: torch.Tensor, side: int = 14) -> torch.Tensor:
    """[B, side * side]: whether each patch's centre lies inside each [B, 4] box (view pixels)."""
    centres = (torch.arange(side) + 0.5) * PATCH
    y, x = centres.repeat_interleave(side), centres.repeat(side)
    return (boxes[:, :1] <= x) & (x < boxes[:, 2:3]) & (boxes[:, 1:2] <= y) & (y < boxes[:, 3:])


def peak_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """For [B, side, side] patch maps and [B, 4] boxes, whether each map's largest patch is inside the box."""
    inside = patches_in_box(boxes, maps.shape[-1])
    return inside.gather(1, maps.reshape(len(maps), -1).argmax(-1, keepdim=True))[:, 0]


@torch.no_grad()
def held_out_table(pipeline, count: int = 200, seed: int = DEFAULT_SEED, progress: bool = True) -> pd.DataFrame:
    """One row per test scene 0..count-1 (columns: label, teacher, hf_<head>, ttnn_<head>,
    <token>_peak_in_box, box_patch_share)."""
    checkpoint = pipeline.checkpoint
    teacher = shapes_teacher(checkpoint)
    scenes = scene_pixels(count, "test", seed)
    rows: dict[str, list] = {}
    batch = pipeline.batch_size
    for start in tqdm(range(0, count, batch), desc="held-out scenes", disable=not progress):
        pixels = normalise(scenes.pixels[start : start + batch])
        hf = checkpoint.model(pixel_values=pixels)
        output = pipeline(pixels, stages={"attention_probs"})
        layers = attention_from_captures(output.stages)
        columns = {
            "label": scenes.labels[start : start + batch],
            "teacher": teacher(pixels).argmax(-1),
            **{f"hf_{head}": logits.argmax(-1) for head, logits in zip(HEADS, (hf.cls_logits, hf.distillation_logits, hf.logits))},
            **{f"ttnn_{head}": logits.argmax(-1) for head, logits in zip(HEADS, (output.cls_logits, output.distillation_logits, output.logits))},
            **{f"{token}_peak_in_box": peak_in_box(attention_rollout(layers, token), scenes.boxes[start : start + batch]) for token in ROLLOUT_TOKENS},
            "box_patch_share": patches_in_box(scenes.boxes[start : start + batch]).float().mean(-1),
        }
        for name, values in columns.items():
            rows.setdefault(name, []).extend(values.tolist())
    return pd.DataFrame(rows)


def held_out_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Percentages per head and pipeline: accuracy, agreement with the teacher; plus the localisation rates."""
    rows = []
    for pipeline in ("hf", "ttnn"):
        for head in HEADS:
            predicted = table[f"{pipeline}_{head}"]
            rows.append({"pipeline": pipeline, "head": head, "accuracy %": 100 * (predicted == table["label"]).mean(),
                         "agrees with teacher %": 100 * (predicted == table["teacher"]).mean()})
    rows.append({"pipeline": "teacher", "head": "cnn", "accuracy %": 100 * (table["teacher"] == table["label"]).mean(), "agrees with teacher %": 100.0})
    return pd.DataFrame(rows)


def localisation_rates(table: pd.DataFrame) -> dict[str, float]:
    """Percent of scenes whose rollout from each token peaks inside the object's box, and the rate a patch
    picked at random would reach (``chance``: the mean share of patches inside the box)."""
    rates = {token: 100 * float(table[f"{token}_peak_in_box"].mean()) for token in ROLLOUT_TOKENS}
    return {**rates, "chance": 100 * float(table["box_patch_share"].mean())}
