"""An upload-an-image widget: predictions of both heads and where the CLS and distillation tokens look.

``ClassifierWidget(pipeline)`` is an ipywidgets 8 ``VBox`` holding a ``FileUpload(accept="image/*")``.
On upload it decodes the image (``deit_tt.data.images.load_image``), runs the pipeline once with captures,
and shows the top-5 of the averaged head, the CLS head and the distillation head, plus attention
overlays of both tokens: the last layer (mean over heads) and the rollout through all layers. The head tables
and the map tiles are separate boxes in wrapping rows, so a narrow notebook (a 700 px window with the file
browser open) stacks them instead of clipping a column or shrinking the maps. A model trained on the generated
scenes (``shapes:tiny``) warns, above its answer, when the image is not such a scene.

``widget.self_test(path)`` feeds a file through the same upload path and marks the result as the self-test,
not the learner's upload, until a real upload replaces it.

While a file is processed the button is disabled and a spinner shows; a new upload clears the previous
result, so after a failure only the one-line message is shown. Files up to ``MAX_UPLOAD_MB`` are accepted,
more than Jupyter's default websocket message limit (``SERVER_DEFAULT_MB``), above which a file never
reaches the kernel: ``make lab`` starts JupyterLab with the repo's ``.jupyter/jupyter_server_config.json``,
which raises that limit, and the widget's hint line says so.

Everything shown is rendered into widgets (HTML, PNG ``Image``), and the outcome is kept in plain
attributes, so the widget works - and can be tested - without a browser:

- ``widget.last_result``: a ``WidgetResult`` for the last successful upload (None after a failure);
- ``widget.last_error``: the one-line message of the last failed upload (None after a success);
- ``widget.last_exception``: the exception behind an unexpected failure, for debugging (else None);
- ``widget.history``: ``(file name, "ok" | error message)`` for each upload handled (the self-test's name is
  prefixed with ``self-test: ``).

Headless use: assign ``widget.upload.value = ({"name": ..., "type": ..., "size": ..., "content":
memoryview(data), "last_modified": datetime},)``; the callback runs synchronously. An empty value
``()`` (which the widget itself sets after each upload, so the same file can be chosen again) is ignored.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import ipywidgets as widgets
import torch
from PIL import Image

from deit_tt.analysis import attention
from deit_tt.checkpoints.builtin import scenes_model_folder
from deit_tt.classify import ClassificationResult, results_from_output
from deit_tt.errors import UserFacingError
from deit_tt.data.images import SUPPORTED, ImageError, load_image
from deit_tt.checkpoints.labels import head_class_names, short_name
from deit_tt.data.preprocessing import preprocess
from deit_tt.data.scenes import SCENE_SIZE

TOP_K = 5
MEGABYTE = 2**20
MAX_UPLOAD_MB = 128  # a 40-megapixel photo fits even as an uncompressed TIFF
SERVER_DEFAULT_MB = 10  # Tornado's default websocket_max_message_size, what a plain `jupyter lab` lets through
PREVIEW_PX = 224
# Widget HTML inherits the 28 px line height of one-line controls; wrapped text reads better tighter.
_TEXT_STYLE = "line-height:1.4"
# As wide as the widget at most: 100% less the margin ipywidgets puts on either side of every child.
_FULL_WIDTH = "calc(100% - 2 * var(--jp-widgets-margin))"
MAP_KEYS = ("cls/last", "distillation/last", "cls/rollout", "distillation/rollout")


@dataclass
class WidgetResult:
    name: str
    image: Image.Image  # the decoded RGB upload
    classification: ClassificationResult
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # "cls/last", "distillation/rollout", ... -> [14, 14]
    tile_pngs: dict[str, bytes] = field(default_factory=dict)  # the same keys -> the captioned overlay shown
    warning: str | None = None  # the image is outside what the model was trained on
    self_test: bool = False  # fed by ``ClassifierWidget.self_test``, not uploaded by the learner


def outside_training(checkpoint, image: Image.Image) -> str | None:
    """Why ``checkpoint``'s answer for ``image`` means nothing, or None. A model trained on the generated scenes
    (224x224 pixels, ten textures) knows nothing else; any other size is taken as a photo."""
    if scenes_model_folder(checkpoint.name) is None or image.size == (SCENE_SIZE, SCENE_SIZE):
        return None
    return (f"{checkpoint.name} knows only the ten textures of the generated {SCENE_SIZE}x{SCENE_SIZE} scenes; this "
            f"{image.width}x{image.height} image is outside them, so its class and maps say nothing about it")


class ClassifierWidget(widgets.VBox):
    """Upload an image, see DeiT's predictions and the attention of its CLS and distillation tokens."""

    def __init__(self, pipeline, top_k: int = TOP_K, max_upload_mb: float = MAX_UPLOAD_MB, **kwargs):
        pipeline.runtime.require_values("the upload widget")
        self.pipeline = pipeline
        self.top_k = top_k
        self.max_upload_mb = max_upload_mb
        self.last_result: WidgetResult | None = None
        self.last_error: str | None = None
        self.last_exception: BaseException | None = None
        self.history: list[tuple[str, str]] = []
        self._next_is_self_test = False
        # ipywidgets 8 shows "<description> (<file count>)": the button takes the width of its text, never shrinks.
        self.upload = widgets.FileUpload(
            accept="image/*", multiple=False, description="Upload image", layout=widgets.Layout(width="auto", flex="0 0 auto")
        )
        self.hint = widgets.HTML(value=self._hint_html())
        self.status = widgets.HTML(value=self._status_html("Choose an image to classify.", kind="info"))
        self.banner = widgets.HTML(value=f'<div style="{_TEXT_STYLE}"><code>{html.escape(pipeline.banner())}</code></div>')
        # Fixed width, height from the picture, never stretched by its row; smaller only on narrow screens.
        self.preview = widgets.Image(
            format="png",
            layout=widgets.Layout(width=f"{PREVIEW_PX}px", max_width=_FULL_WIDTH, height="auto", align_self="flex-start", object_fit="contain"),
        )
        self.warning = widgets.HTML()
        # Beside the preview while there is room, else on a row of its own, where the head tables wrap.
        self.table = widgets.HTML(layout=widgets.Layout(flex="1 1 240px", min_width="0", max_width=_FULL_WIDTH))
        self.maps_note = widgets.HTML()
        # One tile per map, each at the model's 224 px (smaller only when the notebook is narrower), wrapping.
        self.map_tiles = {
            key: widgets.Image(format="png", layout=widgets.Layout(width=f"{PREVIEW_PX}px", max_width=_FULL_WIDTH, height="auto", object_fit="contain"))
            for key in MAP_KEYS
        }
        self.maps_view = widgets.HBox(list(self.map_tiles.values()), layout=widgets.Layout(flex_flow="row wrap"))
        # Hidden until there is a result: an empty Image would show as a broken-image icon.
        self.result_view = widgets.VBox(
            [self.warning, widgets.HBox([self.preview, self.table], layout=widgets.Layout(flex_flow="row wrap")), self.maps_note, self.maps_view],
            layout=widgets.Layout(display="none"),
        )
        self.upload.observe(self._on_upload, names="value")
        super().__init__(
            children=[self.banner, widgets.HBox([self.upload, self.hint], layout=widgets.Layout(flex_flow="row wrap")), self.status, self.result_view],
            **kwargs,
        )
        self.add_class("deit-tt-widget")  # a handle for page styles and browser tests

    # ------------------------------------------------------------------ events

    def _on_upload(self, change) -> None:
        files = change.get("new") or ()
        if not files:
            return  # reset to () - by us after an upload, or by the user
        entry = files[0]
        name = str(_field(entry, "name") or "upload")
        self_test, self._next_is_self_test = self._next_is_self_test, False
        self.upload.disabled = True
        try:
            self.process(bytes(_field(entry, "content") or b""), name, self_test=self_test)
        finally:
            self.upload.value = ()  # lets the same file be uploaded again
            self.upload.disabled = False

    def self_test(self, path) -> WidgetResult | None:
        """Feed the file at ``path`` through the upload path, as the browser delivers it, marked as the self-test."""
        from datetime import datetime, timezone
        from pathlib import Path

        path, self._next_is_self_test = Path(path), True
        data = path.read_bytes()
        self.upload.value = ({"name": path.name, "type": "", "size": len(data), "content": memoryview(data), "last_modified": datetime.now(timezone.utc)},)
        return self.last_result

    def process(self, content: bytes, name: str = "upload", self_test: bool = False) -> WidgetResult | None:
        """Classify one encoded image and update the display; never raises for a bad image."""
        self._clear()
        label = f"self-test: {name}" if self_test else name
        self.status.value = self._status_html(f"Classifying {label} ...", kind="busy")
        try:
            if len(content) > self.max_upload_mb * MEGABYTE:
                raise ImageError(name, "too_large", f"is {len(content) / MEGABYTE:.0f} MB, over the {self.max_upload_mb:g} MB upload limit; downscale it first")
            result = self._classify(content, name)
        except UserFacingError as error:
            return self._fail(label, str(error))
        except Exception as error:  # keep the widget alive whatever happens; the details stay in last_exception
            return self._fail(label, f"{name}: classification failed ({type(error).__name__}); see the widget's last_exception", error)
        result.self_test = self_test
        self.last_result, self.last_error, self.last_exception = result, None, None
        self.history.append((label, "ok"))
        top = result.classification.top1
        if self_test:
            text = f"self-test: {name}: {short_name(top.label)} ({top.score:.1%}), not an upload of yours: choose an image to classify it"
        else:
            text = f"{name}: {short_name(top.label)} ({top.score:.1%})"
        self.status.value = self._status_html(text, kind="self-test" if self_test else "ok")
        self.result_view.layout.display = "flex"
        return result

    # ------------------------------------------------------------------ work

    def _classify(self, content: bytes, name: str) -> WidgetResult:
        image = load_image(content, name)
        output = self.pipeline(preprocess([image]), stages={"attention_probs"})
        names = head_class_names(self.pipeline.checkpoint.config)
        classification = results_from_output(output, names, [name], self.top_k)[0]
        layers = attention.attention_from_captures(output.stages)
        maps = {}
        tokens = ["cls"] + (["distillation"] if output.distillation_logits is not None else [])
        for token in tokens:
            maps[f"{token}/last"] = attention.token_attention_map(layers[-1], token, "mean")[0]
            maps[f"{token}/rollout"] = attention.attention_rollout(layers, token, "mean")[0]
        result = WidgetResult(name, image, classification, maps, warning=outside_training(self.pipeline.checkpoint, image))
        result.tile_pngs = self._render_maps(result, len(layers))
        self.warning.value = f'<div class="deit-tt-warning" style="{_TEXT_STYLE}; color:#8a4b00"><b>Outside what this model knows:</b> {html.escape(result.warning)}</div>' if result.warning else ""
        self.preview.value = _png(attention.model_view(image))
        self.table.value = self._table_html(classification)
        for key, tile in self.map_tiles.items():
            tile.value = result.tile_pngs.get(key, b"")
            tile.layout.display = None if key in result.tile_pngs else "none"
        self.maps_note.value = (
            "<b>Where the tokens attend</b> (dark = 0, brightest = the largest value printed under the title; "
            "the two tokens' maps of one kind share that scale)"
            + (" &mdash; <i>random weights: the maps are noise</i>" if getattr(self.pipeline.checkpoint, "is_random", False) else "")
        )
        return result

    def _render_maps(self, result: WidgetResult, num_layers: int) -> dict[str, bytes]:
        """One captioned PNG per map: last layer then rollout, each for CLS and distillation.

        Composed with PIL rather than matplotlib: an upload should feel instant, and text layout in
        a matplotlib figure costs more than the rest of the work on a small model.
        """
        from PIL import ImageDraw, ImageFont

        tokens = [key.split("/")[0] for key in result.maps if key.endswith("/last")]
        view = attention.model_view(result.image)
        header, size = 40, attention.CROP_SIZE
        font = ImageFont.load_default(size=13)
        tiles = {}
        # Two short lines that fit the tile: what is drawn, then its scale.
        for method, caption in (("last", f"last layer ({num_layers - 1})"), ("rollout", "rollout")):
            scale = attention.map_scale(*(result.maps[f"{token}/{method}"] for token in tokens))
            detail = "mean of heads" if method == "last" else "all layers"
            for token in tokens:
                canvas = Image.new("RGB", (size, size + header), "white")
                draw = ImageDraw.Draw(canvas)
                draw.text((2, 2), f"{attention.TOKEN_TITLES[attention.token_index(token)]} · {caption}", fill="black", font=font)
                draw.text((2, 20), f"{detail}, 0 to {scale[1]:.3g}", fill="#444444", font=font)
                canvas.paste(attention.overlay(view, result.maps[f"{token}/{method}"], crop=False, scale=scale), (0, header))
                tiles[f"{token}/{method}"] = _png(canvas)
        return tiles

    def _fail(self, name: str, message: str, exception: BaseException | None = None) -> None:
        self.last_result, self.last_error, self.last_exception = None, message, exception
        self.history.append((name, message))
        self.status.value = self._status_html(message, kind="error")
        return None

    def _clear(self) -> None:
        """Hide and empty the result views, so nothing stale stays on screen."""
        self.result_view.layout.display = "none"
        self.preview.value = b""
        self.warning.value = ""
        self.table.value = ""
        for tile in self.map_tiles.values():
            tile.value = b""
        self.maps_note.value = ""

    # ------------------------------------------------------------------ display

    def _hint_html(self) -> str:
        return (
            f'<div style="{_TEXT_STYLE}; color:#666">{SUPPORTED}, up to {self.max_upload_mb:g} MB '
            f"(over {SERVER_DEFAULT_MB} MB needs JupyterLab started by <code>make lab</code>)</div>"
        )

    @staticmethod
    def _status_html(text: str, kind: str) -> str:
        """One line whatever the width: a long message ends in an ellipsis, the full text is its tooltip
        (``contain:inline-size`` keeps the text's length from widening the widget, so the ellipsis can show).

        ``kind`` is info, busy (with a spinning icon), ok, self-test or error.
        """
        colour = {"error": "#b00020", "ok": "#1b5e20", "self-test": "#5c4a00"}.get(kind, "#444")
        spinner = '<i class="fa fa-spinner fa-spin"></i> ' if kind == "busy" else ""
        text = html.escape(text)
        return (
            f'<div class="deit-tt-status" data-kind="{kind}" title="{text}" '
            f'style="color:{colour}; contain:inline-size; white-space:nowrap; overflow:hidden; text-overflow:ellipsis">{spinner}{text}</div>'
        )

    @staticmethod
    def _table_html(result: ClassificationResult) -> str:
        """One small table per head, side by side while they fit and stacked when they do not."""
        columns = [("average of heads", result.average), ("CLS head", result.cls)]
        if result.distillation is not None:
            columns.append(("distillation head", result.distillation))
        tables = []
        for title, predictions in columns:
            rows = "".join(
                f"<tr><td>{rank}</td><td style='padding:0 8px'>{html.escape(short_name(p.label))}</td><td><b>{p.score:.3f}</b></td></tr>"
                for rank, p in enumerate(predictions, start=1)
            )
            tables.append(f"<table style='{_TEXT_STYLE}; flex:0 1 auto; max-width:100%; overflow-wrap:anywhere'><tr><th colspan='3' style='text-align:left'>{title}</th></tr>{rows}</table>")
        return f"<div style='display:flex; flex-wrap:wrap; column-gap:24px; row-gap:8px'>{''.join(tables)}</div>"


def _field(entry, key: str):
    """Upload entries are dicts when assigned from Python and traitlets Bunch objects from the browser."""
    try:
        return entry[key]
    except (KeyError, TypeError):
        return getattr(entry, key, None)


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
