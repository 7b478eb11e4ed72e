"""The device path, checked by ttnn itself on tt-metal's mock device.

ttnn runs its validators, program factories and real allocator for every op; no kernel computes, so
nothing here looks at values. In-process tests use the n150 mock (conftest's ``prepare_host`` hands
ttnn the n150 descriptor); other chips run in subprocesses, since ttnn reads the descriptor once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import ttnn
from mock_matrix import plain_checkpoint

from deit_tt.backends import mock_device, runtime
from deit_tt.checkpoints.loading import random_checkpoint
from deit_tt.backends.recording import dry_run, records_table
from deit_tt.errors import UserFacingError
from deit_tt.pipeline import DeiTPipeline
from deit_tt.model.policy import get_policy
from deit_tt.sharding import ALL_RULES
from deit_tt.sharding.walk import walk
from deit_tt.sharding.dims import dtype_name, enum_name
from deit_tt.model.vocabulary import ALL_STAGES

ROOT = Path(__file__).resolve().parents[2]
MATRIX_CHIPS = ("n150", "p150-13x10", "p150-12x10", "p150")
MESHES = {"n300": ("n300",), "t3k 1x8": ("t3k",), "t3k 2x4": ("t3k", "--mesh-shape", "2x4")}
needs_mock = pytest.mark.skipif(
    not mock_device.can_build(), reason=f"the mock device needs Debian's {mock_device.BINUTILS_PACKAGE} (apt-get install {mock_device.BINUTILS_PACKAGE})"
)
COMPILER_LINE = "riscv-tt-elf-g++ (tenstorrent/sfpi:7.89.0[1050]) 15.1.0"  # the toolchain ttnn 0.81.1 was built with


@pytest.fixture(scope="module")
def mock_processes():
    """The per-chip matrix and the mesh forwards, each a process of its own (ttnn reads one descriptor per process),
    two at a time on the 2 cores; each test waits for the one it needs."""

    environment = {name: value for name, value in os.environ.items() if name != runtime.MOCK_CLUSTER_ENV}  # conftest's n150

    def run(*arguments):
        return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, cwd=ROOT, env=environment, timeout=900)

    # The first matrix fills the shared conversion cache while the mesh runs (one model) go beside it.
    first, *others = MATRIX_CHIPS
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {first: pool.submit(run, "tests/tools/mock_matrix.py", "--chip", first)}
        jobs.update({mesh: pool.submit(run, "tests/tools/mock_mesh.py", "--chip", *arguments) for mesh, arguments in MESHES.items()})
        jobs.update({chip: pool.submit(run, "tests/tools/mock_matrix.py", "--chip", chip) for chip in others})
        yield jobs


@pytest.fixture(scope="module")
def mock_n150():
    selected = runtime.open_mock("n150")
    yield selected
    selected.close()


def _stub_compiler() -> Path:
    root = mock_device.prepare_runtime_root()
    return root / "runtime" / "sfpi" / "compiler" / "bin" / mock_device.COMPILER


# -- the stub toolchain and the mock runtime root -------------------------------------------------


@needs_mock
def test_stub_compiler_answers_the_version_probe_with_ttnn_s_own_toolchain():
    answer = subprocess.run([_stub_compiler(), "--version"], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == COMPILER_LINE


@needs_mock
def test_stub_compiler_writes_relocatable_objects_and_links_them(tmp_path):
    compiler = _stub_compiler()
    source, obj, depfile, elf = tmp_path / "kernel.cc", tmp_path / "kernel.o", tmp_path / "kernel.d", tmp_path / "kernel.elf"
    source.write_text("int main() { return 0; }\n")
    subprocess.run([compiler, "-O3", "-mcpu=tt-wh", "-c", "-o", obj, source, "-MF", depfile], check=True)
    assert depfile.read_text().strip() == f"{obj}:"
    subprocess.run([compiler, "-Wl,--emit-relocs", "-nostartfiles", obj, "-o", elf], check=True)
    sections = subprocess.run(["riscv64-unknown-elf-readelf", "-S", elf], capture_output=True, text=True, check=True).stdout
    assert "ELF32" in subprocess.run(["riscv64-unknown-elf-readelf", "-h", elf], capture_output=True, text=True).stdout
    assert ".rela.text" in sections  # ttnn's loader refuses kernels without relocations ("there are no relocation sections")


@needs_mock
def test_stub_compiler_refuses_precompiled_headers(tmp_path):
    header = tmp_path / "pch.h"
    header.write_text("")
    result = subprocess.run([_stub_compiler(), "-x", "c++-header", header, "-o", tmp_path / "pch.gch"])
    assert result.returncode == 1


@needs_mock
def test_runtime_root_mirrors_the_installed_ttnn_package_with_only_sfpi_replaced():
    root = mock_device.prepare_runtime_root()
    package = Path(ttnn.__file__).parent
    assert {entry.name for entry in root.iterdir()} == {entry.name for entry in package.iterdir()}
    for entry in root.iterdir():
        if entry.name != "runtime":
            assert entry.is_symlink() and entry.resolve() == (package / entry.name).resolve()
    assert (root / "runtime" / "hw").resolve() == (package / "runtime" / "hw").resolve()
    assert os.access(_stub_compiler(), os.X_OK)
    assert mock_device.prepare_runtime_root() == root  # built once


def test_missing_binutils_is_one_line_naming_the_debian_package(monkeypatch):
    monkeypatch.setattr(mock_device.shutil, "which", lambda tool: None)
    monkeypatch.setattr(mock_device, "real_sfpi", lambda: None)
    monkeypatch.delenv(mock_device.RUNTIME_ROOT_ENV, raising=False)
    with pytest.raises(mock_device.MockDeviceError) as excinfo:
        mock_device.mock_environment()
    message = str(excinfo.value)
    assert "apt-get install binutils-riscv64-unknown-elf" in message and "\n" not in message


def test_a_user_set_descriptor_is_used_unless_another_chip_is_asked_for(monkeypatch):
    monkeypatch.setattr(runtime, "_mocked_chip", None)
    monkeypatch.setenv(runtime.MOCK_CLUSTER_ENV, "/users/own/galaxy.yaml")
    with pytest.raises(mock_device.MockDeviceError) as excinfo:
        runtime.open_mock("p150")
    message = str(excinfo.value)
    assert message.startswith("TT_METAL_MOCK_CLUSTER_DESC_PATH is set (/users/own/galaxy.yaml)") and "unset it" in message
    assert "\n" not in message


def test_a_second_chip_in_one_process_is_refused_with_the_reason(monkeypatch):
    # as after prepare_host() or open_mock("n150") in this process (a pytest-xdist worker inherits the controller's
    # descriptor variable, which prepare_host leaves alone as the user's)
    monkeypatch.setattr(runtime, "_mocked_chip", runtime.CHIPS["n150"])
    with pytest.raises(mock_device.MockDeviceError, match="new process"):
        runtime.open_mock("p150")


# -- the forward on the n150 mock ------------------------------------------------------------------


@needs_mock
def test_mock_forward_completes_every_op_and_hands_back_no_values(mock_n150):
    assert mock_n150.banner().startswith(f"executor: {mock_device.NO_VALUES}")
    pipeline = DeiTPipeline(random_checkpoint("tiny"), mock_n150, get_policy("bf8"), 1)
    try:
        output = pipeline(torch.zeros(1, 3, 224, 224))
        records = dry_run(pipeline)
        with pytest.raises(UserFacingError, match="the mock executor computes no values"):  # nothing to compare stage by stage
            pipeline(torch.zeros(1, 3, 224, 224), stages=ALL_STAGES, on_stage=lambda name, value: None)
    finally:
        pipeline.model.release()
    assert output.logits.shape == (1, 1000) and output.distillation_logits.shape == (1, 1000)
    assert torch.isnan(output.logits).all() and torch.isnan(output.cls_logits).all()
    assert len(records) == 193
    # Before the fold fix ttnn refused op #1 here: "Physical shard shape (98, 1024) must be tile {32, 32} sized!"
    assert [r.op for r in records[:3]] == ["ttnn.fold", "ttnn.to_memory_config", "ttnn.to_layout"]
    assert records[1].output == "L1 interleaved bfloat16"
    assert records[-1].op == "ttnn.linear" and records[-1].config == "classifier"
    # No DRAM scratch: under a trace a buffer allocated later could alias it (deit_tt/backends/tracing.py).
    assert [r.op for r in records if r.output.startswith("DRAM")] == []
    assert records[-2].op == "ttnn.slice" and records[-2].output.startswith("L1 block 32x")


@needs_mock
def test_a_height_sharded_fold_output_cannot_be_tiled_which_is_why_it_moves_to_interleaved_l1(mock_n150):
    pipeline = DeiTPipeline(random_checkpoint("tiny"), mock_n150, get_policy("bf8"), 1)
    try:
        from deit_tt.model.conversion import fold_pixels

        pixels = ttnn.from_torch(
            fold_pixels(torch.zeros(1, 3, 224, 224)),
            dtype=ttnn.bfloat16,
            layout=ttnn.ROW_MAJOR_LAYOUT,
            device=mock_n150.device,
            memory_config=pipeline.plan.fold_input_memory_config,
        )
        folded = ttnn.fold(pixels, 16, 1, collapse_output=True)
        with pytest.raises(RuntimeError, match=r"Physical shard shape \(98, 1024\) must be tile \{32, 32\} sized"):
            ttnn.to_layout(folded, ttnn.TILE_LAYOUT, dtype=ttnn.bfloat8_b)
    finally:
        pipeline.model.release()


@needs_mock
def test_the_n150_l1_budget_is_the_bank_the_allocator_reports(mock_n150):
    chip = runtime.CHIPS["n150"]
    assert mock_n150.grid == chip.grid
    assert mock_n150.l1_bytes_per_core == chip.l1_bytes_per_core == 1_360_544


@needs_mock
def test_closing_a_pipeline_frees_its_device_tensors_before_the_device(mock_n150, monkeypatch):
    def allocated():
        return tuple(
            ttnn.get_memory_view(mock_n150.device, kind).total_bytes_allocated_per_bank
            for kind in (ttnn.BufferType.DRAM, ttnn.BufferType.L1)
        )

    before = allocated()
    at_close = []
    monkeypatch.setattr(runtime.ttnn, "close_mesh_device", lambda device: at_close.append(allocated()))
    own = runtime.Runtime("mock", mock_n150.chip, mock_n150.device)
    pipeline = DeiTPipeline(random_checkpoint("tiny"), own, get_policy("bf8"), 1)
    assert allocated()[0] > before[0]  # the weights went to DRAM
    pipeline.close()
    assert at_close == [before]


@needs_mock
@pytest.mark.parametrize("distilled", [True, False], ids=["distilled", "plain"])
def test_plan_walk_and_dry_run_agree_op_by_op(mock_n150, distilled):
    """The walk (the forward through the planning executor) issues the dry run's ops, configs and output placements
    for every encoder layer and the head; a plain checkpoint's one head included."""
    checkpoint = random_checkpoint("tiny") if distilled else plain_checkpoint("tiny")
    pipeline = DeiTPipeline(checkpoint, mock_n150, get_policy("bf8"), 2)
    try:
        records = dry_run(pipeline)
    finally:
        pipeline.model.release()
    plan = pipeline.plan
    assert plan.dims.classifier_heads == (2 if distilled else 1)
    steps = walk(plan)
    assert [step.op for step in steps] == list(plan.table()["op"])
    ran = [(record.op, record.config, record.output.split(", ")[0]) for record in records]  # the split: Q's placement
    walked = [(step.call, step.config, _placement(step.out)) for step in steps]
    head = [step.op for step in steps].index("layernorm")  # the final LayerNorm: the head starts there
    layer, embedding_ops = walked[:head], len(records) - plan.dims.layers * head - (len(steps) - head)
    assert ran[embedding_ops - 1][:2] == ("ttnn.to_memory_config", "encoder_memory_config")  # the embeddings' last op
    for index in range(plan.dims.layers):
        start = embedding_ops + index * head
        assert ran[start : start + head] == layer, f"layer {index}"
    assert ran[len(records) - (len(steps) - head) :] == walked[head:]
    assert all(config for _, config, _ in walked)  # every op of the layer and the head takes a plan config


def _placement(tensor) -> str:
    """A walk tensor as ``recording.describe_placement`` describes a device tensor."""
    layout = enum_name(tensor.layout).removesuffix("_SHARDED").lower()
    return f"L1 {layout} {tensor.shard[0]}x{tensor.shard[1]}@{tensor.grid[0]}x{tensor.grid[1]} {dtype_name(tensor.dtype)}"


@needs_mock
def test_the_measured_table_sets_the_plan_estimate_beside_each_configured_op(mock_n150):
    pipeline = DeiTPipeline(random_checkpoint("tiny"), mock_n150, get_policy("bf16"), 2)
    try:
        records = dry_run(pipeline)
    finally:
        pipeline.model.release()
    table = records_table(records, pipeline.plan, mock_n150.l1_bytes_per_core)
    assert len(table) == len(records) == 193
    qkv = table[table["plan config"] == "qkv"]
    config, grid = pipeline.plan.qkv, pipeline.plan.encoder_grid  # tiny at batch 2: 7 rows x 6 cols, 64x96 shards
    expected = f"L1 block {config.per_core_M * 32}x{config.per_core_N * 32}@{grid.x}x{grid.y} bfloat16"
    assert len(qkv) == 12 and set(qkv["output"]) == {expected} == {"L1 block 64x96@6x7 bfloat16"}
    estimate = pipeline.plan.table().set_index("op").loc["qkv", "L1 bytes/core"]
    assert (qkv["plan estimate"] == estimate).all()
    assert (qkv["difference"] == qkv["L1 allocated/core"] - estimate).all()
    assert (qkv["ttnn - plan"] == qkv["ttnn.graph peak"] - estimate).all()
    assert table["plan estimate"].isna().sum() == 9  # the embedding ops before the encoder grid
    assert (table["L1 allocated/core"] > 0).all()


@needs_mock
def test_ttnn_graph_counts_circular_buffers_and_the_plan_misses_only_the_tensors_alive_across_each_op(mock_n150):
    pipeline = DeiTPipeline(random_checkpoint("tiny"), mock_n150, get_policy("bf8"), 2)
    try:
        records = dry_run(pipeline)
    finally:
        pipeline.model.release()
    table = records_table(records, pipeline.plan, mock_n150.l1_bytes_per_core).set_index("#")
    by_config = table.groupby("plan config")
    # circular buffers are no allocator buffers: the peak ttnn.graph counts is above what the allocator holds
    assert (table["ttnn.graph peak"] >= table["L1 allocated/core"]).all()
    assert (by_config.get_group("layernorm")["op CBs"] > 0).all() and (by_config.get_group("ff1")["op CBs"] > 0).all()
    # what the plan leaves out: the residual (one encoder shard), V beside Q.K^T and softmax, the first head's logits
    residual = by_config.get_group("matmul_output_memory_config")["op buffers"].iloc[0]
    value = by_config.get_group("attention_by_value")["op buffers"].iloc[0]
    logits = by_config.get_group("classifier")["op buffers"].iloc[0]
    encoder_ops = table.loc[10:]  # after the embeddings, which have no estimate
    assert encoder_ops["ttnn - plan"].between(0, residual + max(value, logits)).all()
    for config in ("qkv", "self_output", "ff1", "ff2"):  # their circular buffers: the plan's and ttnn's agree exactly
        assert (by_config.get_group(config)["ttnn - plan"] == residual).all(), config
    for config in ("layernorm", "matmul_output_memory_config"):  # the residual is their input: nothing left out
        assert (by_config.get_group(config)["ttnn - plan"] == 0).all(), config


@needs_mock
def test_the_visualizer_report_holds_one_operation_per_op_buffers_circular_buffers_and_the_chip(mock_n150, tmp_path):
    import sqlite3

    from deit_tt.backends.recording import REPORT_BOOKKEEPING_OPS, graph_report

    pipeline = DeiTPipeline(random_checkpoint("tiny"), mock_n150, get_policy("bf8"), 1)
    try:
        records = dry_run(pipeline)
        database = graph_report(pipeline, tmp_path)
    finally:
        pipeline.model.release()
    assert database == tmp_path / "db.sqlite"
    with sqlite3.connect(database) as db:
        names = [name for (name,) in db.execute("SELECT name FROM operations ORDER BY operation_id")]
        issued = [name for name in names if name not in REPORT_BOOKKEEPING_OPS]
        assert issued == [record.op for record in records] and len(issued) == 193
        l1_buffers = db.execute("SELECT count(*) FROM buffers WHERE buffer_type = 1").fetchone()[0]
        with_cbs = db.execute("SELECT count(*) FROM captured_graph WHERE captured_graph LIKE '%circular_buffer_allocate%'").fetchone()[0]
        executions = db.execute("SELECT count(*) FROM operation_executions").fetchone()[0]
        # ttnn lists every device the process has opened (earlier tests' too): read the one holding the buffers.
        device = db.execute(
            "SELECT num_x_compute_cores, num_y_compute_cores, l1_bank_size FROM devices"
            " WHERE device_id IN (SELECT DISTINCT device_id FROM buffers)"
        ).fetchall()
    assert l1_buffers > 0 and with_cbs > 0 and executions > 0
    assert device == [(8, 8, mock_n150.l1_bytes_per_core)]  # the n150's compute grid and the allocator's bank
    descriptor = (tmp_path / "cluster_descriptor.yaml").read_text()
    assert "arch:" in descriptor and "wormhole" in descriptor.lower()


def test_report_without_dry_run_is_one_line_before_anything_loads(capsys, tmp_path):
    from deit_tt.cli import main

    assert main(["plan", "--model", "random:tiny", "--report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --report captures the dry run's forward: add --dry-run\n"


@pytest.mark.parametrize("command", ["classify", "evaluate"])
def test_the_mock_executor_is_refused_where_values_are_needed_before_anything_loads(capsys, tmp_path, command):
    from deit_tt.cli import main

    argv = {"classify": [str(next((ROOT / "data" / "images").glob("*.jpg")))], "evaluate": ["--data", str(tmp_path)]}[command]
    assert main([command, *argv, "--executor", "mock", "--model", "random:tiny"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {command} needs computed values, and the mock device computes none")
    assert "\n" not in error


@needs_mock
def test_the_library_and_the_widget_refuse_mock_outputs_too(mock_n150):
    from deit_tt.classify import classify_sources
    from deit_tt.analysis.widgets import ClassifierWidget

    pipeline = DeiTPipeline(random_checkpoint("tiny"), mock_n150, get_policy("bf8"), 1)
    try:
        with pytest.raises(UserFacingError, match="classify needs computed values"):
            classify_sources(pipeline, [("photo", str(next((ROOT / "data" / "images").glob("*.jpg"))))])
        with pytest.raises(UserFacingError, match="the upload widget needs computed values"):
            ClassifierWidget(pipeline)
    finally:
        pipeline.model.release()


# -- the CLI and the CI matrix, in subprocesses ------------------------------------------------------


@needs_mock
def test_plan_dry_run_prints_ttnn_s_per_op_allocation_and_the_peak():
    command = [sys.executable, "-m", "deit_tt", "plan", "--dry-run", "--model", "random:tiny", "--batch", "1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"executor: {mock_device.NO_VALUES}")
    assert lines[1] == "193 ops validated, planned and allocated by ttnn; L1 bank 1360544 B per core"
    assert lines[2].startswith("peak L1 held by buffers: ") and "B per core" in lines[2]
    assert lines[3].startswith("peak L1 with circular buffers: ") and "margin to the bank" in lines[3]
    table = lines[5:]
    assert len(table) == 1 + 193 and table[1].split()[:2] == ["0", "ttnn.fold"]


@needs_mock
@pytest.mark.slow
@pytest.mark.parametrize("chip", MATRIX_CHIPS)
def test_every_size_head_batch_and_policy_runs_on_the_mock_or_is_refused_by_a_named_rule(mock_processes, chip):
    finished = mock_processes[chip].result()
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = finished.stdout.splitlines()
    *results, device = [json.loads(line) for line in lines if line.startswith("{")]  # ttnn may print to stdout too
    assert len(results) == 3 * 2 * 3 * 3  # sizes x heads x policies x batches
    problems = [r for r in results if r["outcome"] not in ("completed", "refused")]
    assert not problems, problems
    bank = device["l1_bank_bytes"]
    for result in results:
        if result["outcome"] == "completed":
            assert result["ops"] == 193  # distilled and plain alike: the heads are one matmul
            assert result["dram_outputs"] == [], result  # before: the embeddings' concat, to_layout and add
            assert result["peak_l1"] <= result["peak_l1_with_cbs"] <= bank, result
            print(
                f"{chip} {result['model']} {result['policy']} b{result['batch']}: peak L1 with circular buffers "
                f"{result['peak_l1_with_cbs']} B per core, margin {bank - result['peak_l1_with_cbs']} B of {bank} B"
            )
        else:
            assert result["rule"] in ALL_RULES
    assert device["grid"] == list(runtime.CHIPS[chip].grid)
    assert bank == runtime.CHIPS[chip].l1_bytes_per_core


@needs_mock
@pytest.mark.parametrize("mesh, chips, shape", [("n300", 2, [1, 2]), ("t3k 1x8", 8, [1, 8]), ("t3k 2x4", 8, [2, 4])])
def test_a_mesh_forward_splits_the_batch_over_every_chip_and_gathers_the_logits(mock_processes, mesh, chips, shape):
    finished = mock_processes[mesh].result()
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.splitlines()[-1])
    assert result["chips"] == chips and result["mesh"] == shape
    assert result["images"] == 8 * chips + 3  # one full forward and one padded with blank images
    assert result["logits"] == result["distillation_logits"] == [8 * chips + 3, 1000]
    assert not result["any_value"] and result["ops"] == 193
    assert result["input"] == "L1 height 1568x64@8x2 bfloat16"  # each chip folds its own 8 images
    # chip i gets images 8i..8i+7 (split on the host by the executor's mapper) and they come back in order
    assert result["images_per_chip"] == [list(range(8 * chip, 8 * chip + 8)) for chip in range(chips)]
    assert result["gathered_order"] == list(range(8 * chips))
    assert f"batch 8 per chip x {chips} chips" in result["banner"] and f"({chips} chips, wormhole_b0" in result["banner"]


@needs_mock
@pytest.mark.parametrize(
    "alter",
    [
        lambda root: mock_device._sfpi_compiler(root).write_text(mock_device._stub_text() + "\ntouch /tmp/ran-unchecked\n"),
        lambda root: mock_device._sfpi_compiler(root).chmod(0o644),
        lambda root: (mock_device._sfpi_compiler(root).parent / "riscv-tt-elf-objcopy").write_text("#!/bin/sh\n"),
        lambda root: ((root / "tt_metal").unlink(), (root / "tt_metal").symlink_to("/tmp")),
    ],
    ids=["edited-stub", "stub-not-executable", "extra-tool", "mirror-redirected"],
)
def test_an_altered_mock_runtime_root_is_rebuilt_from_the_package_before_use(tmp_path, monkeypatch, alter):
    monkeypatch.setenv("DEIT_TT_CACHE", str(tmp_path / "cache"))
    root = mock_device.prepare_runtime_root()
    alter(root)
    assert not mock_device._intact(root)
    assert mock_device.prepare_runtime_root() == root and mock_device._intact(root)
    assert _stub_compiler().read_text() == mock_device._stub_text() and os.access(_stub_compiler(), os.X_OK)
    assert sorted(path.name for path in _stub_compiler().parent.iterdir()) == [mock_device.COMPILER]
    assert (root / "tt_metal").resolve() == (Path(ttnn.__file__).parent / "tt_metal").resolve()


@needs_mock
def test_a_cache_that_cannot_hold_the_mock_runtime_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DEIT_TT_CACHE", str(blocker / "cache"))
    monkeypatch.delenv(mock_device.RUNTIME_ROOT_ENV, raising=False)
    assert not mock_device.can_build()  # host runs then go on without the root
    with pytest.raises(mock_device.MockDeviceError) as refused:
        mock_device.mock_environment()
    message = str(refused.value)
    assert message.startswith("cannot build the mock device's runtime in ") and "set $DEIT_TT_CACHE to a writable folder" in message
    assert "\n" not in message


@needs_mock
def test_tt_metal_logs_go_under_the_cache_not_into_the_current_directory(tmp_path):
    """ttnn's mock writes generated/fabric/*.yaml on opening; TT_METAL_LOGS_PATH (rtoptions.cpp) moves it."""
    ours = (runtime.MOCK_CLUSTER_ENV, mock_device.RUNTIME_ROOT_ENV, mock_device.JIT_CACHE_ENV, mock_device.LOGS_ENV)  # conftest's
    environment = {name: value for name, value in os.environ.items() if name not in ours}
    environment.update(DEIT_TT_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    script = "from deit_tt.backends.runtime import open_mock\nopen_mock('n150').close()\n"
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environment, check=True, capture_output=True, timeout=300)
    assert not (tmp_path / "generated").exists()
    assert list((tmp_path / "cache" / "mock-runtime" / "logs" / "generated").iterdir())


@needs_mock
def test_a_root_inherited_through_the_environment_is_checked_too(tmp_path, monkeypatch):
    monkeypatch.setenv("DEIT_TT_CACHE", str(tmp_path / "cache"))
    root = mock_device.prepare_runtime_root()
    monkeypatch.setenv(mock_device.RUNTIME_ROOT_ENV, str(root))  # as a child of a deit_tt process sees it
    mock_device._sfpi_compiler(root).write_text("#!/bin/sh\ntouch /tmp/ran-unchecked\n")
    assert mock_device.mock_environment()[mock_device.RUNTIME_ROOT_ENV] == str(root)
    assert mock_device._intact(root)
