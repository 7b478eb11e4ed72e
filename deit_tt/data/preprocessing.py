"""Image -> ``pixel_values`` preprocessing.

``official`` is the DeiT evaluation recipe, torchvision's ``Resize(256, BICUBIC)`` +
``CenterCrop(224)`` + ``ToTensor`` + ``Normalize(ImageNet mean/std)`` on a PIL image: the one behind
the published accuracies. It is reproduced here without torchvision, identical to it to the last
bit for every image size (tests/data/test_preprocessing.py compares the two). ``hf`` uses the
checkpoint's own image processor, which for the distilled checkpoints squashes the image to a
256x256 square first (tiny-distilled: 224x224, so no crop). They differ on non-square images; both
are reported.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SIZE = 224
RESIZE_SIZE = 256  # int(224 / 0.875), DeiT's eval crop ratio
PREPROCESSING_MODES = ("official", "hf")


def resize_and_crop(image: Image.Image) -> Image.Image:
    """The 224x224 view the model sees under the official recipe (shorter side 256, bicubic, centre crop).

    torchvision's geometry: ``Resize(int)`` makes the shorter side exact and truncates the longer one
    to ``int(256 * long / short)``; ``CenterCrop`` offsets by ``round((size - 224) / 2)``, which
    rounds halves to even (an odd margin of 119 pixels puts 60 on the left, not 59). The resized
    image is never smaller than the crop, so CenterCrop's padding never applies.
    """
    width, height = image.size
    if width <= height:
        size = (RESIZE_SIZE, int(RESIZE_SIZE * height / width))
    else:
        size = (int(RESIZE_SIZE * width / height), RESIZE_SIZE)
    resized = image.resize(size, Image.Resampling.BICUBIC)
    left = round((resized.width - CROP_SIZE) / 2.0)
    top = round((resized.height - CROP_SIZE) / 2.0)
    return resized.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


def official_transform(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor [3, 224, 224], in ToTensor + Normalize's float32 arithmetic:
    x / 255, then (x - mean) / std, each step rounded to float32."""
    return normalise(torch.from_numpy(np.array(resize_and_crop(image), dtype=np.uint8)).permute(2, 0, 1).contiguous())


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32, ToTensor + Normalize: x / 255, then (x - mean) / std."""
    scaled = pixels.to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)
    return scaled.sub_(mean).div_(std)


def load_image_processor(model_name_or_path: str):
    """The checkpoint's own image processor, PIL-based (the fast torch one resizes differently); picklable.
    A built-in checkpoint (``shapes:tiny``) has it in its shipped folder."""
    from transformers import AutoImageProcessor

    from deit_tt.checkpoints.builtin import built_in_folder

    source = built_in_folder(model_name_or_path) or model_name_or_path
    return AutoImageProcessor.from_pretrained(str(source), use_fast=False)


def hf_transform_for(model_name_or_path: str):
    """The checkpoint's own image processor as a ``PIL image -> [3, 224, 224]`` function."""
    processor = load_image_processor(model_name_or_path)

    def transform(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    return transform


def preprocess(images: list[Image.Image]) -> torch.Tensor:
    """A batch with the official transform: [B, 3, 224, 224]."""
    return torch.stack([official_transform(image) for image in images])
