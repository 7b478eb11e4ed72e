"""Evaluating on class folders named by a checkpoint's labels: matching folder names to labels, the errors for
folders that cannot be used, and a resumable run of a saved 3-label checkpoint through ``evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import DeiTForImageClassificationWithTeacher

from deit_tt.checkpoints.loading import load_checkpoint, random_config
from deit_tt.data.class_folders import fold
from deit_tt.data.datasets import open_evaluation_dataset
from deit_tt.evaluation import (
    EvaluationError,
    default_results_path,
    deterministic_part,
    evaluate,
    format_summary,
    read_results,
    records_frame,
    summary_table,
)
from deit_tt.data.imagenet import DatasetError, make_synthetic_dataset
from test_classify import SHALLOW_LAYERS

LABELS = ["Golden retriever", "cat/dog", "red car"]
FOLDERS = {"golden_retriever": 3, "cat_dog": 2, "Red Car": 3}  # folder name -> images; each names one label


def own_labels(labels=LABELS):
    config = SimpleNamespace(num_labels=len(labels), id2label=dict(enumerate(labels)))
    return SimpleNamespace(config=config, name="my-checkpoint")


def write_images(folder: Path, count: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for number in range(count):
        size = (160 + 40 * number, 120 + 30 * seed)
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels, "RGB").save(folder / f"img_{number}.png")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled") / "val"
    for seed, (name, count) in enumerate(FOLDERS.items()):
        write_images(root / name, count, seed)
    return root


def test_folders_match_labels_exactly_or_folded_and_classes_take_turns(labelled, tmp_path):
    assert fold("Golden_retriever") == fold("golden  retriever") == "golden retriever" and fold("cat/dog") == "cat dog"
    dataset = open_evaluation_dataset(labelled, own_labels())
    assert dataset.class_names == LABELS and dataset.num_classes == 3 and len(dataset) == 8
    ids = [sample.image_id for sample in dataset.samples]
    # label order (golden retriever 0, cat/dog 1, red car 2), one image of each class in turn
    assert ids == [
        "golden_retriever/img_0.png", "cat_dog/img_0.png", "Red Car/img_0.png",
        "golden_retriever/img_1.png", "cat_dog/img_1.png", "Red Car/img_1.png",
        "golden_retriever/img_2.png", "Red Car/img_2.png",
    ]
    assert [sample.label for sample in dataset.samples[:3]] == [0, 1, 2]
    assert "3 of 3 classes" in dataset.describe() and "named by the checkpoint's labels" in dataset.describe()
    assert dataset.metadata()["labels"] == "checkpoint"
    # an exact name wins over a folded one: labels "a b" and "A_B" are both usable as folders
    write_images(tmp_path / "exact" / "A_B", 1, 0)
    write_images(tmp_path / "exact" / "a b", 1, 1)
    exact = open_evaluation_dataset(tmp_path / "exact", own_labels(["a b", "A_B"]))
    assert {sample.image_id.split("/")[0]: sample.label for sample in exact} == {"a b": 0, "A_B": 1}


def _folders(root: Path, names: list[str]) -> Path:
    for seed, name in enumerate(names):
        write_images(root / name, 1, seed)
    return root


@pytest.mark.parametrize(
    "names, checkpoint, message",
    [
        (["cat_dog", "horse", "zebra"], own_labels(), r"2 of 3 class folders are not labels of my-checkpoint \(horse, zebra\); its 3 labels are .*rename"),
        (["cat_dog", "n01440764"], own_labels(), r"mixes folders named by labels of my-checkpoint \(cat_dog\) with ImageNet synset folders \(n01440764\)"),
        (["n01440764", "n01443537"], own_labels(), r"holds ImageNet synset folders .* classifies 3 classes of its own .*ImageNet-1k checkpoint"),
        (["Cat_Dog", "cat dog"], own_labels(), r"folders 'Cat_Dog' and 'cat dog' both name label 'cat/dog'.*merge"),
        (["a_b"], own_labels(["a b", "A B"]), r"folder 'a_b' could be label 'a b' or 'A B'.*exactly"),
        (["cat", "dog"], own_labels(["LABEL_0", "LABEL_1"]), r"names none of its 2 classes .*id2label"),
        # an ImageNet head keeps every ImageNet guard: class-name folders are refused, not matched by name
        (["tench", "goldfish"], SimpleNamespace(config=random_config("tiny"), name="random:tiny"), r"must be named by WordNet synset id"),
    ],
    ids=["not-labels", "mixed", "synsets-for-own-labels", "two-folders-one-label", "ambiguous", "generic-labels", "imagenet-guard"],
)
def test_folders_that_cannot_be_used_are_refused_in_one_line(tmp_path, names, checkpoint, message):
    root = _folders(tmp_path / "data", names)
    with pytest.raises(DatasetError, match=message) as error:
        open_evaluation_dataset(root, checkpoint)
    assert "\n" not in str(error.value)


def test_empty_class_folders_and_imagenet_layouts_for_own_labels_are_refused(labelled, tmp_path):
    root = _folders(tmp_path / "data", ["cat_dog"])
    (root / "red_car" / "nested").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"class folder\(s\) red_car hold no images \(images must be directly in the class folder"):
        open_evaluation_dataset(root, own_labels())
    (root / "red_car" / "nested").rmdir()
    (root / "red_car").rmdir()
    (root / "output").mkdir()  # an empty folder named by no label is ignored, as for ImageNet
    assert "ignored 1 empty folder" in open_evaluation_dataset(root, own_labels()).notes[0]
    with pytest.raises(DatasetError, match="--layout flat and --ground-truth are for ImageNet-1k"):
        open_evaluation_dataset(labelled, own_labels(), layout="flat")
    _folders(tmp_path / "splits" / "val", ["cat_dog"])
    with pytest.raises(DatasetError, match=r"holds split folders \(val\) but no class folders with images; pass one split itself"):
        open_evaluation_dataset(tmp_path / "splits", own_labels())
    imagenet = make_synthetic_dataset(tmp_path / "imagenet", num_classes=2, images_per_class=1)
    renamed = own_labels([f"class_{index:04d}" for index in range(1000)])  # a 1000-way head that renames ImageNet's classes
    assert open_evaluation_dataset(imagenet, renamed).class_names is None  # still reads synset folders as ImageNet


# -- a saved 3-label checkpoint, end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A 2-layer DeiT-tiny with random weights, saved with save_pretrained with id2label = LABELS."""
    folder = tmp_path_factory.mktemp("three-labels")
    config = random_config("tiny")
    config.num_hidden_layers = SHALLOW_LAYERS
    config.num_labels = len(LABELS)
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {label: index for index, label in enumerate(LABELS)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        DeiTForImageClassificationWithTeacher(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipeline(checkpoint_dir):
    from deit_tt.pipeline import build_pipeline

    built = build_pipeline(model=load_checkpoint(str(checkpoint_dir)), executor="host", batch_size=2)
    yield built
    built.close()


def test_a_labelled_folder_evaluates_resumes_and_summarises(tmp_path, labelled, pipeline):
    dataset = open_evaluation_dataset(labelled, pipeline.checkpoint)
    path = tmp_path / "run.jsonl"
    first = evaluate(pipeline, dataset, path, limit=4, workers=0, progress=False, log=None)
    assert first.evaluated == 4
    resumed = evaluate(pipeline, dataset, path, workers=0, progress=False, log=None)
    assert (resumed.resumed, resumed.evaluated) == (4, 4)
    records = read_results(path).records
    assert [record["id"] for record in records] == [sample.image_id for sample in dataset.samples]
    assert {record["label"] for record in records} == {0, 1, 2}

    summary = resumed.summary
    assert summary["images"]["evaluated"] == 8 and summary["images"]["corrupt"] == 0
    frame = records_frame(path)
    for head in ("average", "cls", "distillation"):
        assert summary["heads"][head]["correct_top1"] == int(frame[f"{head}_correct_top1"].sum())
        assert summary["heads"][head]["correct_top5"] == 8  # a 3-way head: its top-3 always holds the label
    per_class = {row["name"]: row for row in summary["per_class"]}
    assert {name: row["images"] for name, row in per_class.items()} == {"Golden retriever": 3, "cat/dog": 2, "red car": 3}
    assert all(row["synset"] is None for row in summary["per_class"])
    assert summary["published"] is None  # ImageNet's published numbers say nothing about these classes
    assert list(summary_table(summary).columns) == ["top-1 %", "top-5 %"]
    assert summary["head_classes"] == 3 and "top-5 counts all of them" in format_summary(summary)
    assert all(pair["true_name"] in LABELS and pair["predicted_synset"] is None for pair in summary["most_confused"])

    fresh = evaluate(pipeline, dataset, tmp_path / "fresh.jsonl", workers=0, progress=False, log=None)
    assert deterministic_part(fresh.summary) == deterministic_part(summary)


def test_data_for_another_head_is_refused(tmp_path, pipeline):
    imagenet = open_evaluation_dataset(make_synthetic_dataset(tmp_path / "in", num_classes=2, images_per_class=1), SimpleNamespace(config=random_config("tiny"), name="random:tiny"))
    with pytest.raises(EvaluationError, match=r"has class indices up to 999, but the head of .* has 3 classes"):
        evaluate(pipeline, imagenet, tmp_path / "x.jsonl", workers=0, progress=False, log=None)
    assert not (tmp_path / "x.jsonl").exists()


def test_evaluate_command_on_a_labelled_folder(tmp_path, labelled, checkpoint_dir, pipeline, monkeypatch, capsys):
    from deit_tt.cli import main
    from test_classify import run_cli

    monkeypatch.setenv("DEIT_TT_RESULTS_DIR", str(tmp_path / "results"))
    arguments = ["evaluate", "--data", str(labelled), "--model", str(checkpoint_dir), "--executor", "host", "--workers", "0", "--no-progress"]
    code, out, err, _ = run_cli(arguments, pipeline=pipeline)
    assert code == 0, err
    expected = default_results_path(pipeline, open_evaluation_dataset(labelled, pipeline.checkpoint))
    assert expected.parent == tmp_path / "results" and expected.name.startswith(f"{checkpoint_dir.name}-host-")
    assert f"results file: {expected}" in out and "named by the checkpoint's labels" in out
    summary = json.loads(expected.with_name(expected.name.removesuffix(".jsonl") + ".summary.json").read_text())
    assert summary["images"]["evaluated"] == 8 and summary["dataset"]["labels"] == "checkpoint"
    code, out, _, _ = run_cli(arguments, pipeline=pipeline)
    assert code == 0 and "resuming" in out  # the default path is found again: nothing is redone

    bad = _folders(tmp_path / "bad", ["cat_dog", "horse"])
    monkeypatch.setattr("deit_tt.pipeline.build_pipeline", lambda **kwargs: pytest.fail("weights converted for a bad folder"))
    assert main(["evaluate", "--data", str(bad), "--model", str(checkpoint_dir), "--executor", "host"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after transformers' "Loading weights" bar
    assert error.startswith("error: ") and "not labels of" in error and "horse" in error and "rename the folders" in error



def test_symlink_loops_in_class_folders_are_skipped_not_fatal(labelled, tmp_path):
    import shutil

    root = tmp_path / "val"
    shutil.copytree(labelled, root)
    expected = [sample.image_id for sample in open_evaluation_dataset(root, own_labels()).samples]
    (root / "loop").symlink_to("loop")  # a loop among the class folders
    (root / "golden_retriever" / "aaa.png").symlink_to("aaa.png")  # a loop named like an image
    (root / "cat_dog" / "a.png").symlink_to("b.png")
    (root / "cat_dog" / "b.png").symlink_to("a.png")
    dataset = open_evaluation_dataset(root, own_labels())
    assert [sample.image_id for sample in dataset.samples] == expected
