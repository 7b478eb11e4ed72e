"""Checkpoint loading: random sizes, save_pretrained folders, and the offline error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import DeiTForImageClassificationWithTeacher

from deit_tt.checkpoints.loading import CheckpointError, load_checkpoint, parameter_listing, parameter_table, random_checkpoint
from deit_tt.model.conversion import FAMILIES, family_of
from deit_tt.checkpoints.labels import imagenet_class_names, imagenet_synsets


@pytest.mark.parametrize("size, hidden, heads", [("tiny", 192, 3), ("small", 384, 6), ("base", 768, 12)])
def test_random_sizes_are_the_deit_architectures(size, hidden, heads):
    checkpoint = load_checkpoint(f"random:{size}")
    config = checkpoint.config
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (hidden, heads, 12)
    assert config.intermediate_size == 4 * hidden and config.num_labels == 1000
    assert checkpoint.distilled and checkpoint.is_random and "RANDOM" in checkpoint.describe()
    assert config.id2label[0].startswith("tench") and config.id2label[999].startswith("toilet tissue")


def test_random_weights_are_seeded_and_every_parameter_is_observable(tiny_checkpoint):
    again = random_checkpoint("tiny")
    assert again.identity == tiny_checkpoint.identity
    for (name, a), (_, b) in zip(tiny_checkpoint.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    embeddings = tiny_checkpoint.model.deit.embeddings
    layer = tiny_checkpoint.model.deit.layers[0]
    for tensor in (embeddings.cls_token, embeddings.distillation_token, layer.attention.q_proj.bias, layer.layernorm_before.bias):
        assert tensor.abs().max() > 0  # HF would initialise these to zero; a misplaced one would go unnoticed
    assert random_checkpoint("small").identity != tiny_checkpoint.identity


def test_save_pretrained_folder_loads_with_a_content_identity(tmp_path, tiny_checkpoint):
    tiny_checkpoint.model.save_pretrained(tmp_path)
    loaded = load_checkpoint(str(tmp_path))
    assert isinstance(loaded.model, DeiTForImageClassificationWithTeacher) and not loaded.is_random
    assert loaded.identity.startswith("dir:")
    with torch.no_grad():
        loaded.model.cls_classifier.bias.add_(1.0)
    loaded.model.save_pretrained(tmp_path)
    assert load_checkpoint(str(tmp_path)).identity != loaded.identity  # new weights, new cache key


@pytest.mark.parametrize(
    "model, message",
    [
        ("random:huge", "use random:tiny, random:small or random:base"),
        ("./no/such/folder", "does not exist"),
    ],
)
def test_bad_model_names_are_user_errors(model, message):
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(model)


def test_folder_without_weights_is_refused(tmp_path, tiny_checkpoint):
    tiny_checkpoint.config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no model weights"):
        load_checkpoint(str(tmp_path))


def test_unreachable_hub_is_one_line_that_names_both_fixes(tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "deit_tt", "convert", "--model", "facebook/deit-base-distilled-patch16-224"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load checkpoint")
    assert "save_pretrained" in lines[0] and "random:base" in lines[0]


def test_imagenet_labels_are_in_head_index_order():
    synsets, names = imagenet_synsets(), imagenet_class_names()
    assert len(synsets) == len(set(synsets)) == len(names) == 1000
    assert synsets == sorted(synsets)
    assert (synsets[0], synsets[999]) == ("n01440764", "n15075141")
    assert names[0].startswith("tench") and names[999].startswith("toilet tissue")
    assert names[134] == names[517] == "crane"  # names are not unique: match by index or synset


# -- what a checkpoint is made of ------------------------------------------------------------------


def test_every_hugging_face_parameter_belongs_to_a_converter_family(tiny_checkpoint):
    listing = parameter_listing(tiny_checkpoint)
    assert "other" not in set(listing["family"]), listing[listing["family"] == "other"]
    assert set(listing["family"]) == set(FAMILIES)


def test_parameter_table_counts_add_up(tiny_checkpoint):
    table = parameter_table(tiny_checkpoint)
    model_total = sum(p.numel() for p in tiny_checkpoint.model.parameters())
    total = table[table["family"] == "total"].iloc[0]
    families = table[table["family"] != "total"].set_index("family")
    assert total["parameters"] == model_total == families["parameters"].sum()
    assert families["share_percent"].sum() == pytest.approx(100.0)
    layers = tiny_checkpoint.config.num_hidden_layers
    assert families.loc["qkv", "tensors"] == layers * 6  # q, k, v weight and bias per layer
    assert families.loc["layernorm", "tensors"] == layers * 4 + 2
    assert families.loc["ff1", "parameters"] == layers * (192 * 768 + 768)
    assert table["parameters"].iloc[:-1].is_monotonic_decreasing


@pytest.mark.parametrize(
    "name, family",
    [
        ("deit.layers.3.attention.k_proj.weight", "qkv"),
        ("deit.layers.3.attention.o_proj.bias", "attention_output"),
        ("deit.layers.0.mlp.fc2.weight", "ff2"),
        ("deit.layers.0.layernorm_after.bias", "layernorm"),
        ("deit.layernorm.weight", "layernorm"),
        ("deit.embeddings.position_embeddings", "embeddings"),
        ("deit.embeddings.patch_embeddings.projection.weight", "patch_embedding"),
        ("distillation_classifier.weight", "classifier"),
        ("something.else", "other"),
    ],
)
def test_family_of(name, family):
    assert family_of(name) == family


# -- an offline copy of a hub checkpoint ---------------------------------------------------------------


def test_save_offline_copy_writes_model_and_processor_that_load_without_the_hub(tmp_path, monkeypatch):
    import deit_tt.checkpoints.loading as checkpoint_module
    from transformers import AutoImageProcessor, DeiTImageProcessor

    from deit_tt.checkpoints.loading import save_offline_copy
    from deit_tt.data.preprocessing import load_image_processor

    tiny = random_checkpoint("tiny")
    monkeypatch.setattr(checkpoint_module, "unloadable_reason", lambda model: None)  # pretend the hub answers
    monkeypatch.setattr(checkpoint_module, "load_checkpoint", lambda model: tiny)
    monkeypatch.setattr(AutoImageProcessor, "from_pretrained", lambda *args, **kwargs: DeiTImageProcessor())
    saved = save_offline_copy("facebook/deit-tiny-distilled-patch16-224", tmp_path / "copy")
    monkeypatch.undo()
    reloaded = load_checkpoint(str(saved))
    assert reloaded.distilled and not reloaded.is_random
    for name, parameter in tiny.model.state_dict().items():
        assert torch.equal(reloaded.model.state_dict()[name], parameter), name
    assert load_image_processor(str(saved)).crop_size == DeiTImageProcessor().crop_size


@pytest.mark.parametrize("model", ["random:tiny", "."])
def test_save_offline_copy_refuses_what_is_not_a_hub_id(model, tmp_path):
    from deit_tt.checkpoints.loading import save_offline_copy

    with pytest.raises(CheckpointError, match="is not a hub id"):
        save_offline_copy(model, tmp_path)


def test_save_offline_copy_says_why_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    from deit_tt.checkpoints.loading import save_offline_copy

    from deit_tt.checkpoints import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "is_cached", lambda repo_id: False)
    hub.hub_unreachable.cache_clear()
    try:
        with pytest.raises(CheckpointError, match="hub is unreachable"):
            save_offline_copy("facebook/deit-small-distilled-patch16-224", tmp_path / "copy")
    finally:
        hub.hub_unreachable.cache_clear()


def _damaged_copy(tmp_path, damage):
    import shutil

    from deit_tt.checkpoints.builtin import built_in_folder

    folder = tmp_path / "damaged"
    shutil.copytree(built_in_folder("shapes:tiny"), folder)
    damage(folder)
    return folder


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda folder: (folder / "config.json").unlink(), "has no config.json, so it is not a checkpoint written by save_pretrained"),
        (lambda folder: os.truncate(folder / "model.safetensors", 100_000), "cannot be loaded (SafetensorError: "),
        (lambda folder: (folder / "config.json").write_text("{"), "cannot be loaded ("),
    ],
    ids=["no-config", "truncated-safetensors", "config-not-json"],
)
def test_a_broken_checkpoint_folder_is_one_line(tmp_path, damage, message):
    folder = _damaged_copy(tmp_path, damage)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(str(folder))
    assert message in str(refused.value) and "\n" not in str(refused.value)
