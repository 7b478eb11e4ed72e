"""ttnn's DEBUG logging stays quiet whether deit_tt is imported before or after ttnn, unless the user asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARK = "--- deit_tt imported ---"
CHANGE_CONFIG = "with ttnn.manage_config('enable_logging', False): pass"  # ttnn logs this at DEBUG


def stderr_of(code: str, **variables: str) -> str:
    environment = {key: value for key, value in os.environ.items() if key not in ("LOGURU_LEVEL", "TT_LOGGER_LEVEL")}
    environment.update(PYTHONPATH=str(REPO), **variables)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_deit_tt_first_silences_ttnn_entirely():
    assert stderr_of(f"import deit_tt, ttnn\n{CHANGE_CONFIG}") == ""


def test_ttnn_first_is_silenced_from_the_moment_deit_tt_is_imported():
    stderr = stderr_of(f"import sys, ttnn, deit_tt\nprint({MARK!r}, file=sys.stderr)\n{CHANGE_CONFIG}\nfrom loguru import logger\nlogger.warning('kept')")
    before, after = stderr.split(MARK)
    assert "Initial ttnn.CONFIG" in before  # printed by `import ttnn` itself, before deit_tt existed
    assert "DEBUG" not in after and "kept" in after  # warnings still come through


def test_a_level_chosen_by_the_user_is_kept():
    assert "Set ttnn.CONFIG.enable_logging" in stderr_of(f"import ttnn, deit_tt\n{CHANGE_CONFIG}", LOGURU_LEVEL="DEBUG")
