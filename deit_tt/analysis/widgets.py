"""An upload-an-image widget: predictions of both heads and where the CLS and distillation tokens look.

``ClassifierWidget(pipeline)`` is an ipywidgets 8 ``VBox`` holding a ``FileUpload(accept="image/*")``.
On upload it decodes the image (``deit_tt.data.images.load_image``), runs the pipeline once with captures,
and shows the top-5 of the averaged head, the CLS head and the distillation head, plus attention
overlays of both tokens: the last layer (mean over heads) and the rollout through all layers.

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
- ``widget.history``: ``(file name, "ok" | error message)`` for each upload handled.

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
from deit_tt.classify import ClassificationResult, results_from_output
from deit_tt.errors import UserFacingError
from deit_tt.data.images import SUPPORTED, ImageError, load_image
from deit_tt.checkpoints.labels import head_class_names, short_name
from deit_tt.data.preprocessing import preprocess

TOP_K = 5
MEGABYTE = 2**20
MAX_UPLOAD_MB = 128  # a 40-megapixel photo fits even as an uncompressed TIFF
SERVER_DEFAULT_MB = 10  # Tornado's default websocket_max_message_size, what a plain `jupyter lab` lets through
PREVIEW_PX = 224
# Widget HTML inherits the 28 px line height of one-line controls; wrapped text reads better tighter.
_TEXT_STYLE = "line-height:1.4"
# As wide as the widget at most: 100% less the margin ipywidgets puts on either side of every child.
_FULL_WIDTH = "calc(100% - 2 * var(--jp-widgets-margin))"


@dataclass
class WidgetResult:
    name: str
    image: Image.Image  # the decoded RGB upload
    classification: ClassificationResult
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # "cls/last", "distillation/rollout", ... -> [14, 14]
    figure_png: bytes = b""


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
        self.table = widgets.HTML()
        self.maps_note = widgets.HTML()
        self.maps_view = widgets.Image(
            format="png", layout=widgets.Layout(max_width=_FULL_WIDTH, height="auto", align_self="flex-start", object_fit="contain")
        )
        # Hidden until there is a result: an empty Image would show as a broken-image icon.
        self.result_view = widgets.VBox(
            [widgets.HBox([self.preview, self.table], layout=widgets.Layout(flex_flow="row wrap")), self.maps_note, self.maps_view],
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
        self.upload.disabled = True
        try:
            self.process(bytes(_field(entry, "content") or b""), name)
        finally:
            self.upload.value = ()  # lets the same file be uploaded again
            self.upload.disabled = False

    def process(self, content: bytes, name: str = "upload") -> WidgetResult | None:
        """Classify one encoded image and update the display; never raises for a bad image."""
        self._clear()
        self.status.value = self._status_html(f"Classifying {name} ...", kind="busy")
        try:
            if len(content) > self.max_upload_mb * MEGABYTE:
                raise ImageError(name, "too_large", f"is {len(content) / MEGABYTE:.0f} MB, over the {self.max_upload_mb:g} MB upload limit; downscale it first")
            result = self._classify(content, name)
        except UserFacingError as error:
            return self._fail(name, str(error))
        except Exception as error:  # keep the widget alive whatever happens; the details stay in last_exception
            return self._fail(name, f"{name}: classification failed ({type(error).__name__}); see the widget's last_exception", error)
        self.last_result, self.last_error, self.last_exception = result, None, None
        self.history.append((name, "ok"))
        top = result.classification.top1
        self.status.value = self._status_html(f"{name}: {short_name(top.label)} ({top.score:.1%})", kind="ok")
        self.result_view.layout.display = "flex"
        return result

    # ------------------------------------------------------------------ work

    def _classify(self, content: bytes, name: str) -> WidgetResult:
        image = load_image(content, name)
        output = self.pipeline(preprocess([image]), capture={"attention_probs"})
        names = head_class_names(self.pipeline.checkpoint.config)
        classification = results_from_output(output, names, [name], self.top_k)[0]
        layers = attention.attention_from_captures(output.captures)
        maps = {}
        tokens = ["cls"] + (["distillation"] if output.distillation_logits is not None else [])
        for token in tokens:
            maps[f"{token}/last"] = attention.token_attention_map(layers[-1], token, "mean")[0]
            maps[f"{token}/rollout"] = attention.attention_rollout(layers, token, "mean")[0]
        result = WidgetResult(name, image, classification, maps)
        result.figure_png = self._render_maps(result, len(layers))
        self.preview.value = _png(attention.model_view(image))
        self.table.value = self._table_html(classification)
        self.maps_view.value = result.figure_png
        self.maps_note.value = (
            "<b>Where the tokens attend</b> (dark = 0, brightest = the largest value printed under the title; "
            "the two tokens' maps of one kind share that scale)"
            + (" &mdash; <i>random weights: the maps are noise</i>" if getattr(self.pipeline.checkpoint, "is_random", False) else "")
        )
        return result

    def _render_maps(self, result: WidgetResult, num_layers: int) -> bytes:
        """Overlays in one PNG: last layer then rollout, each for CLS and distillation, with captions.

        Composed with PIL rather than matplotlib: an upload should feel instant, and text layout in
        a matplotlib figure costs more than the rest of the work on a small model.
        """
        from PIL import ImageDraw, ImageFont

        tokens = [key.split("/")[0] for key in result.maps if key.endswith("/last")]
        view = attention.model_view(result.image)
        tiles = []
        for method, caption in (("last", f"last layer ({num_layers - 1}), head mean"), ("rollout", "rollout, all layers")):
            scale = attention.map_scale(*(result.maps[f"{token}/{method}"] for token in tokens))
            for token in tokens:
                title = attention.TOKEN_TITLES[attention.token_index(token)]
                tile = attention.overlay(view, result.maps[f"{token}/{method}"], crop=False, scale=scale)
                tiles.append((title, f"{caption}, 0 to {scale[1]:.3g}", tile))
        gap, header = 8, 40
        size = attention.CROP_SIZE
        canvas = Image.new("RGB", (len(tiles) * (size + gap) - gap, size + header), "white")
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=13)
        for column, (title, caption, tile) in enumerate(tiles):
            x = column * (size + gap)
            draw.text((x + 2, 2), title, fill="black", font=font)
            draw.text((x + 2, 20), caption, fill="#444444", font=font)
            canvas.paste(tile, (x, header))
        return _png(canvas)

    def _fail(self, name: str, message: str, exception: BaseException | None = None) -> None:
        self.last_result, self.last_error, self.last_exception = None, message, exception
        self.history.append((name, message))
        self.status.value = self._status_html(message, kind="error")
        return None

    def _clear(self) -> None:
        """Hide and empty the result views, so nothing stale stays on screen."""
        self.result_view.layout.display = "none"
        self.preview.value = b""
        self.table.value = ""
        self.maps_view.value = b""
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

        ``kind`` is info, busy (with a spinning icon), ok or error.
        """
        colour = {"error": "#b00020", "ok": "#1b5e20"}.get(kind, "#444")
        spinner = '<i class="fa fa-spinner fa-spin"></i> ' if kind == "busy" else ""
        text = html.escape(text)
        return (
            f'<div class="deit-tt-status" data-kind="{kind}" title="{text}" '
            f'style="color:{colour}; contain:inline-size; white-space:nowrap; overflow:hidden; text-overflow:ellipsis">{spinner}{text}</div>'
        )

    @staticmethod
    def _table_html(result: ClassificationResult) -> str:
        columns = [("average of heads", result.average), ("CLS head", result.cls)]
        if result.distillation is not None:
            columns.append(("distillation head", result.distillation))
        head = "".join(f"<th style='padding:0 12px'>{title}</th>" for title, _ in columns)
        rows = []
        for rank in range(len(result.average)):
            cells = "".join(
                f"<td style='padding:0 12px'>{html.escape(short_name(p[rank].label))} <b>{p[rank].score:.3f}</b></td>"
                for _, p in columns
            )
            rows.append(f"<tr><td>{rank + 1}</td>{cells}</tr>")
        return f"<table style='{_TEXT_STYLE}'><tr><th>#</th>{head}</tr>{''.join(rows)}</table>"


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
