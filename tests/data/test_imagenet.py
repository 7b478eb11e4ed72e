"""Dataset readers: labels in sorted-synset order for every layout, and refusal of layouts that cannot be mapped."""

from __future__ import annotations

import csv
import os
import sys
import json
from pathlib import Path

import pytest
from PIL import Image

from deit_tt.errors import UserFacingError
from deit_tt.data.imagenet import (
    DatasetError,
    GROUND_TRUTH_CSV,
    detect_layout,
    make_synthetic_dataset,
    open_dataset,
)
from deit_tt.checkpoints.labels import imagenet_class_names, imagenet_synsets

SYNSETS = imagenet_synsets()


def _image(path: Path, size=(40, 30), colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")
    return path


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "PredictionString"])
        for image_id, prediction in rows:
            writer.writerow([image_id, prediction])
    return path


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert isinstance(excinfo.value, UserFacingError)
    return message


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("folder") / "val", num_classes=5, images_per_class=3, seed=1)


# -- label mapping per layout -------------------------------------------------------------------------


def test_folder_layout_labels_are_sorted_synset_indices(synthetic_folder):
    dataset = open_dataset(synthetic_folder)
    assert dataset.layout == "folder"
    assert len(dataset) == 15 and len(dataset.classes) == 5
    for sample in dataset:
        synset = Path(sample.source).parent.name
        assert sample.label == SYNSETS.index(synset)
    assert 0 in dataset.classes and 999 in dataset.classes  # tench and toilet tissue are always included
    ids = [sample.image_id for sample in dataset]
    assert ids == sorted(ids)  # evaluation order = sorted image ids
    assert len({s.label for s in dataset.samples[:5]}) > 1  # classes interleave in that order


def test_real_imagenet_file_names_map_to_documented_indices(tmp_path):
    # reference §3: ILSVRC2012_val_00000293 is in n01440764 (index 0); val_00000001 is n01751748 sea snake (65)
    _image(tmp_path / "val" / "n01440764" / "ILSVRC2012_val_00000293.JPEG")
    _image(tmp_path / "val" / "n01751748" / "ILSVRC2012_val_00000001.JPEG")
    dataset = open_dataset(tmp_path / "val")
    assert [(s.image_id, s.label) for s in dataset] == [("ILSVRC2012_val_00000001", 65), ("ILSVRC2012_val_00000293", 0)]
    # the two "crane" classes are told apart by synset, never by name
    _image(tmp_path / "cranes" / "n02012849" / "a.JPEG")
    _image(tmp_path / "cranes" / "n03126707" / "b.JPEG")
    cranes = open_dataset(tmp_path / "cranes")
    assert [s.label for s in cranes] == [134, 517]
    assert imagenet_class_names()[134] == imagenet_class_names()[517] == "crane"


def test_subset_of_synset_folders_and_stray_empty_folder(tmp_path):
    _image(tmp_path / "n01440764" / "x1.JPEG")
    _image(tmp_path / "n15075141" / "x2.png")
    (tmp_path / "n15075141" / "notes.txt").write_text("not an image")
    (tmp_path / "outputs").mkdir()  # empty, not a class: ignored
    dataset = open_dataset(tmp_path)
    assert [(s.image_id, s.label) for s in dataset] == [("x1", 0), ("x2", 999)]


def test_flat_layout_with_loc_val_solution(tmp_path):
    flat = tmp_path / "val_flat"
    _image(flat / "ILSVRC2012_val_00000001.JPEG")
    _image(flat / "ILSVRC2012_val_00000002.JPEG")
    _write_csv(
        tmp_path / GROUND_TRUTH_CSV,  # in the parent folder, as in the Kaggle download
        [
            ("ILSVRC2012_val_00000002", "n15075141 10 20 30 40 n15075141 1 2 3 4"),
            ("ILSVRC2012_val_00000001", "n01751748 0 0 10 10"),
            ("ILSVRC2012_val_00049999", "n01440764 0 0 1 1"),  # rows without an image are fine (a subset)
        ],
    )
    assert detect_layout(flat) == "flat"
    dataset = open_dataset(flat)
    assert [(s.image_id, s.label) for s in dataset] == [("ILSVRC2012_val_00000001", 65), ("ILSVRC2012_val_00000002", 999)]
    assert dataset.ground_truth == tmp_path / GROUND_TRUTH_CSV


def test_flat_and_folder_copies_of_the_same_data_have_the_same_labels_and_fingerprint(tmp_path):
    folder = open_dataset(make_synthetic_dataset(tmp_path / "a", num_classes=4, images_per_class=2, seed=3))
    flat = open_dataset(make_synthetic_dataset(tmp_path / "b", num_classes=4, images_per_class=2, seed=3, layout="flat"))
    assert flat.layout == "flat"
    assert [(s.image_id, s.label) for s in folder] == [(s.image_id, s.label) for s in flat]
    assert folder.fingerprint() == flat.fingerprint()


def test_flat_image_without_ground_truth_row_is_refused(tmp_path):
    _image(tmp_path / "ILSVRC2012_val_00000001.JPEG")
    _image(tmp_path / "ILSVRC2012_val_00000002.JPEG")
    _write_csv(tmp_path / GROUND_TRUTH_CSV, [("ILSVRC2012_val_00000001", "n01751748 0 0 1 1")])
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    assert "no row" in _one_line_error(excinfo) and "ILSVRC2012_val_00000002" in str(excinfo.value)


def test_synthetic_dataset_is_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_classes=3, images_per_class=2, seed=7)
    b = make_synthetic_dataset(tmp_path / "b", num_classes=3, images_per_class=2, seed=7)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.JPEG"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.JPEG"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert open_dataset(a).synthetic


# -- Hugging Face copy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["dataset_dict.json", "validation-00000-of-00014.parquet"])
def test_hf_layout_without_datasets_says_how_to_install(tmp_path, marker, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails as if not installed
    (tmp_path / marker).write_text("{}")
    assert detect_layout(tmp_path) == "hf"
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    assert "pip install datasets" in _one_line_error(excinfo)


def test_hf_parquet_copy_labels_and_checks(tmp_path, synthetic_folder):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = open_dataset(synthetic_folder)
    names = [n if i != 517 else "crane, construction crane" for i, n in enumerate(imagenet_class_names())]

    def write(folder: Path, class_names: list[str], labels: list[int]) -> Path:
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=class_names)})
        table = pa.table(
            {
                "image": [
                    {"bytes": Path(s.source).read_bytes(), "path": f"{s.image_id}_{SYNSETS[s.label]}.JPEG"} for s in source
                ],
                "label": pa.array(labels, pa.int64()),
            }
        ).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features.to_dict()}})})
        folder.mkdir()
        pq.write_table(table, folder / "validation-00000-of-00001.parquet")
        return folder

    good = open_dataset(write(tmp_path / "good", names, [s.label for s in source]))
    assert good.layout == "hf"
    assert [(s.image_id, s.label) for s in good] == [(s.image_id, s.label) for s in source]
    assert good.fingerprint() == source.fingerprint()
    assert good.load(good.samples[0]).size == source.load(source.samples[0]).size

    with pytest.raises(DatasetError) as excinfo:  # labels disagreeing with the synset in the file name
        open_dataset(write(tmp_path / "shifted", names, [(s.label + 1) % 1000 for s in source]))
    assert "disagrees" in _one_line_error(excinfo)
    with pytest.raises(DatasetError) as excinfo:  # a ClassLabel not in sorted-synset order
        open_dataset(write(tmp_path / "reordered", names[1:] + names[:1], [s.label for s in source]))
    assert "tench" in _one_line_error(excinfo)


# -- layouts that must be refused ------------------------------------------------------------------------


@pytest.mark.parametrize("names", [["1", "2", "1000"], ["0", "1", "999"]], ids=["devkit-1..1000", "index-0..999"])
def test_numbered_class_folders_are_refused(tmp_path, names):
    for name in names:
        _image(tmp_path / name / "a.JPEG")
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    message = _one_line_error(excinfo)
    assert "ILSVRC2012_ID" in message and "synset" in message


def test_devkit_ground_truth_file_is_refused(tmp_path):
    flat = tmp_path / "val"
    _image(flat / "ILSVRC2012_val_00000001.JPEG")
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("490\n361\n171\n")
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(flat)
    assert "ILSVRC2012_ID" in _one_line_error(excinfo)
    with pytest.raises(DatasetError):  # also when passed explicitly
        open_dataset(flat, ground_truth=tmp_path / "ILSVRC2012_validation_ground_truth.txt")


def test_csv_with_numeric_labels_is_refused(tmp_path):
    _image(tmp_path / "ILSVRC2012_val_00000001.JPEG")
    _write_csv(tmp_path / GROUND_TRUTH_CSV, [("ILSVRC2012_val_00000001", "65 0 0 1 1")])
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    assert "numbers" in _one_line_error(excinfo)


def test_unknown_synsets_are_refused(tmp_path):
    _image(tmp_path / "n01440764" / "a.JPEG")
    _image(tmp_path / "n99999999" / "b.JPEG")
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    assert "n99999999" in _one_line_error(excinfo)


def test_unknown_synset_in_csv_is_refused(tmp_path):
    _image(tmp_path / "ILSVRC2012_val_00000001.JPEG")
    _write_csv(tmp_path / GROUND_TRUTH_CSV, [("ILSVRC2012_val_00000001", "n00000001 0 0 1 1")])
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    assert "n00000001" in _one_line_error(excinfo)


def test_class_name_folders_are_refused(tmp_path):
    for name in ["tench", "goldfish", "crane"]:
        _image(tmp_path / name / "a.JPEG")
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    message = _one_line_error(excinfo)
    assert "synset id" in message and "crane" in message


def test_same_image_in_two_class_folders_is_refused(tmp_path):
    _image(tmp_path / "n01440764" / "ILSVRC2012_val_00000007.JPEG")
    _image(tmp_path / "n01443537" / "ILSVRC2012_val_00000007.JPEG")
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path)
    assert "two class folders" in _one_line_error(excinfo)


# -- malformed folders -----------------------------------------------------------------------------------


def test_malformed_dataset_folders_give_one_line_errors(tmp_path):
    cases = {}
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path / "missing")
    cases["missing"] = _one_line_error(excinfo)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path / "empty")
    cases["empty"] = _one_line_error(excinfo)
    (tmp_path / "noimages" / "n01440764").mkdir(parents=True)
    (tmp_path / "noimages" / "n01440764" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path / "noimages")
    cases["no images"] = _one_line_error(excinfo)
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "imagenet" / "val").mkdir()
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path / "imagenet")
    cases["split folders"] = _one_line_error(excinfo)
    _image(tmp_path / "flat_no_gt" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path / "flat_no_gt")
    cases["flat without ground truth"] = _one_line_error(excinfo)
    (tmp_path / "a_file.JPEG").write_bytes(b"x")
    with pytest.raises(DatasetError) as excinfo:
        open_dataset(tmp_path / "a_file.JPEG")
    cases["a file"] = _one_line_error(excinfo)
    with pytest.raises(DatasetError):
        open_dataset(tmp_path, layout="imagenet-21k")

    assert "does not exist" in cases["missing"] and "--data" in cases["missing"]
    assert "empty" in cases["empty"]
    assert "no images" in cases["no images"]
    assert f"--data {tmp_path / 'imagenet' / 'val'}" in cases["split folders"]
    assert GROUND_TRUTH_CSV in cases["flat without ground truth"] and "--ground-truth" in cases["flat without ground truth"]
    assert "not a folder" in cases["a file"]


def test_symlink_loops_and_non_utf8_names_in_synset_folders(tmp_path, synthetic_folder):
    import shutil

    root = tmp_path / "val"
    shutil.copytree(synthetic_folder, root)
    folder = sorted(path for path in root.iterdir() if path.is_dir())[0]
    (root / "loop").symlink_to("loop")
    (folder / "aaa.JPEG").symlink_to("aaa.JPEG")
    undecodable = os.fsdecode(bytes(folder) + b"/ILSVRC2012_val_\xff\xfe.JPEG")  # not UTF-8: kept as surrogates
    shutil.copy(next(folder.glob("*.JPEG")), undecodable)
    dataset = open_dataset(root)
    assert len(dataset.samples) == len(open_dataset(synthetic_folder).samples) + 1
    assert dataset.fingerprint() != open_dataset(synthetic_folder).fingerprint()
    assert dataset.load("ILSVRC2012_val_\udcff\udcfe").mode == "RGB"
