"""An upload-an-image widget: predictions of both heads and where the CLS and distillation tokens look.

``ClassifierWidget(pipeline)`` is an ipywidgets 8 ``VBox`` holding a ``FileUpload(accept="image/*")``.
On upload it decodes the image (``deit_tt.images.load_image``), runs the pipeline once with captures,
and shows the top-5 of the averaged head, the CLS head and the distillation head, plus attention
overlays of both tokens: the last layer (mean over heads) and the rollout through all layers.

Everything shown is rendered into widgets (HTML, PNG ``Image``), and the outcome is kept in plain
attributes, so the widget works - and can be tested - without a browser:

- ``widget.last_result``: a ``WidgetResult`` for the last successful upload (None after a failure);
- ``widget.last_error``: the one-line message of the last failed upload (None after a success);
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

from deit_tt import attention
from deit_tt.classify import ClassificationResult, results_from_output
from deit_tt.errors import UserFacingError
from deit_tt.images import load_image
from deit_tt.labels import head_class_names, short_name
from deit_tt.preprocessing import preprocess

TOP_K = 5


@dataclass
class WidgetResult:
    name: str
    image: Image.Image  # the decoded RGB upload
    classification: ClassificationResult
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # "cls/last", "distillation/rollout", ... -> [14, 14]
    figure_png: bytes = b""


class ClassifierWidget(widgets.VBox):
    """Upload an image, see DeiT's predictions and the attention of its CLS and distillation tokens."""

    def __init__(self, pipeline, top_k: int = TOP_K, **kwargs):
        self.pipeline = pipeline
        self.top_k = top_k
        self.last_result: WidgetResult | None = None
        self.last_error: str | None = None
        self.history: list[tuple[str, str]] = []
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload image")
        self.status = widgets.HTML(value=self._status_html("Choose an image to classify.", kind="info"))
        self.banner = widgets.HTML(value=f"<code>{html.escape(pipeline.banner())}</code>")
        self.preview = widgets.Image(format="png", layout=widgets.Layout(max_width="224px"))
        self.table = widgets.HTML()
        self.maps_note = widgets.HTML()
        self.maps_view = widgets.Image(format="png", layout=widgets.Layout(max_width="760px"))
        self.upload.observe(self._on_upload, names="value")
        super().__init__(
            children=[
                self.banner,
                widgets.HBox([self.upload, self.status]),
                widgets.HBox([self.preview, self.table]),
                self.maps_note,
                self.maps_view,
            ],
            **kwargs,
        )

    # ------------------------------------------------------------------ events

    def _on_upload(self, change) -> None:
        files = change.get("new") or ()
        if not files:
            return  # reset to () - by us after an upload, or by the user
        entry = files[0]
        name = str(_field(entry, "name") or "upload")
        try:
            self.process(bytes(_field(entry, "content") or b""), name)
        finally:
            self.upload.value = ()  # lets the same file be uploaded again

    def process(self, content: bytes, name: str = "upload") -> WidgetResult | None:
        """Classify one encoded image and update the display; never raises for a bad image."""
        self.status.value = self._status_html(f"Classifying {name} ...", kind="info")
        try:
            result = self._classify(content, name)
        except UserFacingError as error:
            return self._fail(name, str(error))
        except Exception as error:  # keep the widget alive whatever happens; say what it was in one line
            return self._fail(name, f"{name}: unexpected {type(error).__name__}: {' '.join(str(error).split())}")
        self.last_result, self.last_error = result, None
        self.history.append((name, "ok"))
        top = result.classification.top1
        self.status.value = self._status_html(f"{name}: {short_name(top.label)} ({top.score:.1%})", kind="ok")
        return result

    # ------------------------------------------------------------------ work

    def _classify(self, content: bytes, name: str) -> WidgetResult:
        image = load_image(content, name)
        output = self.pipeline(preprocess([image]), capture=True)
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
            "<b>Where the tokens attend</b> (bright = more attention; each map scaled to its own range)"
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
            for token in tokens:
                title = attention.TOKEN_TITLES[attention.token_index(token)]
                tiles.append((f"{title}", caption, attention.overlay(view, result.maps[f"{token}/{method}"], crop=False)))
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

    def _fail(self, name: str, message: str) -> None:
        self.last_result, self.last_error = None, message
        self.history.append((name, message))
        self.status.value = self._status_html(message, kind="error")
        self.preview.value = b""
        self.table.value = ""
        self.maps_view.value = b""
        self.maps_note.value = ""
        return None

    # ------------------------------------------------------------------ display

    @staticmethod
    def _status_html(text: str, kind: str) -> str:
        colour = {"error": "#b00020", "ok": "#1b5e20"}.get(kind, "#444")
        return f'<span style="color:{colour}">{html.escape(text)}</span>'

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
        return f"<table><tr><th>#</th>{head}</tr>{''.join(rows)}</table>"


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
