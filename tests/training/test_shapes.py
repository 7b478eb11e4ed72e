"""The built-in shapes:tiny checkpoint: a DeiT-tiny that has learned something, checked through ttnn.

It was trained by ``python -m deit_tt.training.train_shapes`` (not in CI) on the generated scenes; every held-out
scene is regenerated here from its seed. The ttnn pipeline runs on the host executor with the defaults a
user gets (bfloat8_b policy, tensix numerics).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deit_tt.checkpoints.builtin import BUILT_IN_MODELS, TEACHER_FILE, training_record
from deit_tt.checkpoints.loading import CheckpointError, load_checkpoint
from deit_tt.training.held_out import held_out_summary, held_out_table, localisation_rates, shapes_teacher
from deit_tt.checkpoints.hub import is_hub_id
from deit_tt.checkpoints.labels import head_class_names
from deit_tt.pipeline import build_pipeline
from deit_tt.data.scenes import SCENE_CLASSES, render_scene

REPO = Path(__file__).resolve().parents[2]
HELD_OUT = 1000  # test scenes 0..999, 100 per class: on 200, one image is half a point
FOLDER = BUILT_IN_MODELS["shapes:tiny"]


@pytest.fixture(scope="module")
def shapes_checkpoint():
    return load_checkpoint("shapes:tiny")


@pytest.fixture(scope="module")
def held_out(shapes_checkpoint):
    with build_pipeline(shapes_checkpoint, executor="host", batch_size=8) as pipeline:
        assert pipeline.policy.name == "bf8" and pipeline.numerics == "tensix"  # what a user gets by default
        return held_out_table(pipeline, count=HELD_OUT, progress=False)


def test_shapes_tiny_is_a_distilled_deit_tiny_with_the_scene_labels_shipped_in_the_package(shapes_checkpoint):
    config = shapes_checkpoint.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (12, 192, 3, 768)
    assert shapes_checkpoint.distilled and not shapes_checkpoint.is_random
    assert head_class_names(config) == list(SCENE_CLASSES)
    assert "generated scenes" in shapes_checkpoint.describe() and "not on ImageNet" in shapes_checkpoint.describe()
    assert not is_hub_id("shapes:tiny")
    shipped = sum(path.stat().st_size for path in FOLDER.iterdir())
    assert shipped <= 12 * 2**20, f"{shipped} bytes"
    assert (FOLDER / TEACHER_FILE).is_file() and (FOLDER / "preprocessor_config.json").is_file()


def test_an_unknown_built_in_name_is_a_one_line_error():
    with pytest.raises(CheckpointError, match=r"^unknown built-in model 'shapes:huge'; use one of shapes:tiny$"):
        load_checkpoint("shapes:huge")


def test_a_model_not_trained_on_the_scenes_has_no_teacher_or_training_record(tiny_checkpoint):
    with pytest.raises(ValueError, match="'random:tiny' has no teacher beside it"):
        shapes_teacher(tiny_checkpoint)
    with pytest.raises(ValueError, match="'random:tiny' was not trained by deit_tt.training.train_shapes"):
        training_record("random:tiny")
    assert training_record("shapes:tiny")["settings"]["layers"] == 12


@pytest.mark.slow  # these three read the held-out table: 1,000 scenes through ttnn, 2-4 minutes
def test_accuracy_through_ttnn_is_within_a_point_of_hugging_face_fp32(held_out):
    summary = held_out_summary(held_out).set_index(["pipeline", "head"])["accuracy %"]
    assert summary["hf", "average"] > 70  # the student has learned: chance is 10 %
    for head in ("cls", "distillation", "average"):
        assert abs(summary["ttnn", head] - summary["hf", head]) <= 1.0, summary


@pytest.mark.slow
def test_the_distillation_head_follows_the_teacher_more_often_than_the_cls_head(held_out):
    agreement = held_out_summary(held_out).set_index(["pipeline", "head"])["agrees with teacher %"]
    assert agreement["ttnn", "distillation"] > agreement["ttnn", "cls"], agreement


@pytest.mark.slow
def test_both_tokens_rollouts_peak_inside_the_object_box_on_most_scenes(held_out):
    rates = localisation_rates(held_out)
    assert rates["cls"] > 60 and rates["distillation"] > 60, rates
    assert min(rates["cls"], rates["distillation"]) > 2 * rates["chance"], rates


def test_classify_names_the_class_of_a_generated_test_scene_offline(tmp_path):
    scene = render_scene(3, "test")
    image = tmp_path / "scene.png"
    scene.image.save(image)
    completed = subprocess.run(
        [sys.executable, "-m", "deit_tt", "classify", str(image), "--model", "shapes:tiny", "--executor", "host", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout)[0][0]["label"] == scene.class_name
    assert "model: shapes:tiny | DeiT-tiny trained here on generated scenes" in completed.stderr
