"""tt-metal's mock device: ttnn's own host side of every op, on a machine without a card.

With ``TT_METAL_MOCK_CLUSTER_DESC_PATH`` set, every driver call is a no-op, yet ``ttnn.open_device``
works and each op runs its validators, program factory, circular-buffer set-up and the real L1/DRAM
allocator. No kernel computes anything: output values are garbage. What remains in the way is the
JIT build, which insists on SFPI's ``riscv-tt-elf-g++``. When that toolchain is not installed, this
module builds a *mock runtime root* once, in the cache directory: a mirror of the installed ttnn
package made of symlinks, whose ``runtime/sfpi`` holds a stub compiler (``assets/mock_sfpi``) built
on GNU binutils. ``TT_METAL_RUNTIME_ROOT`` points ttnn at it; the venv is never modified. The stub is
a program this project runs, so every use checks the root against the package (the stub byte for byte,
nothing else under ``runtime/sfpi``, every mirrored entry a symlink to the installed ttnn) and rebuilds it
when anything differs. tt-metal's own logs (``generated/``, e.g. the fabric maps the mock writes on
opening) go beside the root through ``TT_METAL_LOGS_PATH`` (tt_metal/llrt/rtoptions.cpp), not into the
current directory.

ttnn reads these variables once per process, at its first tensor conversion, so they are set by
``deit_tt.backends.runtime`` before that, and a process that initialised ttnn for one chip cannot mock another.
tt-metal's mock cluster descriptors: tests/tt_metal/tt_fabric/custom_mock_cluster_descriptors/ (TT_METAL_MOCK_CLUSTER_DESC_PATH).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import ttnn

from deit_tt import settings
from deit_tt.backends import ttnn_version
from deit_tt.errors import UserFacingError

RUNTIME_ROOT_ENV = "TT_METAL_RUNTIME_ROOT"
JIT_CACHE_ENV = "TT_METAL_CACHE"
LOGS_ENV = "TT_METAL_LOGS_PATH"
COMPILER = "riscv-tt-elf-g++"
BINUTILS = ("riscv64-unknown-elf-as", "riscv64-unknown-elf-ld")
BINUTILS_PACKAGE = "binutils-riscv64-unknown-elf"
# Where tt-metal looks for a real SFPI toolchain (jit_build/build.cpp: "sfpi not found at ...").
REAL_SFPI_LOCATIONS = (Path(ttnn.__file__).parent / "runtime" / "sfpi", Path("/opt/tenstorrent/sfpi"))
# The compiler's own version, printed after the SFPI release in its --version line; the release comes
# from ttnn's tt_metal/sfpi-version. The firmware build key is derived from this line, and for the
# toolchain ttnn 0.81.1 was built with it selects firmware that the wheel ships precompiled.
SFPI_GCC_VERSION = "15.1.0"

NO_VALUES = "mock device: ops validated and allocated by ttnn, no values computed"


class MockDeviceError(UserFacingError):
    """The mock device cannot be prepared or opened; the message says what to do."""


def real_sfpi() -> Path | None:
    """The installed SFPI toolchain, when there is one: then the mock compiles the real kernels."""
    for location in REAL_SFPI_LOCATIONS:
        if (location / "compiler" / "bin" / COMPILER).is_file():
            return location
    return None


def sfpi_version_line() -> str:
    """``riscv-tt-elf-g++ (tenstorrent/sfpi:<release>[<build>]) <gcc>``, from ttnn's sfpi-version file."""
    text = (Path(ttnn.__file__).parent / "tt_metal" / "sfpi-version").read_text()
    fields = dict(re.findall(r"^(sfpi_version|sfpi_build)='([^']*)'", text, flags=re.MULTILINE))
    return f"{COMPILER} (tenstorrent/sfpi:{fields['sfpi_version']}[{fields['sfpi_build']}]) {SFPI_GCC_VERSION}"


def missing_binutils() -> list[str]:
    return [tool for tool in BINUTILS if shutil.which(tool) is None]


def can_build() -> bool:
    """True when the mock device's kernels can be built here: a real SFPI toolchain, or binutils for the stub
    and a mock runtime root that is intact or can be (re)built in the cache."""
    if real_sfpi() is not None:
        return True
    return not missing_binutils() and (_intact(mock_root_dir()) or _writable(mock_root_dir().parent))


def require_binutils() -> None:
    missing = missing_binutils()
    if missing:
        raise MockDeviceError(
            f"the mock device needs {', '.join(missing)} to build its stub kernels: "
            f"install Debian's {BINUTILS_PACKAGE} (apt-get install {BINUTILS_PACKAGE})"
        )


def mock_root_dir() -> Path:
    """One mock runtime root per installed ttnn and stub version, under the deit_tt cache directory."""

    stub_digest = hashlib.sha256(_stub_text().encode()).hexdigest()[:12]
    return settings.CACHE.path() / "mock-runtime" / f"ttnn-{ttnn_version()}-stub-{stub_digest}"


def prepare_runtime_root() -> Path:
    """The mock runtime root, checked (``_intact``) and, when missing or altered, (re)built: the ttnn package
    mirrored with symlinks, the stub as SFPI.

    Built in a temporary directory and published by an atomic rename, so concurrent processes and an
    interrupted build never leave a half-made root behind.
    """
    require_binutils()
    root = mock_root_dir()
    if _intact(root):
        return root
    try:
        return _build(root)
    except OSError as error:
        raise MockDeviceError(
            f"cannot build the mock device's runtime in {root.parent} ({error.strerror or error}); "
            f"set ${settings.CACHE.variable} to a writable folder"
        ) from None


def _sfpi_compiler(root: Path) -> Path:
    return root / "runtime" / "sfpi" / "compiler" / "bin" / COMPILER


def _mirrored(package: Path) -> list[tuple[str, Path]]:
    """(path in the root, the package entry it links to): everything but ``runtime/sfpi``."""
    entries = [(entry.name, entry) for entry in package.iterdir() if entry.name != "runtime"]
    entries += [(f"runtime/{entry.name}", entry) for entry in (package / "runtime").iterdir() if entry.name != "sfpi"]
    return entries


def _intact(root: Path) -> bool:
    """Whether ``root`` is exactly what ``_build`` makes: an executable stub identical to the package's, no other
    file under ``runtime/sfpi``, and every other entry a symlink to the installed ttnn package."""
    compiler = _sfpi_compiler(root)
    try:
        if compiler.is_symlink() or not os.access(compiler, os.X_OK) or compiler.read_text() != _stub_text():
            return False
        sfpi = root / "runtime" / "sfpi"
        if sorted(sfpi.rglob("*")) != [sfpi / "compiler", sfpi / "compiler" / "bin", compiler]:
            return False
        package = Path(ttnn.__file__).parent
        return all(os.readlink(root / name) == str(target) for name, target in _mirrored(package))
    except (OSError, UnicodeDecodeError):
        return False


def _build(root: Path) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    package = Path(ttnn.__file__).parent
    (staging / "runtime").mkdir()
    for name, target in _mirrored(package):
        (staging / name).symlink_to(target)
    compiler = _sfpi_compiler(staging)
    compiler.parent.mkdir(parents=True)
    compiler.write_text(_stub_text())
    compiler.chmod(0o755)
    if root.exists() or root.is_symlink():  # an altered root: move it aside, publish the new one, drop the old
        stale = Path(tempfile.mkdtemp(prefix=root.name + ".stale.", dir=root.parent))
        try:
            root.rename(stale / "root")
        except FileNotFoundError:
            pass  # another process moved it first
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(root)
    except OSError:  # another process published a root first
        shutil.rmtree(staging, ignore_errors=True)
        if not _intact(root):
            raise MockDeviceError(f"the mock device's runtime {root} keeps changing under this process; remove it and try again") from None
    return root


def _writable(folder: Path) -> bool:
    """Whether ``folder`` can be created (or written, when it exists)."""
    existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def kernel_source() -> str:
    """What builds the mock device's kernels, for banners."""
    if os.environ.get(RUNTIME_ROOT_ENV) and not os.environ[RUNTIME_ROOT_ENV].startswith(str(settings.CACHE.path())):
        return f"kernels built by the toolchain of ${RUNTIME_ROOT_ENV}={os.environ[RUNTIME_ROOT_ENV]}, not run"
    if real_sfpi() is not None:
        return "real kernels compiled by SFPI, not run"
    return "stub kernels, nothing compiled"


def mock_environment() -> dict[str, str]:
    """The variables that make ttnn's JIT build work on the mock device.

    Empty with a real SFPI toolchain or a runtime root the user set (one this module built is checked, even
    when inherited through the environment). Stub kernels get a JIT cache of their
    own, so that they can never be picked up by a run on a card.
    """
    inherited = os.environ.get(RUNTIME_ROOT_ENV)
    if real_sfpi() is not None or (inherited is not None and Path(inherited) != mock_root_dir()):
        return {}
    root = prepare_runtime_root()  # also when inherited from a deit_tt parent process: checked all the same
    return {
        RUNTIME_ROOT_ENV: str(root),
        JIT_CACHE_ENV: f"{root.parent / 'jit-cache'}/",  # tt-metal appends to it as a string
        LOGS_ENV: str(root.parent / "logs"),  # tt-metal's generated/ (fabric maps, inspector) instead of the cwd
    }


def _stub_text() -> str:
    template = resources.files("deit_tt").joinpath(f"assets/mock_sfpi/{COMPILER}").read_text()
    return template.replace("@VERSION_LINE@", sfpi_version_line())
