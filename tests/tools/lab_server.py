"""A throw-away JupyterLab server for browser tests: 127.0.0.1, a random token, isolated Jupyter and
IPython dirs, no news pop-up, no autosave, and the repo's server config (the one `make lab` uses)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_CONFIG_DIR = REPO / ".jupyter"  # jupyter_server_config.json: the websocket message limit
START_TIMEOUT = 60.0

LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


@dataclass
class LabServer:
    process: subprocess.Popen
    base_url: str
    token: str
    log: Path

    def url(self, notebook: str) -> str:
        """A fresh workspace showing only ``notebook`` (no tabs from an earlier session)."""
        return f"{self.base_url}/lab/workspaces/{uuid.uuid4().hex}/tree/{notebook}?reset&token={self.token}"

    def start_kernel(self, notebook: str) -> None:
        """Start the notebook's kernel now; JupyterLab attaches to it when the page opens the notebook."""
        body = json.dumps({"path": notebook, "type": "notebook", "name": notebook, "kernel": {"name": "python3"}}).encode()
        request = urllib.request.Request(f"{self.base_url}/api/sessions?token={self.token}", data=body, method="POST")
        urllib.request.urlopen(request, timeout=30).close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_lab(root: Path, scratch: Path, kernel_startup: str = "") -> LabServer:
    """Serve ``root``; every Jupyter dir and the log live under ``scratch``. Kernels run ``kernel_startup``
    (an IPython startup file) before their first cell: slow imports can be done while the page loads."""
    names = ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR")
    dirs = {name: scratch / name.lower() for name in names}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    startup = dirs["IPYTHONDIR"] / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-startup.py").write_text(kernel_startup)
    for name, settings in LAB_SETTINGS.items():
        target = dirs["JUPYTERLAB_SETTINGS_DIR"] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings))
    env = {**os.environ, **{name: str(path) for name, path in dirs.items()}}
    env["JUPYTER_CONFIG_PATH"] = str(SERVER_CONFIG_DIR)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # the kernel imports this checkout
    port, token = _free_port(), uuid.uuid4().hex
    log = scratch / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = LabServer(process, f"http://127.0.0.1:{port}", token, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"{server.base_url}/api/status?token={token}", timeout=2)
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"JupyterLab did not start within {START_TIMEOUT:.0f} s; see {log}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
