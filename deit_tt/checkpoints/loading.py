"""Loading a DeiT checkpoint: a Hugging Face hub id, a ``save_pretrained`` directory, ``random:<size>``, or a
checkpoint built into the package (``shapes:tiny``, ``deit_tt.checkpoints.builtin``).

``random:tiny|small|base`` builds the real architecture (12 layers, 1000 ImageNet labels, both heads)
with seeded random weights, so everything can run where the hub cannot be reached. Predictions from
such a model are meaningless; ``Checkpoint.is_random`` lets every report say so.

``save_offline_copy`` writes a hub checkpoint and its image processor to a folder for later offline use;
``parameter_listing`` / ``parameter_table`` list what a checkpoint is made of, by converter family.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import torch
from transformers import DeiTConfig, DeiTForImageClassification, DeiTForImageClassificationWithTeacher

from deit_tt.checkpoints.builtin import BUILT_IN_DESCRIPTIONS, BUILT_IN_MODELS, BUILT_IN_PREFIXES, built_in_folder
from deit_tt.errors import UserFacingError
from deit_tt.checkpoints.hub import hub_unreachable, resolve_model_name, unloadable_reason, unreachable_message
from deit_tt.checkpoints.labels import imagenet_class_names

RANDOM_SEED = 0
RANDOM_INIT_VERSION = 2  # part of the identity of random checkpoints (and so of their conversion cache key)

# hidden size and heads of the three DeiT sizes; all have 12 layers, MLP ratio 4 and head size 64.
RANDOM_SIZES: dict[str, tuple[int, int]] = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


class CheckpointError(UserFacingError):
    """A checkpoint could not be found or loaded; the message says what to do."""


@dataclass
class Checkpoint:
    model: DeiTForImageClassification | DeiTForImageClassificationWithTeacher
    name: str  # what the user asked for
    identity: str  # stable fingerprint of the weights, used to key the conversion cache
    is_random: bool

    @property
    def config(self) -> DeiTConfig:
        return self.model.config

    @property
    def distilled(self) -> bool:
        return isinstance(self.model, DeiTForImageClassificationWithTeacher)

    @property
    def short_name(self) -> str:
        return self.name.rstrip("/").split("/")[-1]

    def describe(self) -> str:
        if self.is_random:
            kind = "RANDOM-INITIALISED weights (predictions and maps are meaningless)"
        else:
            kind = BUILT_IN_DESCRIPTIONS.get(self.name, "trained weights")
        return f"model: {self.name} | {kind}"


def load_checkpoint(model: str | None = None) -> Checkpoint:
    """Load ``model`` (default: ``settings.MODEL``, then facebook/deit-base-distilled-patch16-224) in fp32, eval mode.

    Attention is eager so that attention probabilities can be captured. When the hub cannot be reached,
    a hub id loads from the local cache without any request, or fails at once (``deit_tt.checkpoints.hub``).
    """
    name = resolve_model_name(model)
    if name.startswith("random:"):
        return random_checkpoint(name.removeprefix("random:"))
    built_in = built_in_folder(name)
    if built_in is not None:
        return _load_folder(built_in, name)
    if name.startswith(BUILT_IN_PREFIXES):
        raise CheckpointError(f"unknown built-in model {name!r}; use one of {', '.join(BUILT_IN_MODELS)}")
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_folder(path, name)
    if path.suffix or name.startswith((".", "/", "~")):
        raise CheckpointError(f"checkpoint directory {name!r} does not exist; pass a folder written by save_pretrained")
    problem = unloadable_reason(name)
    if problem:
        raise CheckpointError(problem)
    return _load_pretrained(name, name, identity=None, local_files_only=hub_unreachable())


def save_offline_copy(model: str, directory: str | Path) -> Path:
    """Download hub checkpoint ``model`` and write it to ``directory`` with ``save_pretrained``: the model and its
    image processor, so that ``--model DIR`` (or ``settings.MODEL`` set to DIR) later runs without the hub. Returns the folder."""
    from transformers import AutoImageProcessor

    if model.startswith(("random:", *BUILT_IN_PREFIXES)) or Path(model).expanduser().is_dir():
        raise CheckpointError(f"{model!r} is not a hub id; only a hub checkpoint needs an offline copy")
    problem = unloadable_reason(model)
    if problem:
        raise CheckpointError(problem)
    target = Path(directory).expanduser()
    checkpoint = load_checkpoint(model)
    processor = AutoImageProcessor.from_pretrained(model, local_files_only=hub_unreachable())
    checkpoint.model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


def random_config(size: str) -> DeiTConfig:
    if size not in RANDOM_SIZES:
        raise CheckpointError(f"unknown random model size {size!r}; use random:tiny, random:small or random:base")
    hidden, heads = RANDOM_SIZES[size]
    names = imagenet_class_names()
    return DeiTConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_hidden_layers=12,
        intermediate_size=4 * hidden,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={},  # class names are not unique ("crane"); never map names to indices
        architectures=["DeiTForImageClassificationWithTeacher"],
        attn_implementation="eager",
    )


def random_checkpoint(size: str, seed: int = RANDOM_SEED) -> Checkpoint:
    model = random_model(random_config(size), seed)
    identity = f"random:{size}:seed{seed}:init-v{RANDOM_INIT_VERSION}:transformers-{version('transformers')}:torch-{version('torch')}"
    return Checkpoint(model, f"random:{size}", identity, is_random=True)


def random_model(config: DeiTConfig, seed: int = RANDOM_SEED) -> DeiTForImageClassificationWithTeacher:
    """An untrained DeiT of ``config``'s shape, initialised like ``random:<size>`` with ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DeiTForImageClassificationWithTeacher(config).eval()
        _make_every_parameter_observable(model)
    return model


def _make_every_parameter_observable(model: torch.nn.Module) -> None:
    """HF initialises biases and the CLS/distillation/position embeddings to 0 and LayerNorm to (1, 0).
    Random values make every parameter observable, so a comparison against Hugging Face catches a
    misplaced bias, token or LayerNorm parameter. (Bump RANDOM_INIT_VERSION when this changes.)"""
    embeddings = model.deit.embeddings
    with torch.no_grad():
        for token in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
            token.normal_(0.0, 0.02)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.add_(0.1 * torch.randn_like(module.weight))
                module.bias.normal_(0.0, 0.1)
            elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module.bias is not None:
                module.bias.normal_(0.0, 0.02)


def _load_folder(path: Path, name: str) -> Checkpoint:
    """A ``save_pretrained`` folder; a missing config or damaged weights are one line (transformers would
    build a default config, or raise from deep inside safetensors)."""
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{name} has no config.json, so it is not a checkpoint written by save_pretrained; pass such a folder")
    try:
        return _load_pretrained(str(path), name, _directory_fingerprint(path))
    except CheckpointError:
        raise
    except Exception as error:  # SafetensorError, mismatched shapes (RuntimeError), bad JSON (ValueError), ...
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise CheckpointError(
            f"{name} cannot be loaded ({type(error).__name__}: {reason}); the folder is damaged or incomplete: write it again with save_pretrained"
        ) from None


def _load_pretrained(source: str, name: str, identity: str | None, local_files_only: bool = False) -> Checkpoint:
    try:
        config = DeiTConfig.from_pretrained(source, local_files_only=local_files_only)
    except OSError as error:
        if identity is not None:  # a local folder: _load_folder says what is wrong with it
            raise
        raise CheckpointError(unreachable_message(name, type(error).__name__)) from None
    teacher = any("WithTeacher" in arch for arch in (config.architectures or []))
    model_class = DeiTForImageClassificationWithTeacher if teacher else DeiTForImageClassification
    try:
        model = model_class.from_pretrained(
            source, attn_implementation="eager", dtype=torch.float32, local_files_only=local_files_only
        ).eval()
    except OSError as error:
        if identity is not None:  # a local folder: _load_folder says what is wrong with it
            raise
        raise CheckpointError(unreachable_message(name, type(error).__name__)) from None
    if identity is None:
        identity = f"hub:{name}@{getattr(config, '_commit_hash', None) or 'unknown-revision'}"
    return Checkpoint(model, name, identity, is_random=False)


def _directory_fingerprint(path: Path) -> str:
    """Content hash of config and weight files, so a re-saved directory gets a new cache entry."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.suffix in {".json", ".safetensors", ".bin"})
    if not any(p.suffix in {".safetensors", ".bin"} for p in files):
        raise CheckpointError(f"{path} has no model weights (*.safetensors or *.bin); pass a folder written by save_pretrained")
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"dir:{path.resolve()}:{digest.hexdigest()[:16]}"


# --------------------------------------------------------------------------------------------------
# What a checkpoint is made of (notebook 01)


def parameter_listing(checkpoint) -> pd.DataFrame:
    """One row per Hugging Face parameter: name, converter family (``deit_tt.model.conversion.family_of``), shape, parameters."""
    from deit_tt.model.conversion import family_of  # conversion needs ttnn; loading a checkpoint does not

    rows = [
        {"name": name, "family": family_of(name), "shape": tuple(p.shape), "parameters": p.numel()}
        for name, p in checkpoint.model.named_parameters()
    ]
    return pd.DataFrame(rows, columns=["name", "family", "shape", "parameters"])


def parameter_table(checkpoint) -> pd.DataFrame:
    """Parameters grouped by converter family, largest share first, with a total row.

    Columns: family, tensors, parameters, share_percent, fp32_mib, example (one member's name and shape).
    """
    listing = parameter_listing(checkpoint)
    total = int(listing["parameters"].sum())
    rows = []
    for family, members in listing.groupby("family", sort=False):
        first = members.iloc[0]
        count = int(members["parameters"].sum())
        rows.append(
            {
                "family": family,
                "tensors": len(members),
                "parameters": count,
                "share_percent": 100.0 * count / total,
                "fp32_mib": count * 4 / 2**20,
                "example": f"{first['name']} {tuple(first['shape'])}",
            }
        )
    table = pd.DataFrame(rows).sort_values("parameters", ascending=False, ignore_index=True)
    summary = {
        "family": "total",
        "tensors": len(listing),
        "parameters": total,
        "share_percent": 100.0,
        "fp32_mib": total * 4 / 2**20,
        "example": "",
    }
    return pd.concat([table, pd.DataFrame([summary])], ignore_index=True)
