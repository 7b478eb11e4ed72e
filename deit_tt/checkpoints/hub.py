"""The Hugging Face hub seen from a machine that may be offline, checked before anything heavy is imported.

When the hub cannot be reached, huggingface_hub retries a checkpoint's first request five times with
backoff (about 25 s) before giving up, even when the host name does not resolve. One short TCP probe
tells the two cases apart: offline, a cached checkpoint is loaded without any request, and one that is
not cached is refused at once with the message below. This module imports neither torch, ttnn nor
transformers, so the CLI can run the check in a moment.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from deit_tt import settings
from deit_tt.checkpoints.builtin import BUILT_IN_PREFIXES

PROBE_TIMEOUT = 1.0  # seconds for the TCP connection to the hub
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def resolve_model_name(model: str | None = None) -> str:
    """``model``, else ``settings.MODEL``, else the base distilled checkpoint."""
    return settings.MODEL.get(model)


def is_hub_id(name: str) -> bool:
    """True for a hub repository id: not ``random:<size>`` or a built-in name, not an existing folder, nothing
    that looks like a path."""
    path = Path(name).expanduser()
    return not (name.startswith(("random:", *BUILT_IN_PREFIXES, ".", "/", "~")) or path.suffix or path.is_dir())


@functools.cache
def hub_unreachable() -> bool:
    """True when huggingface_hub would fail to reach the hub: offline mode, or no TCP connection within
    PROBE_TIMEOUT. Behind a proxy the probe cannot tell, so the hub is assumed reachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    if any(os.environ.get(variable) for variable in _PROXY_VARIABLES):
        return False
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=PROBE_TIMEOUT).close()
    except OSError:
        return True
    return False


def is_cached(repo_id: str) -> bool:
    """True when the hub cache holds the checkpoint's config.json (its weights are then checked on load)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def unreachable_message(name: str, reason: str) -> str:
    return (
        f"cannot load checkpoint {name!r}: the Hugging Face hub is unreachable and it is not in the local cache "
        f"({reason}); pass a directory written by save_pretrained (--model PATH / {settings.MODEL.variable}=PATH) "
        "or use random weights (--model random:base)"
    )


def unloadable_reason(model: str | None) -> str | None:
    """Why ``model`` (resolved like ``load_checkpoint``) cannot be loaded from the hub right now, or None."""
    name = resolve_model_name(model)
    if is_hub_id(name) and hub_unreachable() and not is_cached(name):
        return unreachable_message(name, "no connection to the hub")
    return None
