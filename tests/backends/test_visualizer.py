"""The dry run's ttnn-visualizer report, opened in the real web app: ``plan --dry-run --report DIR`` on the mock
device, ttnn-visualizer started on 127.0.0.1 with that directory, Debian's Chromium (headless, Playwright) on its
operations page. ttnn-visualizer pins its own pydantic, so it lives in a venv of its own (``pip install
".[visualizer]"`` there) whose ``bin`` is on PATH; without it the test is skipped with that reason."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from deit_tt.backends import mock_device

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
VISUALIZER = shutil.which("ttnn-visualizer")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)"),
    pytest.mark.skipif(
        VISUALIZER is None,
        reason="ttnn-visualizer is not on PATH: pip install '.[visualizer]' into a venv of its own and put its bin on PATH",
    ),
    pytest.mark.skipif(not mock_device.can_build(), reason=f"the mock device needs Debian's {mock_device.BINUTILS_PACKAGE}"),
]
START_TIMEOUT_S = 60  # measured: the server answers about 3.5 s after it starts


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("report")
    command = [sys.executable, "-m", "deit_tt", "plan", "--dry-run", "--model", "random:tiny", "--batch", "1", "--report", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == f"ttnn-visualizer report: {directory / 'db.sqlite'} (open it with: ttnn-visualizer --profiler-path {directory})"
    return directory


@pytest.fixture(scope="module")
def visualizer_url(report, tmp_path_factory):
    """The app's address with the instance id it prints once it is up; the server is stopped afterwards."""
    port, log = _free_port(), tmp_path_factory.mktemp("visualizer") / "server.log"
    environment = {**os.environ, "USAGE_RECORDING_DISABLED": "true"}
    with open(log, "w") as output:
        server = subprocess.Popen(
            [VISUALIZER, "--profiler-path", str(report), "--host", "127.0.0.1", "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
        )
    try:
        deadline, url = time.monotonic() + START_TIMEOUT_S, None
        while url is None and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.5)
            url = next(iter(re.findall(rf"http://127\.0\.0\.1:{port}\?instanceId=\w+", log.read_text())), None)
        assert url is not None, log.read_text()[-2000:]
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the gunicorn workers it started
        server.wait(timeout=30)


def test_the_visualizer_opens_the_dry_run_report_and_lists_its_operations(report, visualizer_url):
    base, query = visualizer_url.split("?")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{base}/operations?{query}")
            expect(page.get_by_text("1 ttnn.fold", exact=False).first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("ttnn.transformer.split_query_key_value_and_split_heads").first).to_be_visible()
            expect(page.get_by_text(report.name).first).to_be_visible()  # the report it opened
        finally:
            browser.close()
