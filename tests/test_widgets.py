"""The upload widget, driven headlessly the way ipywidgets 8 delivers uploads: every image kind, invalid
files (one-line message, widget keeps working), the empty value, and the browser's Bunch entries."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import torch

from deit_tt.widgets import ClassifierWidget
from test_classify import SHALLOW_LAYERS, shallow_pipeline, tiny_pipeline
from test_images import DATA_IMAGES, INVALID_KINDS, VALID_KINDS, kind_bytes, kind_filename

MAP_KEYS = {"cls/last", "cls/rollout", "distillation/last", "distillation/rollout"}


def entry(data: bytes, name: str, mime: str = "image/png") -> dict:
    return {"name": name, "type": mime, "size": len(data), "content": memoryview(data), "last_modified": datetime.now(timezone.utc)}


def upload(widget: ClassifierWidget, data: bytes, name: str) -> None:
    widget.upload.value = (entry(data, name),)  # fires the observer synchronously, as the kernel would


@pytest.fixture
def widget():
    return ClassifierWidget(shallow_pipeline(1))


def assert_success(widget: ClassifierWidget, name: str) -> None:
    assert widget.last_error is None, widget.last_error
    result = widget.last_result
    assert result is not None and result.name == name
    assert result.image.mode == "RGB"
    classification = result.classification
    assert len(classification.average) == len(classification.cls) == len(classification.distillation) == 5
    assert set(result.maps) == MAP_KEYS
    assert all(value.shape == (14, 14) for value in result.maps.values())
    assert result.figure_png.startswith(b"\x89PNG")
    assert widget.maps_view.value == result.figure_png and bytes(widget.preview.value).startswith(b"\x89PNG")
    assert "<table>" in widget.table.value and name in widget.status.value
    assert widget.upload.value == ()  # reset, so the same file can be chosen again
    assert widget.history[-1] == (name, "ok")


@pytest.mark.parametrize("kind", sorted(VALID_KINDS))
def test_valid_kind(widget, kind):
    name = kind_filename(kind)
    upload(widget, kind_bytes(kind), name)
    assert_success(widget, name)


@pytest.mark.parametrize("kind", sorted(INVALID_KINDS))
def test_invalid_kind_gives_one_line_message(widget, kind):
    name = kind_filename(kind)
    upload(widget, kind_bytes(kind), name)
    assert widget.last_result is None
    message = widget.last_error
    assert message and "\n" not in message and message.startswith(f"{name}: ") and "Traceback" not in message
    assert "b00020" in widget.status.value and name in widget.status.value  # shown, in red
    assert bytes(widget.maps_view.value) == b"" and widget.table.value == ""
    assert widget.upload.value == () and widget.history == [(name, message)]


def test_keeps_working_after_every_kind_of_error(widget):
    upload(widget, kind_bytes("tiny_3x5"), "before.png")
    assert_success(widget, "before.png")
    for kind in sorted(INVALID_KINDS):
        upload(widget, kind_bytes(kind), kind_filename(kind))
        assert widget.last_result is None and widget.last_error.startswith(kind_filename(kind))
    upload(widget, kind_bytes("tiny_3x5"), "after.png")
    assert_success(widget, "after.png")
    assert [status == "ok" for _, status in widget.history] == [True] + [False] * len(INVALID_KINDS) + [True]


def test_empty_value_is_ignored(widget):
    upload(widget, kind_bytes("gray_l"), "first.png")
    before = (widget.last_result, list(widget.history))
    widget.upload.value = ()
    assert (widget.last_result, widget.history) == before and widget.last_error is None


def test_browser_message_path(widget):
    """Entries from the browser arrive through the deserialiser as traitlets Bunch objects."""
    data = (DATA_IMAGES / "coffee_cup.jpg").read_bytes()
    widget.upload.set_state(
        {"value": [{"name": "coffee.jpg", "type": "image/jpeg", "size": len(data), "content": memoryview(data), "last_modified": 1_700_000_000_000}]}
    )
    assert_success(widget, "coffee.jpg")


def test_pipeline_failure_is_one_line_and_widget_survives():
    class Broken:
        checkpoint = shallow_pipeline(1).checkpoint

        def banner(self):
            return "broken pipeline"

        def __call__(self, *args, **kwargs):
            raise RuntimeError("L1 buffer clash\nsecond line")

    widget = ClassifierWidget(Broken())
    upload(widget, kind_bytes("rgb_jpeg"), "photo.jpg")
    assert widget.last_error == "photo.jpg: unexpected RuntimeError: L1 buffer clash second line"
    widget.pipeline = shallow_pipeline(1)
    upload(widget, kind_bytes("rgb_jpeg"), "photo.jpg")
    assert_success(widget, "photo.jpg")


def test_full_depth_model_and_maps_match_attention_module():
    """random:tiny (12 layers): the widget's maps are the attention module's on the pipeline's own captures."""
    from deit_tt import attention

    class Recorder:
        def __init__(self, pipeline):
            self.pipeline, self.checkpoint, self.outputs = pipeline, pipeline.checkpoint, []

        def banner(self):
            return self.pipeline.banner()

        def __call__(self, *args, **kwargs):
            self.outputs.append(self.pipeline(*args, **kwargs))
            return self.outputs[-1]

    recorder = Recorder(tiny_pipeline())
    widget = ClassifierWidget(recorder, top_k=3)
    path = DATA_IMAGES / "cat_chelsea.jpg"
    upload(widget, path.read_bytes(), path.name)
    result = widget.last_result
    assert result is not None and len(result.classification.average) == 3
    (output,) = recorder.outputs
    layers = attention.attention_from_captures(output.captures)
    assert len(layers) == recorder.checkpoint.config.num_hidden_layers == 12 != SHALLOW_LAYERS
    assert torch.equal(result.maps["cls/last"], attention.token_attention_map(layers[-1], "cls")[0])
    assert torch.equal(result.maps["distillation/rollout"], attention.attention_rollout(layers, "distillation")[0])
    assert result.classification.average[0].index == int(output.logits[0].argmax())
    assert "RANDOM-INITIALISED" in widget.banner.value and "random weights" in widget.maps_note.value
