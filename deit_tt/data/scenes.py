"""Generated scenes: a deterministic, seeded data set of 224x224 images for training a DeiT-tiny on a CPU.

Each scene holds one object of one of ten texture classes, with a random silhouette, position, scale,
rotation and two random colours, on a cluttered background (a colour gradient, pixel noise and
small distractor strokes far smaller than any object). Every image is a pure function of
``(seed, split, index)``, so tests regenerate the same held-out images on the fly and nothing needs to be
shipped. The object's box is returned with each scene; objects stay inside the central region that the
official preprocessing (resize 256, centre crop 224) keeps.

    python -m deit_tt.data.scenes --out generated/scenes --train 6000 --val 500 --test 1000
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deit_tt.data.preprocessing import CROP_SIZE, RESIZE_SIZE

SCENE_SIZE = 224
# The class is the object's texture; its silhouette (disc, square, triangle, hexagon) is random. Textures are
# visible in every 16x16 patch the object covers, which is what lets a ViT trained from scratch learn them in
# minutes; every class is unchanged by a horizontal flip (diagonal stripes come in both directions).
SCENE_CLASSES = (
    "solid",
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "dots",
    "grid",
    "diagonal_grid",
    "rings",
    "speckle",
)
_SILHOUETTES = (0, 3, 4, 6)  # corners; 0 is a disc
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SEED = 13
# the official preprocessing keeps [16, 208) of a 224 image (resize to 256, crop 224): objects stay inside.
_MARGIN = 18
_SIZE_RANGE = (64, 132)  # object diameter in pixels; distractors are at most 16 pixels long
# One scene per class, committed in the repository (data/scenes): what `make demo` classifies offline.
BUNDLED_SCENES = Path(__file__).resolve().parents[2] / "data" / "scenes"


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    label: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in scene pixels (x1, y1 exclusive)

    @property
    def class_name(self) -> str:
        return SCENE_CLASSES[self.label]


def render_scene(index: int, split: str = "train", seed: int = DEFAULT_SEED) -> Scene:
    """Scene number ``index`` of ``split``; class ``index % 10``, so every split is balanced."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    label = index % len(SCENE_CLASSES)
    image, background = _cluttered_background(rng)
    size = int(rng.integers(*_SIZE_RANGE))
    cx = int(rng.integers(_MARGIN + size // 2, SCENE_SIZE - _MARGIN - size // 2))
    cy = int(rng.integers(_MARGIN + size // 2, SCENE_SIZE - _MARGIN - size // 2))
    colour = _contrasting_colour(rng, background)
    mask = _silhouette(int(rng.choice(_SILHOUETTES)), size, float(rng.uniform(0, 2 * math.pi)))
    fill = _texture(SCENE_CLASSES[label], colour, _contrasting_colour(rng, colour), size, rng)
    x0, y0 = cx - size // 2, cy - size // 2
    image.paste(fill, (x0, y0), mask)
    bbox = mask.getbbox() or (0, 0, size, size)
    return Scene(image, label, (x0 + bbox[0], y0 + bbox[1], x0 + bbox[2], y0 + bbox[3]))


def scenes(count: int, split: str = "test", seed: int = DEFAULT_SEED, start: int = 0) -> list[Scene]:
    return [render_scene(index, split, seed) for index in range(start, start + count)]


def write_examples(folder: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Test scenes 0-9 (one per class, class ``index % 10``) as ``folder/<class>.png``: the bundled scenes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for scene in scenes(len(SCENE_CLASSES), "test", seed):
        paths.append(folder / f"{scene.class_name}.png")
        scene.image.save(paths[-1])
    return paths


def box_in_model_view(box: tuple[int, int, int, int], scene_size: int = SCENE_SIZE) -> tuple[float, float, float, float]:
    """A scene box in the coordinates of the 224x224 view the official preprocessing produces."""
    scale = RESIZE_SIZE / scene_size
    offset = (scene_size * scale - CROP_SIZE) / 2
    return tuple(min(max(value * scale - offset, 0.0), float(CROP_SIZE)) for value in box)


def write_splits(root: Path, counts: dict[str, int], seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Write ``root/<split>/<class>/<split>-<index>.png`` and ``root/<split>/boxes.json`` ({file: box})."""
    for split, count in counts.items():
        boxes = {}
        for directory in SCENE_CLASSES:
            (root / split / directory).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            scene = render_scene(index, split, seed)
            relative = f"{scene.class_name}/{split}-{index:05d}.png"
            scene.image.save(root / split / relative)
            boxes[relative] = list(scene.box)
        (root / split / "boxes.json").write_text(json.dumps(boxes, indent=0) + "\n")
    return counts


def _cluttered_background(rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    start, end = rng.uniform(40, 215, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:SCENE_SIZE, 0:SCENE_SIZE] / (SCENE_SIZE - 1)
    t = (math.cos(angle) * xs + math.sin(angle) * ys + 1.5) / 3
    pixels = start * (1 - t[..., None]) + end * t[..., None]
    pixels += rng.normal(0, 10, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(20, 40))):
        x, y = rng.uniform(0, SCENE_SIZE, size=2)
        dx, dy = rng.uniform(-8, 8, size=2)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=colour, width=int(rng.integers(1, 4)))
        else:
            r = rng.uniform(2, 6)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return image, (start + end) / 2


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray | tuple) -> tuple[int, int, int]:
    """A random colour at least 110 (Euclidean, RGB) away from ``against``."""
    reference = np.asarray(against, dtype=float)
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(colour - reference) >= 110:
            return tuple(int(c) for c in colour)


def _silhouette(corners: int, size: int, angle: float) -> Image.Image:
    """A disc (``corners == 0``) or regular polygon as an L-mode mask, drawn at 4x and downsampled (antialiased)."""
    big = size * 4
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if corners == 0:
        draw.ellipse([0, 0, big - 1, big - 1], fill=255)
    else:
        r = big / 2
        draw.polygon([(r + r * math.cos(angle + 2 * math.pi * k / corners), r + r * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)], fill=255)
    return mask.resize((size, size), Image.Resampling.LANCZOS)


def _texture(name: str, colour: tuple, second: tuple, size: int, rng: np.random.Generator) -> Image.Image:
    """``size x size`` pixels of the class's pattern in two colours, with a random period and phase."""
    period = int(rng.integers(7, 11))
    ys, xs = np.mgrid[0:size, 0:size] + rng.integers(0, period, size=2)[:, None, None]
    line = max(2, period // 3)
    if name == "solid":
        second_colour = np.zeros((size, size), dtype=bool)
    elif name == "horizontal_stripes":
        second_colour = (ys // (period // 2)) % 2 == 1
    elif name == "vertical_stripes":
        second_colour = (xs // (period // 2)) % 2 == 1
    elif name == "diagonal_stripes":
        second_colour = (((xs + ys) if rng.random() < 0.5 else (xs - ys)) // (period // 2)) % 2 == 1
    elif name == "checkerboard":
        second_colour = ((xs // (period // 2)) + (ys // (period // 2))) % 2 == 1
    elif name == "dots":
        second_colour = (xs % period - period / 2) ** 2 + (ys % period - period / 2) ** 2 <= (period / 3.2) ** 2
    elif name == "grid":
        second_colour = (xs % period < line) | (ys % period < line)
    elif name == "diagonal_grid":
        second_colour = ((xs + ys) % period < line) | ((xs - ys) % period < line)
    elif name == "rings":
        second_colour = (np.hypot(xs - xs.mean(), ys - ys.mean()) // (period // 2)) % 2 == 1
    elif name == "speckle":
        second_colour = np.kron(rng.random(((size + 1) // 2, (size + 1) // 2)) < 0.5, np.ones((2, 2), dtype=bool))[:size, :size]
    else:
        raise ValueError(f"unknown scene class {name!r}")
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = colour
    pixels[second_colour] = second
    return Image.fromarray(pixels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write generated scenes as class folders plus boxes.json per split.")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    counts = write_splits(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.seed)
    print(f"wrote {counts} scenes of {len(SCENE_CLASSES)} classes to {args.out}")


if __name__ == "__main__":
    main()
