"""The command line against a small hostile-but-fair corpus, end to end: ``python -m deit_tt ...`` in subprocesses,
``shapes:tiny`` on the host, the cache and the results in scratch folders.

Every problem must come out as exactly one ``error: ...`` line and no traceback, with the exit status the commands
document (evaluate and classify: 2 for a usage, setting or model error), before the model loads wherever the
problem is visible by then, and without losing a finished batch. Places that cannot be written (a full disk, a
read-only folder) are made for real inside a user and mount namespace (``unshare -r -m``: a small tmpfs, a
read-only bind mount), which also works for root, who ignores file permissions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deit_tt.checkpoints.builtin import built_in_folder
from deit_tt.data.scenes import write_splits
from deit_tt.evaluation import read_results

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 16
MODEL = ["--model", "shapes:tiny", "--executor", "host", "--numerics", "ideal", "--dtype-policy", "bf16"]
EVALUATE = ["evaluate", "--workers", "0", "--no-progress", "--batch-size", "2"]
MODEL_LOADING = "Loading weights"  # transformers' progress line: its absence shows a refusal came before the model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_splits(root, {"test": IMAGES})
    (root / "test" / "boxes.json").unlink()
    return root / "test"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def environment(scratch) -> dict[str, str]:
    """No DEIT_TT_* or TT_METAL_* from outside (conftest sets some); the cache and the results in scratch folders."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("DEIT_TT_", "TT_METAL_"))}
    return {
        **clean,
        "PYTHONPATH": str(ROOT),
        "LOGURU_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "DEIT_TT_CACHE": str(scratch / "cache"),
        "DEIT_TT_RESULTS_DIR": str(scratch / "results"),
    }


def cli(arguments, environment, cwd, extra=None, prefix=()) -> subprocess.CompletedProcess:
    command = [*prefix, sys.executable, "-m", "deit_tt", *arguments]
    return subprocess.run(command, env={**environment, **(extra or {})}, cwd=cwd, capture_output=True, text=True, timeout=900)


def one_line_error(result: subprocess.CompletedProcess, fragment: str, code: int = 2, before_loading: bool = False) -> str:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr[-3000:]
    if before_loading:
        assert MODEL_LOADING not in result.stderr
    return errors[0]


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "error:" not in result.stderr, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def in_namespace(namespaces: bool, setup: str, after: str | None = None) -> tuple[str, ...]:
    """A command prefix that runs ``setup`` (a shell line: mounts) in a new user + mount namespace first, and
    ``after`` (a shell line) once the command has ended, still inside it."""
    if not namespaces:
        pytest.skip("needs user namespaces (unshare -r -m) to make a full disk or a read-only folder for real")
    body = f'{setup} && "$@"; status=$?; {after}; exit $status' if after else f'{setup} && exec "$@"'
    return ("unshare", "-r", "-m", "sh", "-c", body, "sh")


# -- 1. two evaluations, one results file ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_evaluation_of_a_results_file_refuses_at_once_and_the_first_completes(corpus, environment, scratch):
    out = scratch / "shared.jsonl"
    lock = out.with_name(out.name + ".lock")
    first = subprocess.Popen(
        [sys.executable, "-m", "deit_tt", *EVALUATE, *MODEL, "--data", str(corpus), "--out", str(out)],
        env=environment, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().startswith(f"process {first.pid}:")):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.1)
        first.send_signal(signal.SIGSTOP)  # the first holds the file and stays in the middle of its run
        try:
            second = cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(out)], environment, scratch)
            one_line_error(second, f"is being written by another evaluation (process {first.pid}: ", before_loading=True)
            restart = cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(out), "--restart"], environment, scratch)
            one_line_error(restart, f"(process {first.pid}: ", before_loading=True)
        finally:
            first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    results = read_results(out)
    assert len(results.records) == len({record["id"] for record in results.records}) == IMAGES
    assert "EXIF orientation not applied" in results.header["preprocess_description"]  # said where it is decided
    assert not lock.exists()
    again = succeeded(cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(out)], environment, scratch))
    assert f"{IMAGES} of the {IMAGES} selected images already done" in again.stdout


# -- 2. --restart only replaces a results file ----------------------------------------------------------------------


def test_restart_never_replaces_a_file_that_is_not_a_results_file(corpus, environment, scratch):
    table = scratch / "labels.csv"
    table.write_text("id,label\n1,cat\n")
    result = cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(table), "--restart"], environment, scratch)
    one_line_error(result, "labels.csv exists and is not a deit-tt results file", before_loading=True)
    assert table.read_text() == "id,label\n1,cat\n"


# -- 3. damaged weights -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged_checkpoint(scratch) -> Path:
    """shapes:tiny with the first 2,000 values of its patch embedding overwritten by 0xFFFF (a float16 NaN)."""
    folder = scratch / "damaged-weights"
    shutil.copytree(built_in_folder("shapes:tiny"), folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header_size = struct.unpack("<Q", data[:8])[0]
    entry = json.loads(data[8 : 8 + header_size])["deit.embeddings.patch_embeddings.projection.weight"]
    assert entry["dtype"] == "F16"
    start = 8 + header_size + entry["data_offsets"][0]
    data[start : start + 4000] = b"\xff" * 4000
    weights.write_bytes(bytes(data))
    return folder


def test_non_finite_logits_are_an_error_naming_the_checkpoint(corpus, environment, scratch, damaged_checkpoint):
    out = scratch / "nan.jsonl"
    model = ["--model", str(damaged_checkpoint), *MODEL[2:]]
    evaluated = cli([*EVALUATE, *model, "--data", str(corpus), "--out", str(out)], environment, scratch)
    one_line_error(evaluated, f"{damaged_checkpoint} gave non-finite logits (NaN or infinity)")
    assert read_results(out).records == []
    classified = cli(["classify", *model, "--json", str(next(corpus.glob("*/*.png")))], environment, scratch)
    one_line_error(classified, f"{damaged_checkpoint} gave non-finite logits (NaN or infinity)")
    assert classified.stdout == ""  # never NaN, which is not JSON


# -- 4, 5. symlink loops and names that are not UTF-8 ------------------------------------------------------------------


def test_symlink_loops_and_non_utf8_names_in_the_dataset_folder(corpus, environment, scratch):
    data = scratch / "odd-names"
    shutil.copytree(corpus, data)
    (data / "loop").symlink_to("loop")
    for folder in ("dots", "rings"):
        (data / folder / "0-loop.png").symlink_to("0-loop.png")
    photo = next((data / "dots").glob("*.png"))
    os.rename(photo, os.fsdecode(bytes(data / "dots") + b"/photo-\xff.png"))
    Path(os.fsdecode(bytes(data / "rings") + b"/broken-\xfe.png")).write_bytes(b"not an image")
    result = succeeded(cli([*EVALUATE, *MODEL, "--data", str(data)], environment, scratch))
    assert f"images: {IMAGES} evaluated, 1 corrupt" in result.stdout
    assert "corrupt: rings/broken-\\udcfe.png: is not an image file" in result.stdout


# -- 7. batch (and other) settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, arguments, variables, message",
    [
        ("evaluate", [], {"DEIT_TT_BATCH": "0"}, "$DEIT_TT_BATCH must be a whole number of at least 1, got 0"),
        ("evaluate", [], {"DEIT_TT_BATCH": "-1"}, "$DEIT_TT_BATCH must be a whole number of at least 1, got -1"),
        ("evaluate", [], {"DEIT_TT_BATCH": "abc"}, "$DEIT_TT_BATCH='abc' is not a whole number"),
        ("evaluate", [], {"DEIT_TT_BATCH": "64"}, "$DEIT_TT_BATCH 64 is more than the 8 rows of the n150's core grid"),
        ("evaluate", ["--batch-size", "-1"], {}, "--batch-size must be a whole number of at least 1, got -1"),
        ("classify", ["--batch-size", "0"], {}, "--batch-size must be a whole number of at least 1, got 0"),
        ("classify", ["--batch-size", "9"], {}, "--batch-size 9 is more than the 8 rows of the n150's core grid"),
        ("evaluate", ["--devices", "0"], {}, "--devices must be at least 1, got 0"),
        ("classify", [], {"DEIT_TT_NUMERICS": "fast"}, "unknown numerics 'fast' (from $DEIT_TT_NUMERICS)"),
    ],
)
def test_bad_settings_are_refused_before_the_model_loads(corpus, environment, scratch, command, arguments, variables, message):
    if command == "evaluate":
        arguments = ["evaluate", "--no-progress", *arguments, *MODEL, "--data", str(corpus)]
    else:
        arguments = ["classify", *arguments, *MODEL[:4], str(next(corpus.glob("*/*.png")))]  # numerics from the variable
    one_line_error(cli(arguments, environment, scratch, variables), message, before_loading=True)


# -- 8. places that cannot be written ---------------------------------------------------------------------------------


def test_an_out_that_is_a_directory_or_a_results_dir_that_is_a_file(corpus, environment, scratch):
    folder = scratch / "a-folder"
    folder.mkdir()
    result = cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(folder)], environment, scratch)
    one_line_error(result, "is a directory; pass --out with a file path", before_loading=True)
    blocker = scratch / "results-is-a-file"
    blocker.write_text("")
    result = cli([*EVALUATE, *MODEL, "--data", str(corpus)], environment, scratch, {"DEIT_TT_RESULTS_DIR": str(blocker)})
    one_line_error(result, f"{blocker} is a file, not a folder", before_loading=True)


def test_a_full_disk_stops_with_one_line_and_the_finished_batches_resume(corpus, environment, scratch, namespaces):
    disk, saved = scratch / "small-disk", scratch / "saved"
    disk.mkdir()
    saved.mkdir()
    # 8 KiB of tmpfs: a page for the lock file, one for the results (the header and a few batches)
    prefix = in_namespace(namespaces, f"mount -t tmpfs -o size=8k tmpfs {disk}", after=f"cp {disk}/r.jsonl {saved}/")
    result = cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(disk / "r.jsonl")], environment, scratch, prefix=prefix)
    one_line_error(result, "(No space left on device); every batch committed before is kept")
    kept = len(read_results(saved / "r.jsonl").records)
    assert 0 < kept < IMAGES
    resumed = succeeded(cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(saved / "r.jsonl")], environment, scratch))
    assert f"{kept} of the {IMAGES} selected images already done" in resumed.stdout
    assert len(read_results(saved / "r.jsonl").records) == IMAGES


def test_a_read_only_out_is_refused_before_the_model_loads(corpus, environment, scratch, namespaces):
    out = scratch / "read-only.jsonl"
    succeeded(cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(out), "--limit", "2"], environment, scratch))
    prefix = in_namespace(namespaces, f"mount --bind {out} {out} && mount -o remount,bind,ro {out}")
    result = cli([*EVALUATE, *MODEL, "--data", str(corpus), "--out", str(out)], environment, scratch, prefix=prefix)
    one_line_error(result, f"results file {out} is read-only", before_loading=True)
    assert len(read_results(out).records) == 2


@pytest.mark.parametrize("filled", [True, False], ids=["holding-the-entry", "empty"])
def test_a_read_only_cache_is_used_as_it_is(corpus, environment, scratch, namespaces, filled):
    cache = scratch / f"read-only-cache-{filled}"
    image = str(next(corpus.glob("*/*.png")))
    if filled:
        succeeded(cli(["classify", *MODEL, image], environment, scratch, {"DEIT_TT_CACHE": str(cache)}))
    else:
        cache.mkdir()
    prefix = in_namespace(namespaces, f"mount --bind {cache} {cache} && mount -o remount,bind,ro {cache}")
    result = cli(["classify", *MODEL, "--json", image], environment, scratch, {"DEIT_TT_CACHE": str(cache)}, prefix=prefix)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(json.loads(result.stdout)) == 1
    assert ("could not write conversion cache entry" in result.stderr) != filled  # a miss is converted, not stored


# -- 9. the checkpoint's own preprocessing for a built-in checkpoint -----------------------------------------------------


def test_hf_preprocessing_of_shapes_tiny(corpus, environment, scratch):
    result = succeeded(cli([*EVALUATE, *MODEL, "--preprocess", "hf", "--data", str(corpus), "--limit", "4"], environment, scratch))
    assert "preprocessing: hf: the image processor of shapes:tiny: " in result.stdout


# -- 10. broken checkpoint folders ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda folder: (folder / "config.json").unlink(), "has no config.json"),
        (lambda folder: os.truncate(folder / "model.safetensors", 100_000), "cannot be loaded (SafetensorError: "),
    ],
    ids=["no-config", "truncated-weights"],
)
def test_a_broken_checkpoint_folder_is_one_line(corpus, environment, scratch, damage, message):
    folder = scratch / f"broken-{message.split()[0]}"
    shutil.copytree(built_in_folder("shapes:tiny"), folder)
    damage(folder)
    result = cli([*EVALUATE, "--model", str(folder), *MODEL[2:], "--data", str(corpus)], environment, scratch)
    one_line_error(result, message)
