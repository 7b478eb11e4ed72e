"""The generated scenes and the distillation training path (teacher, then a student with both heads).

A full training run is a job for ``python -m deit_tt.training.train_shapes``; here one tiny run checks that the
whole path works and that what it saves loads as a distilled checkpoint with the scene labels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deit_tt.checkpoints.loading import load_checkpoint
from transformers import DeiTForImageClassificationWithTeacher

from deit_tt.training.distillation import TrainSettings, crop_offsets, crop_positions, scene_pixels, student_config, warmup_cosine
from deit_tt.checkpoints.labels import head_class_names
from deit_tt.data.scenes import BUNDLED_SCENES, SCENE_CLASSES, SCENE_SIZE, render_scene, write_examples, write_splits
from deit_tt.training.teacher import load_teacher
from deit_tt.checkpoints.builtin import TEACHER_FILE, TRAINING_RECORD
from deit_tt.training.train_shapes import run


def test_scenes_are_deterministic_balanced_and_keep_the_object_in_the_crop(tmp_path):
    first, again, other = render_scene(7, "test"), render_scene(7, "test"), render_scene(7, "val")
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image)) and first.box == again.box
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))
    assert first.image.size == (SCENE_SIZE, SCENE_SIZE)
    for index in range(20):
        scene = render_scene(index, "train")
        assert scene.label == index % len(SCENE_CLASSES)
        x0, y0, x1, y1 = scene.box
        assert 16 <= x0 < x1 <= 208 and 16 <= y0 < y1 <= 208  # inside the official resize-256 + crop-224 view
    write_splits(tmp_path, {"train": 3, "test": 2})
    boxes = json.loads((tmp_path / "train" / "boxes.json").read_text())
    assert sorted(boxes) == ["horizontal_stripes/train-00001.png", "solid/train-00000.png", "vertical_stripes/train-00002.png"]
    assert (tmp_path / "test" / "solid" / "test-00000.png").is_file()
    assert sorted(p.name for p in (tmp_path / "train").iterdir() if p.is_dir()) == sorted(SCENE_CLASSES)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.1, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(0.55, 0.1) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.01)


def test_a_crop_gets_the_position_embeddings_of_the_patches_it_was_cut_from():
    torch.manual_seed(0)
    student = DeiTForImageClassificationWithTeacher(student_config(layers=1)).eval()
    pixels = torch.randn(2, 3, SCENE_SIZE, SCENE_SIZE)
    whole = student.deit.embeddings(pixels)
    offsets = torch.tensor([[3, 5], [0, 7]])  # (row, column) in patches
    crops = torch.stack([pixels[0, :, 48:160, 80:192], pixels[1, :, 0:112, 112:224]])
    seen = {}
    hook = student.deit.embeddings.register_forward_hook(lambda module, args, output: seen.setdefault("tokens", output))
    with crop_positions(student, offsets):
        student(pixel_values=crops, interpolate_pos_encoding=True)
    hook.remove()
    tokens, grid = seen["tokens"], whole[:, 2:].reshape(2, 14, 14, -1)
    assert tokens.shape == (2, 2 + 49, 192)
    assert torch.allclose(tokens[:, :2], whole[:, :2])  # CLS and distillation tokens as in a whole image
    assert torch.allclose(tokens[0, 2:], grid[0, 3:10, 5:12].reshape(49, -1), atol=1e-5)
    assert torch.allclose(tokens[1, 2:], grid[1, 0:7, 7:14].reshape(49, -1), atol=1e-5)


def test_training_crops_hold_the_object_centre_inside_the_image():
    scenes = scene_pixels(40, "train")
    offsets = crop_offsets(scenes.boxes, 7, 14, torch.Generator().manual_seed(0))
    centres = (scenes.boxes[:, [1, 0]] + scenes.boxes[:, [3, 2]]) / 2 / 16  # (row, column) in patches
    assert offsets.min() >= 0 and offsets.max() <= 7
    assert bool(((centres >= offsets + 1) & (centres <= offsets + 6)).all())  # at least a patch from the crop's edge


def test_a_short_training_run_saves_a_distilled_checkpoint_with_the_scene_labels(tmp_path):
    settings = TrainSettings(train_images=16, val_images=8, teacher_epochs=1, student_epochs=2, batch_size=8, layers=1, crop_fraction=0.5)
    record = run(settings, tmp_path, test_images=8, log=lambda line: None)["record"]
    assert set(record["test_float32"]) >= {"teacher_acc", "cls_acc", "distillation_acc", "average_acc", "distillation_vs_teacher"}
    assert json.loads((tmp_path / TRAINING_RECORD).read_text())["settings"]["layers"] == 1
    assert [epoch["cropped"] for epoch in record["student_history"]] == [16, 0]  # crops first, then whole images
    checkpoint = load_checkpoint(str(tmp_path))
    assert checkpoint.distilled and head_class_names(checkpoint.config) == list(SCENE_CLASSES)
    assert all(parameter.dtype == torch.float32 for parameter in checkpoint.model.parameters())
    teacher = load_teacher(tmp_path / TEACHER_FILE)
    assert teacher(torch.zeros(2, 3, SCENE_SIZE, SCENE_SIZE)).shape == (2, len(SCENE_CLASSES))


def test_bundled_scenes_are_test_scenes_0_to_9_one_per_class(tmp_path):
    """data/scenes (what `make demo` classifies offline) is what data/README.md says made it."""
    from PIL import Image

    regenerated = write_examples(tmp_path)
    assert sorted(path.name for path in BUNDLED_SCENES.iterdir()) == sorted(f"{name}.png" for name in SCENE_CLASSES)
    for path in regenerated:
        assert np.array_equal(np.asarray(Image.open(BUNDLED_SCENES / path.name)), np.asarray(Image.open(path))), path.name
