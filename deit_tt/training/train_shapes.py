"""Train the CNN teacher and the distilled DeiT-tiny student on generated scenes.

    python -m deit_tt.training.train_shapes --out DIR

writes the student as a float16 ``save_pretrained`` folder (it loads as float32) with its image processor,
the teacher beside it (``teacher.safetensors``) and ``training.json``: the settings, per-epoch history,
wall times and the test accuracies of the teacher and of the three heads in float32.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
from transformers import DeiTImageProcessor

from deit_tt.checkpoints.builtin import TEACHER_FILE, TRAINING_RECORD
from deit_tt.training.distillation import TrainSettings, agreement, head_predictions, scene_pixels, teacher_predictions, train_student, train_teacher
from deit_tt.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from deit_tt.training.teacher import save_teacher


def run(settings: TrainSettings, out: Path | None, test_images: int, log=print) -> dict:
    """Generate data, train both models, measure on the test split; save into ``out`` unless it is None."""
    started = time.perf_counter()
    data = scene_pixels(settings.train_images, "train", settings.seed)
    val = scene_pixels(settings.val_images, "val", settings.seed)
    test_set = scene_pixels(test_images, "test", settings.seed)
    generated = time.perf_counter()
    teacher, teacher_history = train_teacher(data, val, settings, log)
    taught = time.perf_counter()
    student, student_history = train_student(teacher, data, val, settings, log)
    trained = time.perf_counter()
    test = agreement(head_predictions(student, test_set.pixels), test_set.labels, teacher_predictions(teacher, test_set.pixels))
    record = {
        "what": "DeiT-tiny (12 layers, hidden 192, 3 heads) distilled from a small CNN, trained on generated scenes (deit_tt.data.scenes), not ImageNet",
        "settings": asdict(settings),
        "test_images": test_images,
        "test_float32": test,
        "seconds": {
            "generate_data": round(generated - started, 1),
            "teacher": round(taught - generated, 1),
            "student": round(trained - taught, 1),
            "training_total": round(trained - generated, 1),
        },
        "teacher_history": teacher_history,
        "student_history": student_history,
        "torch_threads": torch.get_num_threads(),
    }
    log(f"test (float32): {test}  |  seconds: {record['seconds']}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        student.half().save_pretrained(out)
        student.float()
        DeiTImageProcessor(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(out)  # resize 256, crop 224
        save_teacher(teacher, out / TEACHER_FILE)
        (out / TRAINING_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return {"record": record, "student": student, "teacher": teacher}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a CNN teacher and a distilled DeiT-tiny student on generated scenes.")
    parser.add_argument("--out", type=Path, required=True, help="output folder (save_pretrained + teacher + training.json)")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    for field in fields(TrainSettings):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = TrainSettings(**{field.name: getattr(args, field.name) for field in fields(TrainSettings)})
    run(settings, args.out, args.test_images, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
