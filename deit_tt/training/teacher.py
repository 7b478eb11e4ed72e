"""The convnet teacher of the shapes student: five strided 3x3 convolutions and a linear classifier.

DeiT distils from a convnet because its inductive bias (locality, translation equivariance) is what a
ViT trained on little data lacks; this one is small enough (~0.3 M parameters) to train in a minute and
to ship beside the student.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

TEACHER_WIDTHS = (24, 48, 96, 128, 128)


class ShapesTeacher(nn.Module):
    def __init__(self, num_labels: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in TEACHER_WIDTHS:  # 224 -> 112 -> 56 -> 28 -> 14 -> 7
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(pixel_values).mean(dim=(2, 3)))


def save_teacher(teacher: ShapesTeacher, path: Path) -> None:
    state = {name: tensor.detach().to(torch.float16 if tensor.is_floating_point() else tensor.dtype).contiguous() for name, tensor in teacher.state_dict().items()}
    save_file(state, str(path), metadata={"num_labels": str(teacher.classifier.out_features)})


def load_teacher(path: Path) -> ShapesTeacher:
    """A saved teacher, float32, eval mode."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        num_labels = int(handle.metadata()["num_labels"])
    teacher = ShapesTeacher(num_labels)
    teacher.load_state_dict({name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in load_file(str(path)).items()})
    return teacher.eval()
