"""Class names come from the checkpoint's own id2label; ImageNet-1k names only where the checkpoint has none.

End to end: a saved checkpoint whose 1000 classes are called class_0000 ... class_0999 gets those names from
``classify --json``, the upload widget and the evaluation summary; random:* checkpoints get ImageNet names.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import DeiTForImageClassificationWithTeacher

from deit_tt.checkpoints.loading import load_checkpoint, random_config
from deit_tt.evaluation import evaluate
from deit_tt.data.imagenet import make_synthetic_dataset, open_dataset
from deit_tt.checkpoints.labels import NUM_CLASSES, head_class_names, imagenet_class_names
from deit_tt.pipeline import build_pipeline
from deit_tt.analysis.widgets import ClassifierWidget
from test_classify import SHALLOW_LAYERS, run_cli
from test_images import DATA_IMAGES

OWN_NAMES = [f"class_{index:04d}" for index in range(NUM_CLASSES)]


def config(id2label: dict | None, num_labels: int = NUM_CLASSES):
    return SimpleNamespace(num_labels=num_labels, id2label=id2label)


def test_real_names_are_used_for_a_1000_way_head():
    assert head_class_names(config(dict(enumerate(OWN_NAMES)))) == OWN_NAMES


def test_string_keys_as_in_a_config_json_are_read():
    assert head_class_names(config({str(index): name for index, name in enumerate(OWN_NAMES)})) == OWN_NAMES


@pytest.mark.parametrize(
    "id2label",
    [None, {}, {index: f"LABEL_{index}" for index in range(NUM_CLASSES)}, {index: "x" for index in range(999)}],
    ids=["none", "empty", "generic", "incomplete"],
)
def test_missing_generic_or_incomplete_names_fall_back_to_imagenet(id2label):
    assert head_class_names(config(id2label)) == imagenet_class_names()


def test_partly_generic_names_are_still_the_checkpoint_s_own():
    names = {index: f"LABEL_{index}" for index in range(NUM_CLASSES)} | {7: "my class"}
    assert head_class_names(config(names))[7] == "my class"


def test_other_heads_use_their_names_or_numbers():
    assert head_class_names(config({0: "cat", 1: "dog"}, num_labels=2)) == ["cat", "dog"]
    assert head_class_names(config({0: "LABEL_0", 1: "LABEL_1"}, num_labels=2)) == ["class 0", "class 1"]


def test_random_checkpoints_carry_imagenet_names():
    assert head_class_names(random_config("tiny")) == imagenet_class_names()


# -- end to end with a saved checkpoint of one's own classes -----------------------------------------------


@pytest.fixture(scope="module")
def own_classes_pipeline(tmp_path_factory):
    """A 2-layer DeiT-tiny with random weights, saved with save_pretrained under its own class names."""
    folder = tmp_path_factory.mktemp("own-classes")
    model_config = random_config("tiny")
    model_config.num_hidden_layers = SHALLOW_LAYERS
    model_config.id2label = dict(enumerate(OWN_NAMES))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        DeiTForImageClassificationWithTeacher(model_config).save_pretrained(folder)
    pipeline = build_pipeline(model=load_checkpoint(str(folder)), executor="host", batch_size=2)
    yield pipeline
    pipeline.close()


def test_classify_json_reports_the_checkpoint_s_labels(own_classes_pipeline):
    image = str(DATA_IMAGES / "cat_chelsea.jpg")
    folder = own_classes_pipeline.checkpoint.name
    code, out, _, _ = run_cli(["classify", image, "--json", "--model", folder, "--executor", "host"], pipeline=own_classes_pipeline)
    assert code == 0
    labels = [item["label"] for item in json.loads(out)[0]]
    assert len(labels) == 5 and set(labels) <= set(OWN_NAMES)


def test_widget_reports_the_checkpoint_s_labels(own_classes_pipeline):
    widget = ClassifierWidget(own_classes_pipeline)
    result = widget.process((DATA_IMAGES / "coffee_cup.jpg").read_bytes(), "coffee_cup.jpg")
    assert widget.last_error is None, widget.last_error
    for predictions in (result.classification.average, result.classification.cls, result.classification.distillation):
        assert [prediction.label for prediction in predictions] == [OWN_NAMES[p.index] for p in predictions]
    assert result.classification.top1.label in widget.table.value


def test_evaluation_summary_reports_the_checkpoint_s_labels(tmp_path, own_classes_pipeline):
    dataset = open_dataset(make_synthetic_dataset(tmp_path / "val", num_classes=3, images_per_class=2, seed=1))
    summary = evaluate(own_classes_pipeline, dataset, tmp_path / "run.jsonl", workers=0, progress=False, log=None).summary
    assert [row["name"] for row in summary["per_class"]] == [OWN_NAMES[row["index"]] for row in summary["per_class"]]
    assert summary["most_confused"], "random weights should get some images wrong"
    for pair in summary["most_confused"]:
        assert (pair["true_name"], pair["predicted_name"]) == (OWN_NAMES[pair["true"]], OWN_NAMES[pair["predicted"]])


def test_evaluation_summary_of_a_random_checkpoint_uses_imagenet_names(tmp_path):
    from test_classify import shallow_pipeline

    dataset = open_dataset(make_synthetic_dataset(tmp_path / "val", num_classes=2, images_per_class=1, seed=1))
    summary = evaluate(shallow_pipeline(2), dataset, tmp_path / "run.jsonl", workers=0, progress=False, log=None).summary
    names = [name.split(",")[0] for name in imagenet_class_names()]
    assert [row["name"] for row in summary["per_class"]] == [names[row["index"]] for row in summary["per_class"]]
