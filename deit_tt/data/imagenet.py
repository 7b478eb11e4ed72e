"""ImageNet-1k validation data on disk: find the images and their labels, in the heads' class order.

DeiT's 1000-way heads use **sorted WordNet synset ids** (index 0 = n01440764 "tench", 999 =
n15075141 "toilet tissue"). Every label produced here is an index in that order, and classes are
matched by synset id (or, for the Hugging Face dataset, by its ClassLabel index after checking that
the index order is the sorted-synset order), never by class name: names are not unique ("crane" is
both 134 and 517).

Three layouts are read:

- ``folder``: one sub-folder per synset (``val/n01440764/ILSVRC2012_val_00000293.JPEG``), what
  ``valprep.sh`` produces. A subset of the 1000 folders is fine.
- ``flat``: all images in one folder plus a ground-truth CSV in the ``LOC_val_solution.csv`` layout
  (``ImageId,PredictionString``; the first token of PredictionString is the synset).
- ``hf``: a local copy of the Hugging Face ``imagenet-1k`` validation split (``save_to_disk`` folder
  or parquet files). Needs the optional ``datasets`` package.

Layouts whose labels cannot be mapped onto the sorted-synset order with certainty are refused with
a one-line ``DatasetError``: folders numbered 1..1000 / 0..999 (the devkit's ILSVRC2012_ID order is a
different permutation), the devkit's ``ILSVRC2012_validation_ground_truth.txt``, unknown synsets, and
folders named after classes.

Samples come in **evaluation order**: sorted by image id. For the official validation files
(``ILSVRC2012_val_00000001`` ...) that is the original order, in which classes are shuffled, so the
first N images are a fair sample of all classes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from deit_tt.errors import UserFacingError
from deit_tt.checkpoints.labels import NUM_CLASSES, imagenet_class_names, imagenet_synsets, short_name

LAYOUTS = ("auto", "folder", "flat", "hf")
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"})
GROUND_TRUTH_CSV = "LOC_val_solution.csv"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
SYNSET_PATTERN = re.compile(r"^n\d{8}$")
# HF imagenet-1k keeps the original file name, with the synset appended, in the image "path".
HF_FILE_PATTERN = re.compile(r"^(?P<id>.+)_(?P<synset>n\d{8})$")
SYNTHETIC_PREFIX = "synthetic_val_"
_EXAMPLES = 3  # how many offending names an error message quotes


class DatasetError(UserFacingError):
    """The dataset folder cannot be used as it is; the message says what to do."""


class Sample(NamedTuple):
    """One validation image. ``source`` is the file path, or the row index in a Hugging Face dataset."""

    image_id: str
    source: str | int
    label: int  # index in sorted-synset order = the heads' class index


@dataclass
class ImageNetDataset:
    """Samples of one dataset folder, in evaluation order (sorted by image id for ImageNet).

    Also holds class folders named by a checkpoint's labels (``deit_tt.data.class_folders``): then
    ``class_names`` are those labels and every ``Sample.label`` indexes them."""

    layout: str  # "folder" | "flat" | "hf"
    root: Path
    samples: list[Sample]
    ground_truth: Path | None = None
    notes: list[str] = field(default_factory=list)
    _hf: object = field(default=None, repr=False)  # datasets.Dataset with undecoded images (hf layout)
    class_names: list[str] | None = None  # the checkpoint's labels for class folders named by them; None: ImageNet-1k

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES if self.class_names is None else len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @property
    def classes(self) -> list[int]:
        """Class indices that have at least one image, ascending."""
        return sorted({sample.label for sample in self.samples})

    def find(self, image_id: str) -> Sample:
        for sample in self.samples:
            if sample.image_id == image_id:
                return sample
        raise KeyError(image_id)

    def load(self, sample: Sample | str):
        """Decode one image (a ``Sample`` or an image id) to an RGB PIL image; raises ``ImageError``.

        The pixels are taken as stored, EXIF orientation NOT applied: the published accuracies come from
        torchvision's loader, which does not apply it (a user's photo in ``classify`` is turned upright).
        """
        from deit_tt.data.images import load_image

        if isinstance(sample, str):
            sample = self.find(sample)
        if self.layout == "hf":
            record = self._hf[int(sample.source)]["image"]
            data = record.get("bytes") if isinstance(record, dict) else None
            if data is None and isinstance(record, dict) and record.get("path"):
                return load_image(record["path"], name=sample.image_id, exif_orientation=False)
            return load_image(data or b"", name=sample.image_id, exif_orientation=False)
        return load_image(sample.source, name=sample.image_id, exif_orientation=False)

    def fingerprint(self) -> str:
        """Hash of the (image id, label) pairs: the same images with the same labels, whatever the layout or path."""
        digest = hashlib.sha256()
        for sample in sorted(self.samples):
            digest.update(f"{sample.image_id}\t{sample.label}\n".encode(errors="surrogateescape"))  # names need not be UTF-8
        return f"{len(self.samples)}:{digest.hexdigest()[:20]}"

    def describe(self) -> str:
        per_class = len(self.samples) / max(1, len(self.classes))
        layout = self.layout if self.class_names is None else f"{self.layout} (named by the checkpoint's labels)"
        text = (
            f"dataset: {self.root} | layout {layout} | {len(self.samples):,} images in "
            f"{len(self.classes)} of {self.num_classes} classes ({per_class:.1f} per class)"
        )
        if self.ground_truth is not None:
            text += f" | labels from {self.ground_truth.name}"
        return text

    def metadata(self) -> dict:
        return {
            "layout": self.layout,
            "root": str(self.root),
            "images": len(self.samples),
            "classes": len(self.classes),
            "fingerprint": self.fingerprint(),
            "ground_truth": None if self.ground_truth is None else str(self.ground_truth),
            "synthetic": self.synthetic,
            "labels": "imagenet-1k" if self.class_names is None else "checkpoint",
        }

    @property
    def synthetic(self) -> bool:
        """True for data written by ``make_synthetic_dataset`` (accuracy on it means nothing)."""
        return bool(self.samples) and all(s.image_id.startswith(SYNTHETIC_PREFIX) for s in self.samples)


# --------------------------------------------------------------------------------------------------
# Opening a dataset


def open_dataset(path: str | os.PathLike, layout: str = "auto", ground_truth: str | os.PathLike | None = None) -> ImageNetDataset:
    """Read a validation set in ``layout`` (``auto`` detects it). Raises ``DatasetError`` with what to do."""
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetError(
            f"dataset folder {root} does not exist; pass --data DIR with the ImageNet validation images "
            f"(synset folders n01440764/..., or a flat folder with {GROUND_TRUTH_CSV})"
        )
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder; pass the folder that holds the validation images")
    gt = None if ground_truth is None else Path(ground_truth).expanduser()
    if layout == "auto":
        layout = detect_layout(root, gt)
    if layout == "hf":
        dataset = _open_hf(root)
    elif layout == "folder":
        dataset = _open_folder(root)
    else:
        dataset = _open_flat(root, gt)
    if not dataset.samples:
        raise DatasetError(f"{root} holds no images; pass the folder with the validation images")
    return dataset


def detect_layout(root: Path, ground_truth: Path | None = None) -> str:
    """``folder``, ``flat`` or ``hf`` for ``root``; raises ``DatasetError`` when it is none of them."""
    if _looks_like_hf(root):
        return "hf"
    subdirs, images = scan_folder(root)
    populated = [d for d in subdirs if has_images(d)]
    if populated and (not images or all(SYNSET_PATTERN.match(d.name) for d in populated)):
        return "folder"
    if images:
        return "flat"
    if ground_truth is not None:
        return "flat"
    split_folders = sorted(d.name for d in subdirs if d.name.lower() in {"val", "validation", "train", "test"})
    if split_folders:
        target = "val" if "val" in split_folders else split_folders[0]
        raise DatasetError(
            f"{root} holds split folders ({', '.join(split_folders)}) but no images; pass the validation folder itself: --data {root / target}"
        )
    if not subdirs:
        raise DatasetError(
            f"{root} is empty; put the validation images there (synset folders n01440764/... from valprep.sh, "
            f"or the flat ILSVRC2012_val_*.JPEG files with {GROUND_TRUTH_CSV})"
        )
    raise DatasetError(
        f"no images found in {root} or its sub-folders (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
        "pass the folder that holds the validation images"
    )


def scan_folder(root: Path) -> tuple[list[Path], list[Path]]:
    subdirs, images = [], []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if is_folder_entry(entry):
                subdirs.append(Path(entry.path))
            elif is_image_entry(entry):
                images.append(Path(entry.path))
    return sorted(subdirs), sorted(images)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def is_image_entry(entry: os.DirEntry) -> bool:
    """An image file (through symlinks); False for an entry that cannot be followed (a symlink loop: ELOOP)."""
    try:
        return is_image_name(entry.name) and entry.is_file()
    except OSError:
        return False


def is_folder_entry(entry: os.DirEntry) -> bool:
    """A folder (through symlinks); False for an entry that cannot be followed (a symlink loop: ELOOP)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def has_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(is_image_entry(entry) for entry in entries)
    except OSError:
        return False


def _synset_index() -> dict[str, int]:
    return {synset: index for index, synset in enumerate(imagenet_synsets())}


def quote_examples(names) -> str:
    names = sorted(names, key=lambda n: (len(n), n))
    shown = ", ".join(names[:_EXAMPLES])
    return shown + (", ..." if len(names) > _EXAMPLES else "")


def _refuse_numbered(root: Path, what: str, examples: str) -> DatasetError:
    return DatasetError(
        f"{root}: {what} are numbers ({examples}), which cannot be mapped safely onto the model's classes: the heads "
        "use sorted synset ids, and the devkit's ILSVRC2012_ID numbering (1..1000) is a different order; use synset "
        f"folders (n01440764/..., e.g. from valprep.sh) or {GROUND_TRUTH_CSV}"
    )


# -- class folders ---------------------------------------------------------------------------------


def _open_folder(root: Path) -> ImageNetDataset:
    subdirs, loose = scan_folder(root)
    if not subdirs:
        raise DatasetError(f"{root} has no class sub-folders; use --layout flat for a folder of images with {GROUND_TRUTH_CSV}")
    index = _synset_index()
    names = [d.name for d in subdirs]
    unknown = [n for n in names if n not in index]
    if unknown:
        populated_unknown = [n for n in unknown if has_images(root / n)]
        if not populated_unknown:  # empty stray folders (e.g. an output folder) do not matter
            subdirs = [d for d in subdirs if d.name in index]
        else:
            _refuse_class_folders(root, populated_unknown, len(names))
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for folder in subdirs:
        label = index[folder.name]
        with os.scandir(folder) as entries:
            for entry in entries:
                if not is_image_entry(entry):
                    continue
                image_id = os.path.splitext(entry.name)[0]
                if image_id in seen:
                    raise DatasetError(
                        f"{root}: image {image_id} is in two class folders ({seen[image_id]} and {folder.name}); "
                        "each image must be in exactly one synset folder"
                    )
                seen[image_id] = folder.name
                samples.append(Sample(image_id, entry.path, label))
    samples.sort()
    notes = []
    if loose:
        notes.append(f"ignored {len(loose)} image(s) directly in {root} (outside the class folders)")
    return ImageNetDataset("folder", root, samples, notes=notes)


def _refuse_class_folders(root: Path, unknown: list[str], total: int) -> None:
    if all(name.isdigit() for name in unknown):
        raise _refuse_numbered(root, "the class folder names", quote_examples(unknown))
    if all(SYNSET_PATTERN.match(name) for name in unknown):
        raise DatasetError(
            f"{root}: {len(unknown)} folder(s) are synset ids that are not among the 1000 ImageNet-1k classes "
            f"({quote_examples(unknown)}); remove them (ImageNet-21k or a typo?) or pass a folder with ImageNet-1k classes only"
        )
    names = {short_name(name).lower() for name in imagenet_class_names()}
    looks_like_names = sum(name.replace("_", " ").lower() in names for name in unknown) > 0
    if looks_like_names or len(unknown) == total:
        raise DatasetError(
            f"{root}: class folders must be named by WordNet synset id (n01440764/...), not {quote_examples(unknown)}: "
            "class names are ambiguous (two classes are called 'crane') and their order is not the heads' order; "
            "rename the folders to synset ids (e.g. with valprep.sh)"
        )
    raise DatasetError(
        f"{root}: {len(unknown)} sub-folder(s) are not ImageNet-1k synset ids ({quote_examples(unknown)}); "
        "move them out of the dataset folder"
    )


# -- flat folder + LOC_val_solution.csv -------------------------------------------------------------


def _open_flat(root: Path, ground_truth: Path | None) -> ImageNetDataset:
    _, images = scan_folder(root)
    if not images:
        raise DatasetError(
            f"{root} has no image files directly in it; for synset sub-folders use --layout folder (or auto)"
        )
    gt = ground_truth or _find_ground_truth(root)
    labels = read_ground_truth(gt)
    samples: list[Sample] = []
    unlabelled: list[str] = []
    for path in images:
        image_id = path.stem
        if image_id not in labels:
            unlabelled.append(image_id)
            continue
        samples.append(Sample(image_id, str(path), labels[image_id]))
    if unlabelled:
        raise DatasetError(
            f"{len(unlabelled)} image(s) in {root} have no row in {gt} ({quote_examples(unlabelled)}); "
            "pass the ground truth that covers these images (--ground-truth FILE) or remove them"
        )
    samples.sort()
    return ImageNetDataset("flat", root, samples, ground_truth=gt)


def _find_ground_truth(root: Path) -> Path:
    candidates = [root / GROUND_TRUTH_CSV, root.parent / GROUND_TRUTH_CSV]
    candidates += sorted(p for p in root.glob("*.csv") if p not in candidates)
    for candidate in candidates:
        if candidate.is_file() and _is_loc_csv(candidate):
            return candidate
    devkit = [
        root / DEVKIT_GROUND_TRUTH,
        root.parent / DEVKIT_GROUND_TRUTH,
        root.parent / "ILSVRC2012_devkit_t12" / "data" / DEVKIT_GROUND_TRUTH,
    ]
    for candidate in devkit:
        if candidate.is_file():
            raise _refuse_devkit(candidate)
    raise DatasetError(
        f"{root} is a flat folder of images but has no ground truth; put {GROUND_TRUTH_CSV} (ImageId,PredictionString) "
        "in it or its parent, pass --ground-truth FILE, or sort the images into synset folders with valprep.sh"
    )


def _refuse_devkit(path: Path) -> DatasetError:
    return DatasetError(
        f"{path} uses the devkit's ILSVRC2012_ID numbering, a different class order from the model's sorted synset ids; "
        f"use {GROUND_TRUTH_CSV} (ImageId,PredictionString) instead, or sort the images into synset folders with valprep.sh"
    )


def _is_loc_csv(path: Path) -> bool:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        return False
    return {"ImageId", "PredictionString"} <= {column.strip() for column in header}


def read_ground_truth(path: Path) -> dict[str, int]:
    """``LOC_val_solution.csv`` -> {image id: class index in sorted-synset order}."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"ground-truth file {path} does not exist; pass the path of {GROUND_TRUTH_CSV}")
    if path.name == DEVKIT_GROUND_TRUTH or (path.suffix.lower() == ".txt" and _looks_numeric_lines(path)):
        raise _refuse_devkit(path)
    if not _is_loc_csv(path):
        raise DatasetError(
            f"{path} is not in the {GROUND_TRUTH_CSV} layout (header ImageId,PredictionString, first token = synset id); "
            "pass that file, or sort the images into synset folders with valprep.sh"
        )
    index = _synset_index()
    labels: dict[str, int] = {}
    numeric: list[str] = []
    unknown: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            image_id = (row.get("ImageId") or "").strip()
            tokens = (row.get("PredictionString") or "").split()
            if not image_id:
                continue
            if not tokens:
                raise DatasetError(f"{path}: image {image_id} has an empty PredictionString; its first token must be the synset id")
            synset = tokens[0]
            if synset not in index:
                (numeric if synset.isdigit() else unknown).append(synset)
                continue
            label = index[synset]
            if labels.setdefault(image_id, label) != label:
                raise DatasetError(f"{path}: image {image_id} is listed with two different synsets; fix the ground-truth file")
    if numeric:
        raise _refuse_numbered(path, "the labels in PredictionString", quote_examples(set(numeric)))
    if unknown:
        raise DatasetError(
            f"{path}: {len(unknown)} row(s) name synsets that are not ImageNet-1k classes ({quote_examples(set(unknown))}); "
            "pass the ImageNet-1k (ILSVRC2012) ground truth"
        )
    if not labels:
        raise DatasetError(f"{path} has no rows; pass the complete {GROUND_TRUTH_CSV}")
    return labels


def _looks_numeric_lines(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for _, line in zip(range(20), handle) if line.strip()]
    except OSError:
        return False
    return bool(lines) and all(line.isdigit() for line in lines)


# -- Hugging Face imagenet-1k ---------------------------------------------------------------------


def _looks_like_hf(root: Path) -> bool:
    if (root / "dataset_dict.json").is_file() or ((root / "state.json").is_file() and (root / "dataset_info.json").is_file()):
        return True
    return bool(_parquet_files(root))


def _parquet_files(root: Path) -> list[Path]:
    files = sorted(root.glob("*.parquet")) + sorted(root.glob("data/*.parquet"))
    validation = [f for f in files if f.name.startswith("validation")]
    return validation or files


def _import_datasets():
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError:
        raise DatasetError(
            "reading a Hugging Face dataset copy needs the optional `datasets` package: pip install datasets "
            "(or use a class-folder copy of the validation set)"
        ) from None
    return datasets


def _open_hf(root: Path) -> ImageNetDataset:
    datasets = _import_datasets()
    notes: list[str] = []
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        loaded = datasets.load_from_disk(str(root))
        if isinstance(loaded, datasets.DatasetDict):
            if "validation" not in loaded:
                raise DatasetError(f"{root} has splits {', '.join(loaded)} but no 'validation'; pass the validation split")
            loaded = loaded["validation"]
    else:
        files = _parquet_files(root)
        if not files:
            raise DatasetError(f"{root} has no *.parquet files; pass a save_to_disk folder or the parquet files of imagenet-1k")
        loaded = datasets.load_dataset("parquet", data_files={"validation": [str(f) for f in files]}, split="validation")
        notes.append(f"read {len(files)} parquet file(s)")
    features = loaded.features
    if "image" not in features or "label" not in features:
        raise DatasetError(f"{root}: expected columns 'image' and 'label' (the imagenet-1k layout), found {', '.join(features)}")
    label_feature = features["label"]
    names = getattr(label_feature, "names", None)
    if not names or len(names) != NUM_CLASSES:
        raise DatasetError(
            f"{root}: the 'label' column is not a 1000-class ClassLabel, so its order cannot be checked; "
            "use the imagenet-1k dataset as published (labels in sorted-synset order)"
        )
    if not (names[0].lower().startswith("tench") and names[-1].lower().startswith("toilet tissue")):
        raise DatasetError(
            f"{root}: label 0 is {names[0]!r} and label 999 {names[-1]!r}, but the model's order starts with 'tench' and ends "
            "with 'toilet tissue' (sorted synset ids); use the imagenet-1k dataset as published"
        )
    if getattr(loaded, "_indices", None) is not None:  # a select()/shuffle() view: make row i = table row i
        loaded = loaded.flatten_indices()
    loaded = loaded.cast_column("image", datasets.Image(decode=False))
    labels = _hf_column(loaded, "label")
    if any(label < 0 for label in labels):
        raise DatasetError(f"{root}: some labels are -1 (the unlabelled test split); pass the validation split")
    paths = _hf_image_paths(loaded)
    index = _synset_index()
    samples: list[Sample] = []
    mismatched: list[str] = []
    for row, label in enumerate(labels):
        image_id = f"hf-validation-{row:05d}"
        path = paths[row] if paths else None
        if path:
            match = HF_FILE_PATTERN.match(Path(path).stem)
            if match:
                image_id = match["id"]
                if index.get(match["synset"]) != label:
                    mismatched.append(Path(path).name)
            else:
                image_id = Path(path).stem
        samples.append(Sample(image_id, row, int(label)))
    if mismatched:
        raise DatasetError(
            f"{root}: {len(mismatched)} image(s) carry a synset in their file name that disagrees with their label "
            f"({quote_examples(mismatched)}); the labels are not in sorted-synset order, so this copy cannot be used"
        )
    if len({s.image_id for s in samples}) != len(samples):
        samples = [Sample(f"hf-validation-{s.source:05d}", s.source, s.label) for s in samples]
    samples.sort()
    return ImageNetDataset("hf", root, samples, notes=notes, _hf=loaded)


def _hf_column(dataset, name: str) -> list:
    table = dataset.data  # arrow table (memory-mapped): reading one column does not touch the images
    return table.column(name).to_pylist()


def _hf_image_paths(dataset) -> list[str | None] | None:
    try:
        column = dataset.data.column("image")
        paths: list[str | None] = []
        for chunk in column.chunks:
            paths.extend(chunk.field("path").to_pylist())
        return paths
    except Exception:  # a layout without a path field: ids fall back to row numbers
        return None


# --------------------------------------------------------------------------------------------------
# Synthetic data for tests, benchmarks and notebooks without ImageNet


def make_synthetic_dataset(
    root: str | os.PathLike,
    num_classes: int = 10,
    images_per_class: int = 4,
    seed: int = 0,
    layout: str = "folder",
    corrupt_images: int = 0,
) -> Path:
    """Write a small, deterministic ImageNet-like dataset and return its folder.

    Classes are real synsets spread over the 1000 (always including index 0, "tench"); images are
    JPEGs of varied sizes and aspect ratios (shapes on a class-tinted gradient), named
    ``synthetic_val_00000001.JPEG`` ... with classes interleaved, like the real validation files.
    ``layout="flat"`` writes all images in ``root`` plus ``LOC_val_solution.csv``.
    ``corrupt_images`` extra files carry a JPEG extension but truncated data.
    Accuracy on this data means nothing: it only exercises the machinery.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    if layout not in ("folder", "flat"):
        raise ValueError(f"layout must be 'folder' or 'flat', not {layout!r}")
    if not 1 <= num_classes <= NUM_CLASSES or images_per_class < 1:
        raise ValueError("need 1..1000 classes and at least one image per class")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    synsets = imagenet_synsets()
    rng = np.random.default_rng(seed)
    class_indices = sorted({int(round(i)) for i in np.linspace(0, NUM_CLASSES - 1, num_classes)})
    labels = [c for c in class_indices for _ in range(images_per_class)]
    order = rng.permutation(len(labels))
    sizes = [(500, 375), (375, 500), (500, 333), (640, 480), (320, 320), (480, 360)]
    rows = []
    for number, position in enumerate(order, start=1):
        label = labels[position]
        image_id = f"{SYNTHETIC_PREFIX}{number:08d}"
        width, height = sizes[int(rng.integers(len(sizes)))]
        image = _synthetic_image(rng, label, width, height, Image, ImageDraw)
        folder = root if layout == "flat" else root / synsets[label]
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{image_id}.JPEG", format="JPEG", quality=88)
        rows.append((image_id, synsets[label], width, height))
    for extra in range(corrupt_images):
        label = class_indices[extra % len(class_indices)]
        image_id = f"{SYNTHETIC_PREFIX}{len(labels) + extra + 1:08d}"
        folder = root if layout == "flat" else root / synsets[label]
        folder.mkdir(exist_ok=True)
        buffer = io.BytesIO()
        _synthetic_image(rng, label, 200, 150, Image, ImageDraw).save(buffer, format="JPEG")
        (folder / f"{image_id}.JPEG").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])  # truncated
        rows.append((image_id, synsets[label], 200, 150))
    if layout == "flat":
        with (root / GROUND_TRUTH_CSV).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ImageId", "PredictionString"])
            for image_id, synset, width, height in sorted(rows):
                writer.writerow([image_id, f"{synset} 0 0 {width - 1} {height - 1} "])
    return root


def _synthetic_image(rng, label: int, width: int, height: int, Image, ImageDraw):
    import numpy as np

    hue = (label * 0.618034) % 1.0
    base = np.array([np.sin(2 * np.pi * (hue + k / 3)) * 0.5 + 0.5 for k in range(3)]) * 200 + 30
    ramp = np.linspace(0.6, 1.2, width)[None, :, None] * np.linspace(1.1, 0.7, height)[:, None, None]
    noise = rng.normal(0, 12, size=(height, width, 3))
    pixels = np.clip(base[None, None, :] * ramp + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        x1, y1 = x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return image
