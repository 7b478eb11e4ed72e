"""``official`` or ``hf`` preprocessing of evaluation images, described exactly for the results file."""

from __future__ import annotations

import torch

from deit_tt.evaluation.errors import EvaluationError
from deit_tt.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PREPROCESSING_MODES, load_image_processor, official_transform

# The Hub preprocessor_config.json of facebook/deit-base-distilled-patch16-224: used for ``hf``
# preprocessing of random:* checkpoints, which have no processor of their own.
HUB_PROCESSOR_SOURCE = "facebook/deit-base-distilled-patch16-224"
HUB_PROCESSOR_VALUES = {
    "size": {"height": 256, "width": 256},
    "crop_size": {"height": 224, "width": 224},
    "resample": 3,  # PIL bicubic
    "do_center_crop": True,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
}


class Preprocessor:
    """``official`` (DeiT's eval recipe) or ``hf`` (the checkpoint's own image processor), picklable for workers.

    ``description`` says exactly what is applied; it is stored in the results file and the summary. Images
    are decoded as stored, EXIF orientation not applied (``ImageNetDataset.load`` decides it, as torchvision's
    loader does).
    For ``hf`` the processor is loaded once (``preprocessing.load_image_processor``) and sent to the
    decoding workers as an object, so they never look it up again (no repeated hub requests offline).
    """

    def __init__(self, mode: str = "official", model_name: str | None = None):
        if mode not in PREPROCESSING_MODES:
            raise EvaluationError(f"unknown preprocessing {mode!r}; use one of {', '.join(PREPROCESSING_MODES)}")
        self.mode = mode
        self.model_name = model_name
        self._processor = None
        if mode == "official":
            self.description = (
                "official: shorter side to 256 (PIL bicubic), centre crop 224, ImageNet mean/std, EXIF orientation not "
                "applied (DeiT's eval recipe, identical to torchvision's, its loader included)"
            )
            return
        if not model_name:
            raise EvaluationError("--preprocess hf needs a model whose image processor to use")
        self._processor = self._load_processor()
        self.description = _describe_processor(self._processor, self._origin())

    @property
    def uses_fallback(self) -> bool:
        return self.mode == "hf" and str(self.model_name).startswith("random:")

    def _origin(self) -> str:
        if self.uses_fallback:
            return (
                f"{self.model_name} has no image processor; using DeiTImageProcessorPil with the Hub values of "
                f"{HUB_PROCESSOR_SOURCE}"
            )
        return f"the image processor of {self.model_name}"

    def _load_processor(self):
        if self.uses_fallback:
            from transformers.models.deit import DeiTImageProcessorPil

            return DeiTImageProcessorPil(**HUB_PROCESSOR_VALUES)
        try:
            return load_image_processor(self.model_name)
        except (OSError, ValueError) as error:
            raise EvaluationError(
                f"cannot load the image processor of {self.model_name} ({type(error).__name__}); "
                "use --preprocess official, or a checkpoint folder with preprocessor_config.json"
            ) from None

    def __call__(self, image) -> torch.Tensor:
        if self.mode == "official":
            return official_transform(image)
        return self._processor(images=image, return_tensors="pt")["pixel_values"][0]


def _describe_processor(processor, origin: str) -> str:
    resample = getattr(processor, "resample", None)
    resample_name = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}.get(
        int(resample) if resample is not None else -1, str(resample)
    )
    size = getattr(processor, "size", None) or {}
    if "height" in size:
        resize = f"squash to {size['height']}x{size['width']}"
    elif "shortest_edge" in size:
        resize = f"shorter side to {size['shortest_edge']}"
    else:
        resize = f"resize {size}"
    crop = getattr(processor, "crop_size", None) or {}
    crop_text = f"centre crop {crop.get('height')}x{crop.get('width')}" if getattr(processor, "do_center_crop", False) else "no crop"
    mean = [round(float(m), 3) for m in getattr(processor, "image_mean", [])]
    std = [round(float(s), 3) for s in getattr(processor, "image_std", [])]
    return f"hf: {origin}: {resize} ({resample_name}), {crop_text}, mean {mean}, std {std}, EXIF orientation not applied"
