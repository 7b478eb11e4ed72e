"""Hard distillation through attention (DeiT, Touvron et al. 2021, section 4), on the generated scenes.

The student is Hugging Face's ``DeiTForImageClassificationWithTeacher``: a CLS token and a distillation
token go through the encoder side by side, each with its own linear head. Training loss:

    0.5 * CE(cls_logits, label) + 0.5 * CE(distillation_logits, argmax teacher(image))

and at inference the model returns the average of the two heads' logits. Training runs on the CPU in
bfloat16 autocast, AdamW with a linear warm-up and a cosine decay.

To fit a CPU budget the student first learns on crops around the object (7 x 7 patches, each crop with the
position embeddings of the patches it was cut from, so nothing is interpolated and every embedding is
trained): a quarter of the tokens, about three times the images per second on a quiet machine. The rest
of the schedule trains on whole images, where the two tokens must find the object among the clutter. This is the
low-resolution-first idea of FixRes and of DeiT's own fine-tuning at 384, done by cropping rather than
resizing so that the textures keep their pixel scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

from deit_tt.checkpoints.loading import RANDOM_SIZES
from deit_tt.data.preprocessing import normalise, resize_and_crop
from deit_tt.data.scenes import DEFAULT_SEED, SCENE_CLASSES, box_in_model_view, render_scene
from deit_tt.training.teacher import ShapesTeacher

HEADS = ("cls", "distillation", "average")
PATCH = DeiTConfig().patch_size  # 16: the student keeps the default


@dataclass(frozen=True)
class TrainSettings:
    train_images: int = 6000
    val_images: int = 500
    teacher_epochs: int = 3
    student_epochs: int = 12
    batch_size: int = 64
    teacher_lr: float = 2e-3
    student_lr: float = 8e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.08
    layers: int = 12  # DeiT-tiny has 12; fewer only for short demonstration runs
    crop_patches: int = 7  # side of the student's early training crops, in patches (14: whole images only)
    crop_fraction: float = 0.6  # share of the student's schedule trained on crops
    # wall-clock budgets (0: none). The schedule runs on whichever of steps or time is further along, and
    # training stops when the time is up, so a run on a shared machine still ends on time with a full schedule.
    teacher_minutes: float = 0.0
    student_minutes: float = 0.0
    seed: int = DEFAULT_SEED


def student_config(layers: int = 12) -> DeiTConfig:
    """DeiT-tiny's dimensions (hidden 192, 3 heads, MLP 768, patch 16, 224) with the scene classes as labels."""
    hidden, heads = RANDOM_SIZES["tiny"]
    return DeiTConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        intermediate_size=4 * hidden,
        num_labels=len(SCENE_CLASSES),
        id2label=dict(enumerate(SCENE_CLASSES)),
        label2id={name: index for index, name in enumerate(SCENE_CLASSES)},
        architectures=["DeiTForImageClassificationWithTeacher"],
        attn_implementation="sdpa",
    )


class ScenePixels(NamedTuple):
    pixels: torch.Tensor  # [N, 3, 224, 224] uint8: the views the official preprocessing makes
    labels: torch.Tensor  # [N]
    boxes: torch.Tensor  # [N, 4] float: each object's box in view pixels (x0, y0, x1, y1)


def _model_view(args: tuple[int, str, int]) -> tuple[np.ndarray, int, tuple]:
    scene = render_scene(*args)
    view = np.ascontiguousarray(np.asarray(resize_and_crop(scene.image), dtype=np.uint8).transpose(2, 0, 1))
    return view, scene.label, box_in_model_view(scene.box)


def scene_pixels(count: int, split: str, seed: int = DEFAULT_SEED, workers: int = 2) -> ScenePixels:
    """``count`` scenes of ``split`` as model views, with their labels and object boxes."""
    jobs = [(index, split, seed) for index in range(count)]
    if workers > 1 and count >= 200:
        with ProcessPoolExecutor(workers) as pool:
            views = list(tqdm(pool.map(_model_view, jobs, chunksize=64), total=count, desc=f"{split} scenes"))
    else:
        views = [_model_view(job) for job in tqdm(jobs, desc=f"{split} scenes", disable=count < 200)]
    return ScenePixels(
        torch.from_numpy(np.stack([view for view, _, _ in views])),
        torch.tensor([label for _, label, _ in views]),
        torch.tensor([box for _, _, box in views], dtype=torch.float32),
    )


def warmup_cosine(progress: float, warmup_fraction: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1] of the run: linear warm-up, then cosine down to 1 %."""
    if progress < warmup_fraction:
        return max(progress, 1e-3) / warmup_fraction
    remaining = (progress - warmup_fraction) / (1 - warmup_fraction)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(remaining, 1.0)))


def _batches(data: ScenePixels, batch_size: int, generator: torch.Generator, crop_patches: Callable[[], int | None]):
    """Shuffled, horizontally flipped at random (every class is mirror-symmetric up to rotation), normalised,
    and cut to ``crop_patches()`` patches around each object when that is not None. Yields the pixels, the
    labels and the crops' patch offsets (row, column) or None."""
    order = torch.randperm(len(data.labels), generator=generator)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start : start + batch_size]
        batch, boxes = data.pixels[index], data.boxes[index].clone()
        flip = torch.rand(len(index), generator=generator) < 0.5
        batch[flip] = batch[flip].flip(-1)
        boxes[flip] = torch.stack([batch.shape[-1] - boxes[flip, 2], boxes[flip, 1], batch.shape[-1] - boxes[flip, 0], boxes[flip, 3]], -1)
        side, offsets = crop_patches(), None
        if side is not None:
            offsets = crop_offsets(boxes, side, batch.shape[-1] // PATCH, generator)
            batch = torch.stack([image[:, row * PATCH : (row + side) * PATCH, column * PATCH : (column + side) * PATCH]
                                 for image, (row, column) in zip(batch, offsets.tolist())])
        yield normalise(batch), data.labels[index], offsets


def crop_offsets(boxes: torch.Tensor, side: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Random patch offsets (row, column) of ``side``-patch crops that hold each box's centre at least a patch
    from their edge."""
    centres = torch.stack([(boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2], -1) / PATCH
    low = (centres - side + 1).ceil().clamp(0, grid - side)
    high = (centres - 1).floor().clamp(0, grid - side).maximum(low)
    return (low + (torch.rand(low.shape, generator=generator) * (high - low + 1)).floor()).long()


@contextmanager
def crop_positions(student: DeiTForImageClassificationWithTeacher, offsets: torch.Tensor):
    """While active, the student's embeddings give each crop the position embeddings of the patches it was cut
    from (call the model with ``interpolate_pos_encoding=True`` so that it accepts the smaller input)."""
    embeddings = student.deit.embeddings
    grid = embeddings.patch_embeddings.image_size[0] // PATCH

    def positioned(module, args, output):
        pixels = args[0]
        patches = module.patch_embeddings(pixels)
        side = pixels.shape[-1] // PATCH
        table = module.position_embeddings[0, 2:].reshape(grid, grid, -1)
        steps = torch.arange(side)
        rows = (offsets[:, 0, None] + steps)[:, :, None]
        columns = (offsets[:, 1, None] + steps)[:, None, :]
        prefix = torch.cat([module.cls_token, module.distillation_token], 1) + module.position_embeddings[:, :2]
        tokens = patches + table[rows, columns].reshape(len(pixels), side * side, -1)
        return module.dropout(torch.cat([prefix.expand(len(pixels), -1, -1), tokens], 1))

    handle = embeddings.register_forward_hook(positioned)
    try:
        yield
    finally:
        handle.remove()


def _fit(model: nn.Module, loss_of: Callable, data: ScenePixels, epochs: int, lr: float, minutes: float, settings: TrainSettings,
         evaluate: Callable[[], dict], log: Callable[[str], None], name: str, crops: bool = False) -> list[dict]:
    generator = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = len(data.labels) // settings.batch_size
    total_steps, budget = epochs * steps_per_epoch, minutes * 60
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay)
    history, step, began = [], 0, time.perf_counter()

    def progress() -> float:
        return max(step / total_steps, (time.perf_counter() - began) / budget if budget else 0.0)

    def crop_patches() -> int | None:
        return settings.crop_patches if crops and progress() < settings.crop_fraction else None

    for epoch in range(epochs):
        model.train()
        start, total, seen, cropped = time.perf_counter(), 0.0, 0, 0
        for x, y, offsets in tqdm(_batches(data, settings.batch_size, generator, crop_patches), total=steps_per_epoch, desc=f"{name} epoch {epoch + 1}/{epochs}", leave=False):
            if progress() >= 1:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * warmup_cosine(progress(), settings.warmup_fraction)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_of(x, y, offsets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            total += loss.item() * len(y)
            seen += len(y)
            cropped += 0 if offsets is None else len(y)
        if seen == 0:
            break
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "images": seen, "cropped": cropped, "loss": round(total / seen, 4), "seconds": round(seconds, 1), "images_per_s": round(seen / seconds, 1)}
        record.update(evaluate())
        history.append(record)
        log(f"{name} {record}")
        if progress() >= 1:
            break
    model.eval()
    return history


@torch.no_grad()
def teacher_predictions(teacher: nn.Module, pixels: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """Argmax labels of the teacher on uint8 model views (float32)."""
    teacher.eval()
    return torch.cat([teacher(normalise(pixels[i : i + batch_size])).argmax(-1) for i in range(0, len(pixels), batch_size)])


@torch.no_grad()
def head_predictions(student: DeiTForImageClassificationWithTeacher, pixels: torch.Tensor, batch_size: int = 50, autocast: bool = False) -> dict[str, torch.Tensor]:
    """Argmax of the CLS head, the distillation head and their average on uint8 model views."""
    student.eval()
    out: dict[str, list] = {head: [] for head in HEADS}
    for i in range(0, len(pixels), batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            result = student(pixel_values=normalise(pixels[i : i + batch_size]))
        out["cls"].append(result.cls_logits.float().argmax(-1))
        out["distillation"].append(result.distillation_logits.float().argmax(-1))
        out["average"].append(result.logits.float().argmax(-1))
    return {head: torch.cat(values) for head, values in out.items()}


def agreement(predictions: dict[str, torch.Tensor], labels: torch.Tensor, teacher: torch.Tensor) -> dict[str, float]:
    """Percent of images where each head matches the label (``<head>_acc``) and the teacher (``<head>_vs_teacher``)."""
    result = {"teacher_acc": round(100 * (teacher == labels).float().mean().item(), 2)}
    for head, predicted in predictions.items():
        result[f"{head}_acc"] = round(100 * (predicted == labels).float().mean().item(), 2)
        result[f"{head}_vs_teacher"] = round(100 * (predicted == teacher).float().mean().item(), 2)
    return result


def train_teacher(data: ScenePixels, val: ScenePixels, settings: TrainSettings, log=print) -> tuple[ShapesTeacher, list[dict]]:
    torch.manual_seed(settings.seed)
    teacher = ShapesTeacher(len(SCENE_CLASSES))

    def evaluate() -> dict:
        accuracy = (teacher_predictions(teacher, val.pixels) == val.labels).float().mean().item()
        return {"val_acc": round(100 * accuracy, 2)}

    history = _fit(teacher, lambda x, y, offsets: F.cross_entropy(teacher(x), y), data, settings.teacher_epochs,
                   settings.teacher_lr, settings.teacher_minutes, settings, evaluate, log, "teacher")
    return teacher.eval(), history


def train_student(teacher: ShapesTeacher, data: ScenePixels, val: ScenePixels, settings: TrainSettings, log=print):
    """Hard distillation: the teacher labels each (flipped, maybe cropped) training batch as the student sees it."""
    torch.manual_seed(settings.seed)
    student = DeiTForImageClassificationWithTeacher(student_config(settings.layers))
    teacher.eval()
    val_teacher = teacher_predictions(teacher, val.pixels)

    def loss_of(x, y, offsets):
        with torch.no_grad():
            teacher_labels = teacher(x).argmax(-1)
        if offsets is None:
            out = student(pixel_values=x)
        else:
            with crop_positions(student, offsets):
                out = student(pixel_values=x, interpolate_pos_encoding=True)
        return 0.5 * F.cross_entropy(out.cls_logits.float(), y) + 0.5 * F.cross_entropy(out.distillation_logits.float(), teacher_labels)

    def evaluate() -> dict:
        return agreement(head_predictions(student, val.pixels, autocast=True), val.labels, val_teacher)

    history = _fit(student, loss_of, data, settings.student_epochs, settings.student_lr, settings.student_minutes, settings,
                   evaluate, log, "student", crops=settings.crop_patches < student.config.image_size // PATCH)
    return student.eval(), history
