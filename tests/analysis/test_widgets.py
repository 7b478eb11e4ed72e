"""The upload widget, driven headlessly the way ipywidgets 8 delivers uploads: every image kind, invalid
files (one-line message, widget keeps working), the empty value, the browser's Bunch entries, the busy
state, the size limit and what is left on screen after a failure. tests/analysis/test_browser.py shows it in a page."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import torch

from deit_tt.analysis.widgets import MAX_UPLOAD_MB, MEGABYTE, SERVER_DEFAULT_MB, ClassifierWidget
from lab_server import SERVER_CONFIG_DIR
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
    assert set(result.tile_pngs) == MAP_KEYS and all(png.startswith(b"\x89PNG") for png in result.tile_pngs.values())
    assert {key: bytes(tile.value) for key, tile in widget.map_tiles.items()} == result.tile_pngs
    assert bytes(widget.preview.value).startswith(b"\x89PNG")
    assert widget.table.value.count("<table") == 3 and name in widget.status.value  # one table per head
    assert "self-test" not in widget.status.value and not result.self_test
    assert widget.result_view.layout.display == "flex"
    assert not widget.upload.disabled
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
    assert all(bytes(tile.value) == b"" for tile in widget.map_tiles.values()) and widget.table.value == ""
    assert widget.result_view.layout.display == "none"  # no empty image slots (broken-image icons) on screen
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
        runtime = shallow_pipeline(1).runtime

        def banner(self):
            return "broken pipeline"

        def __call__(self, *args, **kwargs):
            raise RuntimeError("L1 buffer clash\nsecond line")

    widget = ClassifierWidget(Broken())
    upload(widget, kind_bytes("rgb_jpeg"), "photo.jpg")
    assert widget.last_error == "photo.jpg: classification failed (RuntimeError); see the widget's last_exception"
    assert str(widget.last_exception) == "L1 buffer clash\nsecond line"  # the details, for whoever debugs it
    upload(widget, kind_bytes("not_an_image"), "notes.txt")
    assert widget.last_exception is None  # an ordinary bad file leaves no stale exception behind
    widget.pipeline = shallow_pipeline(1)
    upload(widget, kind_bytes("rgb_jpeg"), "photo.jpg")
    assert_success(widget, "photo.jpg")
    assert widget.last_exception is None


def test_corrupt_file_message_is_in_our_words(widget):
    upload(widget, kind_bytes("truncated_jpeg"), "cut.jpg")
    assert widget.last_error == "cut.jpg: image data is truncated or corrupt; re-export or re-download the file"


def test_nothing_shown_before_the_first_upload(widget):
    assert widget.result_view.layout.display == "none" and widget.last_result is None
    assert "Choose an image" in widget.status.value


def test_failure_clears_the_previous_result(widget):
    upload(widget, kind_bytes("rgb_jpeg"), "good.jpg")
    assert_success(widget, "good.jpg")
    upload(widget, kind_bytes("not_an_image"), "notes.txt")
    assert widget.result_view.layout.display == "none" and widget.last_result is None
    assert bytes(widget.preview.value) == b"" and widget.table.value == "" and "good.jpg" not in widget.status.value


def test_busy_while_processing():
    """The kernel sends trait changes as they happen: meanwhile a person sees a disabled button and a spinner."""
    seen = []

    class Watcher:
        def __init__(self, pipeline):
            self.pipeline, self.checkpoint, self.runtime = pipeline, pipeline.checkpoint, pipeline.runtime

        def banner(self):
            return self.pipeline.banner()

        def __call__(self, *args, **kwargs):
            seen.append((widget.upload.disabled, widget.result_view.layout.display, widget.status.value))
            return self.pipeline(*args, **kwargs)

    widget = ClassifierWidget(Watcher(shallow_pipeline(1)))
    upload(widget, kind_bytes("rgb_jpeg"), "photo.jpg")
    ((disabled, display, status),) = seen
    assert disabled and display == "none" and "fa-spin" in status and "Classifying photo.jpg" in status
    assert_success(widget, "photo.jpg")


def test_size_limit_is_stated_and_enforced():
    widget = ClassifierWidget(shallow_pipeline(1), max_upload_mb=1)
    assert "up to 1 MB" in widget.hint.value and "make lab" in widget.hint.value
    upload(widget, b"\0" * (2 * MEGABYTE), "huge.jpg")
    assert widget.last_error == "huge.jpg: is 2 MB, over the 1 MB upload limit; downscale it first"
    upload(widget, kind_bytes("rgb_jpeg"), "small.jpg")
    assert_success(widget, "small.jpg")


def test_repo_server_config_lets_the_largest_upload_through():
    """`make lab` and the browser test start JupyterLab with this config; Tornado's default would drop the message."""
    config = json.loads((SERVER_CONFIG_DIR / "jupyter_server_config.json").read_text())
    limit = config["ServerApp"]["tornado_settings"]["websocket_max_message_size"]
    assert limit >= 2 * MAX_UPLOAD_MB * MEGABYTE > SERVER_DEFAULT_MB * MEGABYTE  # room for the message's own framing


def test_full_depth_model_and_maps_match_attention_module():
    """random:tiny (12 layers): the widget's maps are the attention module's on the pipeline's own captures."""
    from deit_tt.analysis import attention

    class Recorder:
        def __init__(self, pipeline):
            self.pipeline, self.checkpoint, self.runtime, self.outputs = pipeline, pipeline.checkpoint, pipeline.runtime, []

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
    layers = attention.attention_from_captures(output.stages)
    assert len(layers) == recorder.checkpoint.config.num_hidden_layers == 12 != SHALLOW_LAYERS
    assert torch.equal(result.maps["cls/last"], attention.token_attention_map(layers[-1], "cls")[0])
    assert torch.equal(result.maps["distillation/rollout"], attention.attention_rollout(layers, "distillation")[0])
    assert result.classification.average[0].index == int(output.logits[0].argmax())
    assert "RANDOM-INITIALISED" in widget.banner.value and "random weights" in widget.maps_note.value


def test_self_test_is_marked_until_the_learner_uploads(widget):
    """The notebook's self-test leaves a result on screen: it must not pass for the learner's first upload."""
    path = DATA_IMAGES / "coffee_cup.jpg"
    result = widget.self_test(path)
    assert result is not None and result.self_test and result.name == path.name
    assert 'data-kind="self-test"' in widget.status.value and "not an upload of yours" in widget.status.value
    assert widget.history[-1] == (f"self-test: {path.name}", "ok")
    upload(widget, path.read_bytes(), "mine.jpg")
    assert_success(widget, "mine.jpg")
    assert 'data-kind="ok"' in widget.status.value


def test_a_photo_is_flagged_outside_a_scenes_model_and_a_scene_is_not():
    from deit_tt.analysis.widgets import outside_training
    from deit_tt.data.images import load_image
    from deit_tt.data.scenes import BUNDLED_SCENES

    class ScenesCheckpoint:
        name = "shapes:tiny"

    photo = load_image(DATA_IMAGES / "cat_chelsea.jpg")
    warning = outside_training(ScenesCheckpoint, photo)
    assert warning == ("shapes:tiny knows only the ten textures of the generated 224x224 scenes; this 451x300 image is "
                       "outside them, so its class and maps say nothing about it")
    assert outside_training(ScenesCheckpoint, load_image(BUNDLED_SCENES / "rings.png")) is None
    assert outside_training(tiny_pipeline().checkpoint, photo) is None  # an ImageNet model: photos are its domain
