"""Image -> ``pixel_values`` preprocessing.

``official`` is the DeiT evaluation recipe (shorter side to 256 with PIL bicubic, centre crop 224,
ImageNet mean/std): the one behind the published accuracies. ``hf`` uses the checkpoint's own image
processor, which for the distilled checkpoints squashes the image to a 256x256 square first
(tiny-distilled: 224x224, so no crop). They differ on non-square images; both are reported.
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
    """The 224x224 view the model sees under the official recipe (shorter side 256, bicubic, centre crop)."""
    width, height = image.size
    if width <= height:  # torchvision Resize(int) semantics: shorter side exact, longer side truncated
        size = (RESIZE_SIZE, int(RESIZE_SIZE * height / width))
    else:
        size = (int(RESIZE_SIZE * width / height), RESIZE_SIZE)
    resized = image.resize(size, Image.Resampling.BICUBIC)
    left = (resized.width - CROP_SIZE) // 2
    top = (resized.height - CROP_SIZE) // 2
    return resized.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


def official_transform(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor [3, 224, 224]."""
    array = np.asarray(resize_and_crop(image), dtype=np.float32) / 255.0
    normalised = (array - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy())


def load_image_processor(model_name_or_path: str):
    """The checkpoint's own image processor, PIL-based (the fast torch one resizes differently); picklable."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(model_name_or_path, use_fast=False)


def hf_transform_for(model_name_or_path: str):
    """The checkpoint's own image processor as a ``PIL image -> [3, 224, 224]`` function."""
    processor = load_image_processor(model_name_or_path)

    def transform(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    return transform


def preprocess(images: list[Image.Image]) -> torch.Tensor:
    """A batch with the official transform: [B, 3, 224, 224]."""
    return torch.stack([official_transform(image) for image in images])
