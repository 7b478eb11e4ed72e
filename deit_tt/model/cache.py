"""On-disk cache of converted parameters: one directory per (checkpoint, dtype policy, layout, ttnn version).

Layout of an entry (``<root>/<model>-<policy>-<key[:16]>/``)::

    manifest.json                       key inputs, key, and for every tensor: file, shape, dtype, layout,
                                        byte size, sha256
    <tensor name>.tensorbin             written by ttnn.dump_tensor, read by ttnn.load_tensor

Integrity rules:

- The key is the sha256 of the key inputs (checkpoint identity, ``policy.describe()``, the conversion
  module's LAYOUT_VERSION, the ttnn version, plus a digest of sampled weight values as a safety net for
  an identity that did not change when the weights did). It is part of the directory name and is checked again
  against the manifest, so a changed input never reuses stale files.
- An entry is written into a hidden temp directory in the same root, manifest last, and only then renamed
  into place (one atomic ``rename``). A write that is killed leaves a ``.tmp-*`` directory that is never
  read, and is removed by a later write once its process is gone.
- Loading verifies the manifest (format, key, key inputs, the expected tensor list), then each file's
  size and sha256, then the loaded tensor's shape, dtype and layout. Anything off raises
  ``CacheEntryInvalid``; the caller logs one line and rebuilds the entry. Nothing half-written, corrupted
  or foreign is ever returned.

Why every file is hashed on every load: it is affordable. Measured with benchmarks/conversion_cache.py
on a 2-core host shared with other jobs (load average ~7, sha256 at only ~0.6 GB/s), random:base:
bf8 entry 99 MB / 155 files: first conversion 5.3 s, cached load 0.37 s of which reading + sha256 0.20 s
(14.6x); bf16 entry 183 MB: 5.3 s vs 0.65 s, hashing 0.37 s (8.2x). On an idle core sha256 runs at
~1.5-2 GB/s, so hashing is ~0.05-0.1 s. Checking sizes alone would save at most about half of a load that
is already well past the 5x target, and would miss same-size damage (a flipped bit, a block written in
place, two files swapped), so every load checks both.

Why the bytes are loaded through an anonymous memory file: ``ttnn.load_tensor`` memory-maps the file it
is given, so a tensor loaded straight from the cache would change if the file were later overwritten in
place, and crash the process (SIGBUS) if it were truncated. Each verified file is read once, hashed, and
the very same bytes are handed to ``ttnn.load_tensor`` through a ``memfd``; the returned tensors are then
immune to anything that later happens to the cache directory, and there is no window between checking a
file and loading it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import ttnn

from deit_tt import settings
from deit_tt.errors import UserFacingError
from deit_tt.backends import ttnn_version
from deit_tt.model.policy import DtypePolicy, dtype_name
from deit_tt.sharding.dims import enum_name

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SUFFIX = ".tensorbin"
STALE_SECONDS = 24 * 3600  # temp dirs from another host (or an unknown pid) older than this are removed

logger = logging.getLogger(__name__)


class CacheEntryInvalid(Exception):
    """A cache entry exists but must not be used; ``reason`` says why (one line)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class CacheInfo:
    """What ``convert_parameters`` did with the cache."""

    status: str  # "hit" | "miss" (converted, entry written) | "rebuilt" (bad entry replaced) | "disabled" | "unwritten"
    path: Path | None
    key: str | None
    reason: str | None = None  # why an entry was rebuilt or could not be written
    seconds: float = 0.0  # wall time of the convert_parameters call
    verify_seconds: float = 0.0  # part of a cache load spent reading files and checking their sha256
    conversion_seconds: float | None = None  # conversion time recorded when the entry was written
    total_bytes: int = 0


# --------------------------------------------------------------------------------------------------
# keys and locations


def key_inputs(identity: str, policy: DtypePolicy, layout_version: int, weights_sample: str | None = None) -> dict:
    """Everything a converted tensor depends on. Any change gives a different key.

    ``weights_sample`` (see ``weights_sample_digest``) backs up the checkpoint identity: should the identity
    stay the same while the weights change (say, a new random-initialisation recipe under the same
    ``random:base`` name), the sampled values differ and the stale entry is not reused.
    """
    inputs = {
        "checkpoint": identity,
        "policy": policy.describe(),
        "layout_version": layout_version,
        "ttnn": ttnn_version(),
    }
    if weights_sample is not None:
        inputs["weights_sample"] = weights_sample
    return inputs


def weights_sample_digest(model, samples_per_tensor: int = 256) -> str:
    """sha256 over every parameter's name, shape, dtype and ``samples_per_tensor`` evenly spaced values.

    Costs milliseconds (a full hash of DeiT-base's 350 MB of fp32 weights would cost a good part of a
    cached load); it catches any re-initialisation or re-training, though not an edit of a few values.
    """
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].to(torch.float32).contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    return settings.CACHE.path()


def resolve_cache_dir(cache_dir: str | Path | None | bool = None) -> Path | None:
    """None/True -> ``settings.CACHE`` or ~/.cache/deit_tt; False -> None (no caching). Creates the directory.

    A directory that exists but is read-only is used for reading: its verified entries load, and a missing
    one is converted without being stored (one warning). Raises UserFacingError when the path is a file or
    cannot be created.
    """
    if cache_dir is False:
        return None
    root = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir).expanduser()
    hint = f"set ${settings.CACHE.variable} to a writable folder (convert: or pass --cache-dir)"
    if root.exists() and not root.is_dir():
        raise UserFacingError(f"conversion cache path {root} exists but is not a directory; remove it or {hint}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserFacingError(f"cannot create conversion cache directory {root} ({error.strerror or error}); {hint}") from None
    return root


def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.") or "model"


# --------------------------------------------------------------------------------------------------
# the cache


class ConversionCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def entry_path(self, key: str, label: str) -> Path:
        return self.root / f"{_safe_label(label)}-{key[:16]}"

    # ---- load

    def load(self, key: str, inputs: dict, label: str, names: list[str]) -> tuple[dict[str, ttnn.Tensor] | None, CacheInfo]:
        """Return (tensors by name, info) for a verified entry, (None, info) when there is none.

        Raises CacheEntryInvalid when an entry exists but fails verification.
        """
        path = self.entry_path(key, label)
        info = CacheInfo("miss", path, key)
        self.remove_stale_temporaries(path.name)
        if not path.exists():
            return None, info
        manifest = self._read_manifest(path, key, inputs, names)
        entries = [(name, manifest["tensors"][name]) for name in names]
        for _, entry in entries:  # cheap checks first: a truncated or missing file fails before any hashing
            _check_size(path, path / entry["file"], entry)
        tensors: dict[str, ttnn.Tensor] = {}
        with tempfile.TemporaryDirectory(prefix="deit_tt_load_") as scratch:
            for name, entry in entries:
                file = path / entry["file"]
                start = time.perf_counter()
                data = _read_verified(path, file, entry)
                info.verify_seconds += time.perf_counter() - start
                tensor = _load_bytes(path, file, data, Path(scratch))
                found = _describe_tensor(tensor)
                expected = {k: entry[k] for k in ("shape", "dtype", "layout")}
                if found != expected:
                    raise CacheEntryInvalid(path, f"{file.name} holds {found}, manifest says {expected}")
                tensors[name] = tensor
        info.status = "hit"
        info.conversion_seconds = manifest.get("conversion_seconds")
        info.total_bytes = sum(entry["bytes"] for _, entry in entries)
        return tensors, info

    def _read_manifest(self, path: Path, key: str, inputs: dict, names: list[str]) -> dict:
        manifest_file = path / MANIFEST
        if not manifest_file.is_file():
            raise CacheEntryInvalid(path, f"{MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CacheEntryInvalid(path, f"{MANIFEST} is unreadable ({error})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise CacheEntryInvalid(path, f"{MANIFEST} has an unknown format")
        if manifest.get("key") != key or manifest.get("key_inputs") != json.loads(json.dumps(inputs)):
            raise CacheEntryInvalid(path, f"{MANIFEST} belongs to other inputs (key {str(manifest.get('key'))[:16]})")
        listed = manifest.get("tensors")
        if not isinstance(listed, dict) or set(listed) != set(names):
            raise CacheEntryInvalid(path, f"{MANIFEST} does not list the expected {len(names)} tensors")
        for name in names:
            entry = listed[name]
            if not isinstance(entry, dict) or not {"file", "shape", "dtype", "layout", "bytes", "sha256"} <= set(entry):
                raise CacheEntryInvalid(path, f"{MANIFEST} entry for {name} is incomplete")
            file = Path(str(entry["file"]))
            if file.name != str(entry["file"]) or not file.name.endswith(SUFFIX):
                raise CacheEntryInvalid(path, f"{MANIFEST} entry for {name} names a file outside the entry")
        return manifest

    # ---- store

    def store(
        self,
        key: str,
        inputs: dict,
        label: str,
        tensors: dict[str, ttnn.Tensor],
        conversion_seconds: float | None = None,
    ) -> CacheInfo:
        """Write an entry atomically (temp dir + rename), replacing an existing (invalid) one."""
        path = self.entry_path(key, label)
        info = CacheInfo("miss", path, key, conversion_seconds=conversion_seconds)
        self.remove_stale_temporaries(path.name)
        token = f"{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        temporary = self.root / f".tmp-{path.name}.{token}"
        try:
            temporary.mkdir()
            listed = {}
            for index, (name, tensor) in enumerate(tensors.items()):
                file_name = f"{index:03d}-{_safe_label(name)}{SUFFIX}"
                ttnn.dump_tensor(temporary / file_name, tensor)
                data = (temporary / file_name).read_bytes()
                listed[name] = {
                    "file": file_name,
                    **_describe_tensor(tensor),
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            manifest = {
                "format": MANIFEST_FORMAT,
                "key": key,
                "key_inputs": inputs,
                "label": label,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "conversion_seconds": conversion_seconds,
                "tensors": listed,
            }
            (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1))
            self._publish(temporary, path, token)
        except (OSError, RuntimeError) as error:
            shutil.rmtree(temporary, ignore_errors=True)
            reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
            logger.warning("could not write conversion cache entry %s (%s); continuing without it", path, reason)
            info.status, info.reason = "unwritten", reason
            return info
        info.total_bytes = sum(entry["bytes"] for entry in listed.values())
        return info

    def _publish(self, temporary: Path, path: Path, token: str) -> None:
        try:
            os.rename(temporary, path)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        # An entry is already there: an invalid one being rebuilt, or a concurrent writer's (same key, same
        # content). Move it aside, then publish ours. Processes holding its tensors are unaffected (memfd).
        old = self.root / f".old-{path.name}.{token}"
        try:
            os.rename(path, old)
        except FileNotFoundError:
            pass
        try:
            os.rename(temporary, path)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(temporary, ignore_errors=True)  # another writer published in between; keep theirs
        shutil.rmtree(old, ignore_errors=True)

    def remove_stale_temporaries(self, entry_name: str) -> list[Path]:
        """Delete ``.tmp-``/``.old-`` directories of ``entry_name`` left by writers that no longer run."""
        removed = []
        for prefix in (".tmp-", ".old-"):
            for candidate in self.root.glob(f"{prefix}{entry_name}.*"):
                if _is_stale(candidate, candidate.name.removeprefix(f"{prefix}{entry_name}.")):
                    shutil.rmtree(candidate, ignore_errors=True)
                    removed.append(candidate)
        return removed


def _check_size(path: Path, file: Path, entry: dict) -> None:
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise CacheEntryInvalid(path, f"{file.name} is missing") from None
    if size != entry["bytes"]:
        raise CacheEntryInvalid(path, f"{file.name} has {size} bytes, manifest says {entry['bytes']}")


def _read_verified(path: Path, file: Path, entry: dict) -> bytes:
    """Read ``file`` once and check its size and sha256 against the manifest entry."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise CacheEntryInvalid(path, f"{file.name} is missing") from None
    except OSError as error:
        raise CacheEntryInvalid(path, f"{file.name} is unreadable ({error.strerror})") from None
    if len(data) != entry["bytes"]:
        raise CacheEntryInvalid(path, f"{file.name} has {len(data)} bytes, manifest says {entry['bytes']}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CacheEntryInvalid(path, f"{file.name} does not match its sha256 in {MANIFEST}")
    return data


def _load_bytes(path: Path, file: Path, data: bytes, scratch: Path) -> ttnn.Tensor:
    """Load exactly ``data`` (already verified) as a tensor that no longer depends on ``file``.

    The bytes go into an anonymous memory file (memfd) that ttnn.load_tensor maps through a
    ``/proc/self/fd`` symlink named ``*.tensorbin`` (ttnn insists on the suffix). The memfd is closed
    afterwards; ttnn's mapping keeps its memory alive as long as the tensor lives.
    """
    try:
        if not hasattr(os, "memfd_create"):
            return ttnn.load_tensor(file)  # no memfd on this platform: map the verified file itself
        fd = os.memfd_create(f"deit_tt:{file.name}", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            link = scratch / file.name
            link.symlink_to(f"/proc/self/fd/{fd}")
            try:
                return ttnn.load_tensor(link)
            finally:
                link.unlink()
        finally:
            os.close(fd)
    except (RuntimeError, OSError) as error:
        raise CacheEntryInvalid(path, f"ttnn could not load {file.name} ({str(error).splitlines()[0][:120]})") from None


def _describe_tensor(tensor: ttnn.Tensor) -> dict:
    return {
        "shape": [int(n) for n in tensor.shape],
        "dtype": dtype_name(tensor.dtype),
        "layout": enum_name(tensor.layout).lower(),
    }


def _host() -> str:
    return _safe_label(socket.gethostname()).replace(".", "-") or "host"


def _is_stale(candidate: Path, token: str) -> bool:
    """``token`` is ``host.pid.random``: stale if written on this host by a dead process, or old."""
    parts = token.split(".")
    if len(parts) == 3 and parts[0] == _host() and parts[1].isdigit():
        pid = int(parts[1])
        if pid == os.getpid():
            return False
        return not _pid_alive(pid)
    try:
        return time.time() - candidate.stat().st_mtime > STALE_SECONDS
    except FileNotFoundError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
