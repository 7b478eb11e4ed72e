"""Conversion cache: hits give identical tensors, keys separate inputs, damage of any kind is rebuilt."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import ttnn

from deit_tt.model import cache
from deit_tt.model.conversion import LAYOUT_VERSION, DeiTParameters, convert_parameters
from deit_tt.errors import UserFacingError
from deit_tt.model.policy import get_policy


@pytest.fixture(scope="module")
def reference(tiny_checkpoint) -> DeiTParameters:
    """The tiny bf8 conversion without any cache involved."""
    return convert_parameters(tiny_checkpoint, "bf8", cache_dir=False)


def assert_same(parameters: DeiTParameters, reference: DeiTParameters) -> None:
    got, expected = parameters.named_tensors(), reference.named_tensors()
    assert list(got) == list(expected)
    for name, tensor in got.items():
        other = expected[name]
        assert (list(tensor.shape), tensor.dtype, tensor.layout) == (list(other.shape), other.dtype, other.layout), name
        assert torch.equal(ttnn.to_torch(tensor), ttnn.to_torch(other)), name
    assert parameters.policy == reference.policy and parameters.num_labels == reference.num_labels


def entry_of(parameters: DeiTParameters) -> Path:
    return parameters.cache.path


def test_second_load_is_a_verified_hit_with_identical_tensors(tiny_checkpoint, reference, tmp_path):
    first = convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    assert first.cache.status == "miss"
    entry = entry_of(first)
    assert entry.parent == tmp_path and (entry / cache.MANIFEST).is_file()
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    assert len(manifest["tensors"]) == len(reference.named_tensors())
    qkv = manifest["tensors"]["layers.0.qkv.weight"]
    assert qkv["shape"] == [192, 576] and qkv["dtype"] == "bfloat8_b" and qkv["layout"] == "tile"
    assert qkv["bytes"] == (entry / qkv["file"]).stat().st_size and len(qkv["sha256"]) == 64
    assert manifest["key_inputs"]["layout_version"] == LAYOUT_VERSION

    second = convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    assert second.cache.status == "hit" and second.cache.path == entry
    assert second.cache.verify_seconds > 0
    assert_same(second, reference)
    assert_same(first, reference)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_loaded_tensors_do_not_depend_on_the_files(tiny_checkpoint, reference, tmp_path):
    """ttnn.load_tensor maps its file; the cache hands it a private copy, so damage after loading is harmless."""
    convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    loaded = convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    assert loaded.cache.status == "hit"
    for file in entry_of(loaded).glob("*.tensorbin"):
        with file.open("r+b") as handle:
            handle.seek(200)
            handle.write(b"\x5a" * 64)
        os.truncate(file, 100)  # with a plain mmap this would crash the process on access (SIGBUS)
    assert_same(loaded, reference)


def test_key_changes_with_every_input(tiny_checkpoint, small_checkpoint):
    bf8, bf16 = get_policy("bf8"), get_policy("bf16")
    base = cache.cache_key(cache.key_inputs(tiny_checkpoint.identity, bf8, LAYOUT_VERSION))
    assert base == cache.cache_key(cache.key_inputs(tiny_checkpoint.identity, bf8, LAYOUT_VERSION))
    others = {
        cache.cache_key(cache.key_inputs(tiny_checkpoint.identity, bf16, LAYOUT_VERSION)),
        cache.cache_key(cache.key_inputs(small_checkpoint.identity, bf8, LAYOUT_VERSION)),
        cache.cache_key(cache.key_inputs(tiny_checkpoint.identity + ":other", bf8, LAYOUT_VERSION)),
        cache.cache_key(cache.key_inputs(tiny_checkpoint.identity, bf8, LAYOUT_VERSION + 1)),
    }
    assert base not in others and len(others) == 4
    assert cache.key_inputs(tiny_checkpoint.identity, bf8, LAYOUT_VERSION)["ttnn"] == cache.ttnn_version()


def test_changed_policy_or_identity_never_reuses_an_entry(tiny_checkpoint, reference, tmp_path):
    bf8 = convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    bf16 = convert_parameters(tiny_checkpoint, "bf16", cache_dir=tmp_path)
    assert bf16.cache.status == "miss" and bf16.cache.path != bf8.cache.path
    assert bf16.layers[0].qkv_weight.dtype == ttnn.bfloat16
    assert_same(bf16, convert_parameters(tiny_checkpoint, "bf16", cache_dir=False))

    # same weights object, different identity (e.g. a re-saved checkpoint directory): a new entry
    renamed = type(tiny_checkpoint)(tiny_checkpoint.model, tiny_checkpoint.name, tiny_checkpoint.identity + ":v2", True)
    again = convert_parameters(renamed, "bf8", cache_dir=tmp_path)
    assert again.cache.status == "miss" and again.cache.path != bf8.cache.path
    assert convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path).cache.status == "hit"


def test_changed_weights_under_an_unchanged_identity_are_not_served_stale(tiny_checkpoint, tmp_path):
    """E.g. a new random-initialisation recipe that kept the ``random:tiny`` identity."""
    first = convert_parameters(tiny_checkpoint, "bf16", cache_dir=tmp_path)
    changed = copy.deepcopy(tiny_checkpoint)
    with torch.no_grad():
        changed.model.deit.layers[0].attention.q_proj.bias.add_(1.0)
    assert changed.identity == tiny_checkpoint.identity
    second = convert_parameters(changed, "bf16", cache_dir=tmp_path)
    assert second.cache.status == "miss" and second.cache.path != first.cache.path
    q_bias = ttnn.to_torch(second.layers[0].qkv_bias)[0, :64]
    assert torch.equal(q_bias, changed.model.deit.layers[0].attention.q_proj.bias.detach()[:64].bfloat16())


def _truncate_file(entry: Path) -> str:
    file = sorted(entry.glob("*qkv.weight.tensorbin"))[0]
    os.truncate(file, file.stat().st_size // 2)
    return "bytes"


def _delete_file(entry: Path) -> str:
    sorted(entry.glob("*ff2.bias.tensorbin"))[3].unlink()
    return "missing"


def _flip_bytes_same_size(entry: Path) -> str:
    file = sorted(entry.glob("*ff1.weight.tensorbin"))[5]
    with file.open("r+b") as handle:
        handle.seek(file.stat().st_size // 2)
        handle.write(b"\x00" * 16)
    return "sha256"


def _edit_manifest_hash(entry: Path) -> str:
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    manifest["tensors"]["patch_embedding.weight"]["sha256"] = "0" * 64
    (entry / cache.MANIFEST).write_text(json.dumps(manifest))
    return "sha256"


def _edit_manifest_shape(entry: Path) -> str:
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    manifest["tensors"]["position_embeddings"]["shape"] = [1, 198, 192]
    (entry / cache.MANIFEST).write_text(json.dumps(manifest))
    return "manifest says"


def _edit_manifest_key(entry: Path) -> str:
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    manifest["key_inputs"]["policy"]["matmul_weights"] = "bfloat4_b"
    (entry / cache.MANIFEST).write_text(json.dumps(manifest))
    return "other inputs"


def _garble_manifest(entry: Path) -> str:
    text = (entry / cache.MANIFEST).read_text()
    (entry / cache.MANIFEST).write_text(text[: len(text) // 2])
    return "unreadable"


def _delete_manifest(entry: Path) -> str:
    (entry / cache.MANIFEST).unlink()
    return "missing"


def _swap_two_files(entry: Path) -> str:
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    a = entry / manifest["tensors"]["layers.0.ff1.weight"]["file"]
    b = entry / manifest["tensors"]["layers.1.ff1.weight"]["file"]
    tmp = a.with_suffix(".swap")
    a.rename(tmp), b.rename(a), tmp.rename(b)
    return "sha256"


DAMAGE = [
    _truncate_file,
    _delete_file,
    _flip_bytes_same_size,
    _edit_manifest_hash,
    _edit_manifest_shape,
    _edit_manifest_key,
    _garble_manifest,
    _delete_manifest,
    _swap_two_files,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=[f.__name__.strip("_") for f in DAMAGE])
def test_damaged_entry_is_detected_and_rebuilt(tiny_checkpoint, reference, tmp_path, caplog, damage):
    entry = entry_of(convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path))
    expected_reason = damage(entry)
    with caplog.at_level(logging.WARNING):
        rebuilt = convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    assert rebuilt.cache.status == "rebuilt"
    assert expected_reason in rebuilt.cache.reason
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "rebuilding" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    assert_same(rebuilt, reference)
    # the rebuilt entry is whole again, and nothing is left lying around
    loaded = convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    assert loaded.cache.status == "hit" and loaded.cache.path == entry
    assert_same(loaded, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]


def test_write_killed_midway_leaves_nothing_loadable_and_is_rebuilt(tiny_checkpoint, reference, tmp_path):
    """A real SIGKILL in the middle of writing the tensor files (a child process kills itself)."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from deit_tt.backends.runtime import prepare_host
        prepare_host()
        import ttnn
        from deit_tt.model import cache
        from deit_tt.checkpoints.loading import random_checkpoint
        from deit_tt.model.conversion import convert_parameters
        written = []
        real_dump = ttnn.dump_tensor
        def dump_then_die(path, tensor):
            real_dump(path, tensor)
            written.append(path)
            if len(written) == 20:
                os.kill(os.getpid(), signal.SIGKILL)
        cache.ttnn.dump_tensor = dump_then_die
        convert_parameters(random_checkpoint("tiny"), "bf8", cache_dir={str(tmp_path)!r})
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr[-2000:]
    leftovers = [p for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")  # no entry was published
    assert len(list(leftovers[0].glob("*.tensorbin"))) == 20 and not (leftovers[0] / cache.MANIFEST).exists()

    converted = convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    assert converted.cache.status == "miss"
    assert_same(converted, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [converted.cache.path.name]  # dead writer's dir removed
    assert convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path).cache.status == "hit"


def test_live_writers_temp_dir_is_left_alone(tiny_checkpoint, tmp_path):
    entry = cache.ConversionCache(tmp_path).entry_path("0" * 64, "x")
    mine = tmp_path / f".tmp-{entry.name}.{cache._host()}.{os.getpid()}.abcd1234"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    theirs = tmp_path / f".tmp-{entry.name}.{cache._host()}.{dead.pid}.abcd1234"
    mine.mkdir(), theirs.mkdir()
    assert cache.ConversionCache(tmp_path).remove_stale_temporaries(entry.name) == [theirs]
    assert mine.exists() and not theirs.exists()


def test_replacing_an_entry_keeps_previously_loaded_tensors_valid(tiny_checkpoint, reference, tmp_path):
    convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    loaded = convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path)
    _delete_manifest(entry_of(loaded))
    assert convert_parameters(tiny_checkpoint, "bf8", cache_dir=tmp_path).cache.status == "rebuilt"
    assert_same(loaded, reference)


def test_cache_disabled_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("DEIT_TT_CACHE", str(tmp_path / "env-cache"))
    parameters = convert_parameters(tiny_checkpoint, "bf8", cache_dir=False)
    assert parameters.cache.status == "disabled" and parameters.cache.path is None
    assert not (tmp_path / "env-cache").exists()


def test_default_directory_comes_from_the_environment(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("DEIT_TT_CACHE", str(tmp_path / "env-cache"))
    parameters = convert_parameters(tiny_checkpoint, "bf8")
    assert parameters.cache.path.parent == tmp_path / "env-cache"
    monkeypatch.delenv("DEIT_TT_CACHE")
    assert cache.default_cache_dir() == Path("~/.cache/deit_tt").expanduser()


def test_a_file_where_the_cache_directory_should_be_is_a_user_facing_error(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(UserFacingError, match="not a directory"):
        convert_parameters(tiny_checkpoint, "bf8", cache_dir=blocker)
    with pytest.raises(UserFacingError, match="cannot create conversion cache directory"):
        convert_parameters(tiny_checkpoint, "bf8", cache_dir=blocker / "below")


def test_a_read_only_cache_is_read_not_refused(tmp_path, monkeypatch):
    """A cache someone else filled (read-only here) still serves its verified entries; only writing is skipped."""
    from deit_tt.model import cache as cache_module

    root = tmp_path / "shared-cache"
    root.mkdir()
    monkeypatch.setattr(cache_module.os, "access", lambda path, mode: Path(path) != root)
    assert cache_module.resolve_cache_dir(root) == root
