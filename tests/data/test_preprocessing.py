"""The official recipe equals torchvision's DeiT evaluation transform to the bit, on every image size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from deit_tt.data.preprocessing import CROP_SIZE, IMAGENET_MEAN, IMAGENET_STD, RESIZE_SIZE, official_transform, resize_and_crop

# DeiT's eval transform (timm's create_transform(224, is_training=False, interpolation="bicubic", crop_pct=0.875)
# builds the same four steps).
TORCHVISION = transforms.Compose(
    [
        transforms.Resize(RESIZE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(CROP_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
)

# (width, height): tiny, around the crop and resize sizes, odd and even, portrait and landscape, elongated, huge.
# 343x256 and 256x343 leave an odd margin of 119 pixels, which torchvision splits 60 / 59 (round half to even).
SIZES = [
    (1, 1), (2, 3), (5, 2), (17, 31), (223, 224), (224, 224), (225, 224), (224, 225), (255, 257), (256, 256),
    (257, 256), (343, 256), (256, 343), (341, 256), (500, 375), (375, 500), (333, 499), (640, 427), (1001, 99),
    (99, 1001), (4000, 81), (6000, 4000), (3999, 6001),
]


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    generator = np.random.default_rng(seed)
    return Image.fromarray(generator.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_official_transform_equals_torchvision_exactly(width, height):
    image = noise_image(width, height, seed=width * 10007 + height)
    ours, reference = official_transform(image), TORCHVISION(image)
    assert ours.dtype == reference.dtype == torch.float32
    assert ours.shape == reference.shape == (3, CROP_SIZE, CROP_SIZE)
    assert (ours - reference).abs().max().item() == 0.0
    assert torch.equal(ours.view(torch.int32), reference.view(torch.int32))  # bit for bit, signs of zero included


def test_centre_crop_rounds_an_odd_margin_half_to_even():
    """343x256 needs no resize: the 119-pixel margin puts 60 columns on the left (not 59), as torchvision does."""
    image = noise_image(343, 256, seed=1)
    expected = np.asarray(image)[16 : 16 + CROP_SIZE, 60 : 60 + CROP_SIZE]
    assert np.array_equal(np.asarray(resize_and_crop(image)), expected)


def test_hf_preprocessing_of_a_built_in_checkpoint_uses_its_shipped_processor():
    from deit_tt.checkpoints.builtin import built_in_folder
    from deit_tt.evaluation import Preprocessor
    from transformers import AutoImageProcessor

    preprocessor = Preprocessor("hf", "shapes:tiny")
    shipped = AutoImageProcessor.from_pretrained(str(built_in_folder("shapes:tiny")), use_fast=False)
    image = Image.new("RGB", (300, 200), (30, 120, 220))
    assert torch.equal(preprocessor(image), shipped(images=image, return_tensors="pt")["pixel_values"][0])
    assert preprocessor.description.startswith("hf: the image processor of shapes:tiny: ")
