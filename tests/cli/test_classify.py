"""``python -m deit_tt classify``: every image kind, the endpoint JSON format, mixed good/bad inputs,
exit codes and the base64-on-stdin path. Random weights: structure is asserted, not labels."""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import math
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from transformers import DeiTForImageClassificationWithTeacher

from deit_tt import cli
from deit_tt.checkpoints.loading import Checkpoint, random_config
from deit_tt.classify import decode_input_data, results_from_output, to_json, top_predictions
from deit_tt.errors import UserFacingError
from deit_tt.data.images import load_image
from deit_tt.checkpoints.labels import imagenet_class_names
from deit_tt.pipeline import build_pipeline
from deit_tt.data.preprocessing import preprocess
from test_images import DATA_IMAGES, INVALID_KINDS, VALID_KINDS, kind_bytes, kind_filename

REPO = Path(__file__).resolve().parents[2]
MODEL_ARGS = ["--model", "random:tiny", "--executor", "host"]
TOP_K = 3
SHALLOW_LAYERS = 2


@functools.cache
def tiny_pipeline():
    """The random:tiny host pipeline (12 layers), batch 1, built once per session (also used by test_widgets)."""
    return build_pipeline(model="random:tiny", executor="host", batch_size=1)


@functools.cache
def shallow_pipeline(batch_size: int = 1):
    """DeiT-tiny cut to 2 layers, random weights: the same pipeline code, ~6x faster per forward.

    Used where many images go through only to check how each image kind is handled.
    """
    config = random_config("tiny")
    config.num_hidden_layers = SHALLOW_LAYERS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DeiTForImageClassificationWithTeacher(config).eval()
    identity = f"test:random:tiny:{SHALLOW_LAYERS}layers:seed0:transformers-{version('transformers')}:torch-{version('torch')}"
    checkpoint = Checkpoint(model, f"random:tiny ({SHALLOW_LAYERS} layers)", identity, is_random=True)
    return build_pipeline(model=checkpoint, executor="host", batch_size=batch_size)


class _KeepOpen:
    """The shared pipeline, handed to the command, which closes what it builds."""

    def __init__(self, pipeline, calls):
        self._pipeline, self._calls = pipeline, calls

    def __call__(self, *args, **kwargs):
        return self._pipeline(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def close(self):
        self._calls.append("close")


def run_cli(argv: list[str], stdin: str | None = None, pipeline=None):
    """Run ``python -m deit_tt`` in-process with a shared pipeline (default: random:tiny);
    returns (exit code, stdout, stderr, calls: the build_pipeline kwargs, then "close")."""
    calls: list = []

    def fake_build(**kwargs):
        calls.append(kwargs)
        return _KeepOpen(pipeline or tiny_pipeline(), calls)

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("deit_tt.pipeline.build_pipeline", fake_build)
        if stdin is not None:
            patch.setattr(sys, "stdin", io.StringIO(stdin))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    return code, out.getvalue(), err.getvalue(), calls


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------ one JSON run over every kind

ALL_KINDS = sorted(VALID_KINDS) + sorted(INVALID_KINDS) + ["missing_file"]


@pytest.fixture(scope="module")
def json_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    paths = []
    for kind in ALL_KINDS:
        path = folder / (kind_filename(kind) if kind != "missing_file" else "missing_file.jpg")
        if kind != "missing_file":
            path.write_bytes(kind_bytes(kind))
        paths.append(str(path))
    code, out, err, calls = run_cli(["classify", *paths, *MODEL_ARGS, "--top-k", str(TOP_K), "--json"], pipeline=shallow_pipeline(4))
    return {"code": code, "out": out, "err": err, "calls": calls, "paths": paths, "entries": json.loads(out)}


def entry_for(run, kind):
    return run["entries"][ALL_KINDS.index(kind)]


def test_json_run_shape_and_exit_code(json_run):
    assert json_run["code"] == 0  # some images were bad, but not all
    assert isinstance(json_run["entries"], list) and len(json_run["entries"]) == len(ALL_KINDS)
    assert json_run["calls"][0] == {"model": "random:tiny", "executor": "host", "dtype_policy": "bf8", "batch_size": 8, "devices": None, "numerics": None}  # $DEIT_TT_BATCH resolved (and checked) before loading
    assert json_run["calls"][-1] == "close"


def test_json_stdout_is_only_json_and_banner_goes_to_stderr(json_run):
    assert json_run["out"].strip().startswith("[") and json_run["out"].count("\n") == 1
    assert "executor: host" in json_run["err"] and "RANDOM-INITIALISED" in json_run["err"]
    assert "could not be classified" in json_run["err"]


@pytest.mark.parametrize("kind", sorted(VALID_KINDS))
def test_json_entry_for_valid_kind(json_run, kind):
    entry = entry_for(json_run, kind)
    assert isinstance(entry, list) and len(entry) == TOP_K
    names = set(imagenet_class_names())
    for item in entry:
        assert set(item) == {"label", "score"}
        assert item["label"] in names
        assert isinstance(item["score"], float) and 0.0 <= item["score"] <= 1.0
    scores = [item["score"] for item in entry]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) <= 1.0 + 1e-9


@pytest.mark.parametrize("kind", sorted(INVALID_KINDS) + ["missing_file"])
def test_json_error_entry_for_invalid_kind(json_run, kind):
    entry = entry_for(json_run, kind)
    assert isinstance(entry, dict) and set(entry) == {"error"}
    message = entry["error"]
    assert "\n" not in message and message.startswith(json_run["paths"][ALL_KINDS.index(kind)] + ": ")
    assert "Traceback" not in message


def test_json_scores_are_softmax_of_the_averaged_logits():
    pipeline = tiny_pipeline()
    image = load_image(DATA_IMAGES / "cat_chelsea.jpg")
    output = pipeline(preprocess([image]))
    assert torch.allclose(output.logits, (output.cls_logits + output.distillation_logits) / 2, atol=1e-3)
    expected = torch.softmax(output.logits[0].double(), -1)
    result = results_from_output(output, imagenet_class_names(), ["cat"], k=5)[0]
    assert [p.index for p in result.average] == expected.topk(5).indices.tolist()
    assert [p.score for p in result.average] == pytest.approx(expected.topk(5).values.tolist(), abs=1e-9)
    assert [p.index for p in result.cls] == torch.softmax(output.cls_logits[0], -1).topk(5).indices.tolist()
    assert [p.index for p in result.distillation] == output.distillation_logits[0].topk(5).indices.tolist()
    assert to_json([result])[0] == [{"label": p.label, "score": p.score} for p in result.average]


def test_top_predictions_full_softmax_sums_to_one():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    predictions = top_predictions(logits, imagenet_class_names(), k=1000)
    assert math.isclose(sum(p.score for p in predictions), 1.0, rel_tol=1e-9)
    assert predictions[0].index == int(logits.argmax())


# ------------------------------------------------------------------ table, exit codes, stdin


def test_table_output(tmp_path):
    good = DATA_IMAGES / "coffee_cup.jpg"
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    code, out, err, _ = run_cli(["classify", str(good), str(bad), str(tmp_path / "gone.png"), *MODEL_ARGS, "--top-k", "2"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == tiny_pipeline().banner()
    error_lines = [line for line in lines if "ERROR" in line]
    assert len(error_lines) == 2
    assert error_lines[0] == f"ERROR {bad}: is not an image file; pass a JPEG, PNG, WebP, GIF, BMP or TIFF file"
    assert error_lines[1] == f"ERROR {tmp_path / 'gone.png'}: no such file; check the path"
    block = lines[lines.index(str(good)) :][:4]
    assert "average of heads" in block[1] and "CLS head" in block[1] and "distillation head" in block[1]
    assert block[2].split()[0] == "1" and block[3].split()[0] == "2"


def test_all_bad_exits_non_zero(tmp_path):
    paths = []
    for kind in ("zero_bytes", "truncated_png"):
        path = tmp_path / kind_filename(kind)
        path.write_bytes(kind_bytes(kind))
        paths.append(str(path))
    code, out, err, _ = run_cli(["classify", *paths, str(tmp_path / "nope.jpg"), *MODEL_ARGS, "--json"])
    assert code == 1
    entries = json.loads(out)
    assert len(entries) == 3 and all(set(entry) == {"error"} for entry in entries)
    assert "none of the 3 image(s) could be classified" in err


def test_stdin_base64(tmp_path):
    good = (DATA_IMAGES / "rocket_falcon9_dscovr.jpg").read_bytes()
    payload = {
        "input_data": [
            b64(good),
            "data:image/png;base64," + b64(kind_bytes("palette_transparent")),
            "this is not base64!",
            b64(kind_bytes("truncated_jpeg")),
            42,
        ]
    }
    other = tmp_path / "cmyk.jpg"
    other.write_bytes(kind_bytes("cmyk_jpeg"))
    argv = ["classify", "-", str(other), *MODEL_ARGS, "--json", "--top-k", "1"]
    code, out, err, _ = run_cli(argv, stdin=json.dumps(payload), pipeline=shallow_pipeline(4))
    assert code == 0
    entries = json.loads(out)
    assert len(entries) == 6
    assert [isinstance(entry, list) for entry in entries] == [True, True, False, False, False, True]
    assert entries[2]["error"].startswith("stdin[2]: is not valid base64")
    assert entries[3]["error"].startswith("stdin[3]: image data is truncated")
    assert entries[4]["error"].startswith("stdin[4]: is a JSON int")


@pytest.mark.parametrize(
    "stdin, message",
    [("{not json", "stdin is not valid JSON"), ('{"images": []}', 'no "input_data" list'), ("[1, 2]", 'no "input_data" list')],
)
def test_stdin_malformed_payload(stdin, message):
    code, out, err, calls = run_cli(["classify", "-", *MODEL_ARGS, "--json"], stdin=stdin)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert calls == []  # refused before any model was built


def test_decode_input_data_names_and_bytes():
    items = decode_input_data(json.dumps({"input_data": [b64(b"abc"), " " + b64(b"xyz") + "\n"]}))
    assert items == [("stdin[0]", b"abc"), ("stdin[1]", b"xyz")]
    with pytest.raises(UserFacingError):
        decode_input_data("null")


def test_end_to_end_subprocess_json_stdin():
    """The real command in a fresh process: stdout must parse as JSON with nothing else in it."""
    payload = json.dumps({"input_data": [b64((DATA_IMAGES / "cat_chelsea.jpg").read_bytes()), b64(b"not an image")]})
    completed = subprocess.run(
        [sys.executable, "-m", "deit_tt", "classify", "-", *MODEL_ARGS, "--batch-size", "1", "--top-k", "2", "--json"],
        input=payload, capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    entries = json.loads(completed.stdout)
    assert len(entries) == 2 and len(entries[0]) == 2 and set(entries[1]) == {"error"}
    assert "RANDOM-INITIALISED" in completed.stderr and "Traceback" not in completed.stderr


def test_each_image_is_decoded_and_preprocessed_before_batching(tmp_path, monkeypatch):
    """Only one full-size decoded picture is alive at a time, whatever the batch (issue: 8 x 36 MP held at once)."""
    import gc
    import weakref

    from deit_tt import classify as classify_module

    decoded: list[weakref.ref] = []

    def tracked_load(source, name=None, exif_orientation=True):
        image = load_image(source, name, exif_orientation)
        decoded.append(weakref.ref(image))
        return image

    class Pipeline:
        images_per_forward = 4
        checkpoint = SimpleNamespace(name="counting", config=random_config("tiny"))
        runtime = SimpleNamespace(require_values=lambda what: None)
        alive_at_forward: list[int] = []

        def __call__(self, pixel_values):
            gc.collect()
            self.alive_at_forward.append(sum(ref() is not None for ref in decoded))
            logits = torch.zeros(pixel_values.shape[0], 1000)
            return SimpleNamespace(logits=logits, cls_logits=logits, distillation_logits=logits)

    monkeypatch.setattr(classify_module, "load_image", tracked_load)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), (10, 200, 30)).save(photo)
    pipeline = Pipeline()
    results = classify_module.classify_sources(pipeline, [(f"p{i}", str(photo)) for i in range(8)])
    assert all(result.ok for result in results) and len(decoded) == 8
    assert pipeline.alive_at_forward == [0, 0]


def test_non_finite_logits_are_an_error_naming_the_checkpoint_and_json_never_holds_nan(tmp_path):
    from deit_tt.classify import classify_pixels

    class Damaged:
        checkpoint = SimpleNamespace(name="damaged-folder", config=random_config("tiny"))

        def __call__(self, pixel_values):
            logits = torch.full((pixel_values.shape[0], 1000), float("nan"))
            return SimpleNamespace(logits=logits, cls_logits=logits, distillation_logits=None)

    with pytest.raises(UserFacingError) as refused:
        classify_pixels(Damaged(), torch.zeros(2, 3, 224, 224), ["a", "b"])
    assert str(refused.value).startswith("damaged-folder gave non-finite logits (NaN or infinity)")
