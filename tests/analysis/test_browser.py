"""The upload widget in a real browser: JupyterLab started with the repo's server config (as `make lab` does)
and Debian's Chromium, headless, driven by Playwright. One server, page and kernel (random:tiny, host
executor) serve the whole module; every upload goes through the browser's file chooser, and the checks
are what a person sees. The tests run in file order on the same widget: before any upload, two invalid
files, a photo over the default websocket limit after them, a bundled photo after that, a narrow window."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from deit_tt.data.images import ImageError, load_image
from deit_tt.analysis.widgets import MAX_UPLOAD_MB, MEGABYTE, SERVER_DEFAULT_MB
from lab_server import start_lab
from test_images import DATA_IMAGES

CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")]

NOTEBOOK = "widget.ipynb"
IMPORTS = """\
from deit_tt.pipeline import build_pipeline
from deit_tt.analysis.widgets import ClassifierWidget
"""
NOTEBOOK_CODE = IMPORTS + """
ClassifierWidget(build_pipeline("random:tiny", "host", batch_size=1))"""
WIDE, NARROW = {"width": 1280, "height": 900}, {"width": 560, "height": 900}
START_TIMEOUT_MS = 180_000  # kernel start and the imports of torch, transformers and ttnn on 2 busy cores
UPLOAD_TIMEOUT_MS = 60_000
HEADS = ["average of heads", "CLS head", "distillation head"]

# Records whether the button was ever disabled while a spinner showed, however briefly.
WATCH_BUSY = """root => {
    window.deitBusySeen = false;
    const check = () => {
        if (root.querySelector('.widget-upload').disabled && root.querySelector('.deit-tt-status .fa-spin')) window.deitBusySeen = true;
    };
    if (window.deitObserver) window.deitObserver.disconnect();
    window.deitObserver = new MutationObserver(check);
    window.deitObserver.observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
}"""
# The images a person sees: visible <img> elements with their drawn and natural sizes (0 = broken icon).
VISIBLE_IMAGES = """root => [...root.querySelectorAll('img')].filter(img => img.offsetParent !== null).map(img => ({
    width: img.clientWidth, height: img.clientHeight, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight}))"""
FITS = "element => element.scrollWidth <= element.clientWidth"  # the text is not cut (no ellipsis)
# Parts of the widget reaching past its right edge, where the notebook cuts them off.
STICKING_OUT = """root => {
    const edge = root.getBoundingClientRect().right + 1;
    return [...root.querySelectorAll('.widget-upload, .deit-tt-status, img, table')]
        .filter(element => element.offsetParent !== null && element.getBoundingClientRect().right > edge)
        .map(element => element.className || element.tagName);
}"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    photo = DATA_IMAGES / "coffee_cup.jpg"
    notes = folder / "notes.txt"
    notes.write_text("a shopping list, not a picture\n")
    cut = folder / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:3000])
    big = folder / "big_cat.jpg"
    big.write_bytes(_large_photo(DATA_IMAGES / "cat_chelsea.jpg"))
    assert SERVER_DEFAULT_MB * MEGABYTE < big.stat().st_size < MAX_UPLOAD_MB * MEGABYTE
    return {"photo": photo, "notes": notes, "cut": cut, "big": big}


def _large_photo(source: Path) -> bytes:
    """A 12-megapixel JPEG of a bundled photo, with grain so that it cannot compress below 10 MiB."""
    image = Image.open(source).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    grain = np.random.default_rng(0).integers(0, 48, (3000, 4000, 3), dtype=np.uint8)
    pixels = np.minimum(np.asarray(image), 255 - 48) + grain  # no overflow
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100)  # about 13 MiB
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("lab")
    root = scratch / "notebooks"
    root.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CODE)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, root / NOTEBOOK)
    server = start_lab(root, scratch, kernel_startup=IMPORTS)  # torch, transformers, ttnn: imported while the page loads
    server.start_kernel(NOTEBOOK)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def widget(lab):
    """The widget's root element, after running the notebook's cell the way a person does (Shift+Enter)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport=WIDE)
            page.goto(lab.url(NOTEBOOK))
            page.locator(".jp-CodeCell .cm-content").first.click()
            page.keyboard.press("Shift+Enter")
            root = page.locator(".deit-tt-widget")
            root.wait_for(timeout=START_TIMEOUT_MS)
            yield root
        finally:
            browser.close()


def upload(widget, path: Path, kind: str) -> None:
    """Choose ``path`` in the browser's file dialog, wait for the outcome, check the busy state was shown."""
    page = widget.page
    widget.evaluate(WATCH_BUSY)
    with page.expect_file_chooser() as chooser:
        widget.locator(".widget-upload").click()
    chooser.value.set_files(path)
    status = widget.locator(".deit-tt-status")
    expect(status).to_have_attribute("title", re.compile(rf"^{re.escape(path.name)}: "), timeout=UPLOAD_TIMEOUT_MS)
    expect(status).to_have_attribute("data-kind", kind)
    assert page.evaluate("window.deitBusySeen"), "the button was not disabled with a spinner while the file was processed"
    expect(widget.locator(".widget-upload")).to_be_enabled()
    assert "Traceback" not in page.locator("body").inner_text()


def assert_classified(widget, path: Path) -> None:
    upload(widget, path, "ok")
    headers = widget.locator("table th").all_inner_texts()
    assert headers == HEADS  # one table per head
    assert widget.locator("table tr").count() == len(HEADS) * (1 + 5)
    assert "random weights" in widget.inner_text()
    preview, *maps = widget.evaluate(VISIBLE_IMAGES)
    assert preview["naturalWidth"] == preview["width"] == preview["height"] == 224  # the model's crop, unstretched
    assert len(maps) == 4  # last layer and rollout, CLS and distillation, one tile each
    for tile in maps:
        assert_keeps_aspect(tile)
    assert widget.evaluate(STICKING_OUT) == []


def assert_keeps_aspect(image: dict) -> None:
    assert image["naturalWidth"] > 0, "broken image"
    drawn, natural = image["width"] / image["height"], image["naturalWidth"] / image["naturalHeight"]
    assert drawn == pytest.approx(natural, rel=0.02), f"drawn {image['width']}x{image['height']}, picture {image['naturalWidth']}x{image['naturalHeight']}"


def assert_one_line_error(widget, path: Path) -> None:
    upload(widget, path, "error")
    with pytest.raises(ImageError) as expected:
        load_image(path.read_bytes(), path.name)
    status = widget.locator(".deit-tt-status")
    assert status.inner_text() == str(expected.value)  # our words, not the decoder's
    assert status.evaluate(FITS), f"message cut at {WIDE['width']} px: {status.inner_text()}"
    assert widget.evaluate(VISIBLE_IMAGES) == []  # the previous result is gone and no broken-image icons show


def test_before_the_first_upload(widget):
    assert widget.evaluate(VISIBLE_IMAGES) == []  # no broken-image icons
    text = widget.inner_text()
    assert "executor: host" in text and "RANDOM-INITIALISED" in text  # the banner
    assert f"up to {MAX_UPLOAD_MB} MB" in text and "make lab" in text  # the size limit
    button = widget.locator(".widget-upload")
    assert button.inner_text().strip() == "Upload image (0)" and button.evaluate(FITS)
    assert widget.locator(".deit-tt-status").inner_text() == "Choose an image to classify."


def test_invalid_files_give_one_line_errors(widget, files):
    assert_one_line_error(widget, files["notes"])
    assert_one_line_error(widget, files["cut"])


def test_photo_over_the_default_websocket_limit_after_errors(widget, files):
    assert_classified(widget, files["big"])


def test_bundled_photo_after_the_large_one(widget, files):
    assert_classified(widget, files["photo"])


def test_narrow_window_keeps_the_aspect_ratio(widget):
    page = widget.page
    page.set_viewport_size(NARROW)
    try:
        images = widget.evaluate(VISIBLE_IMAGES)
        assert len(images) == 5
        for image in images:
            assert_keeps_aspect(image)
        assert widget.evaluate(STICKING_OUT) == []  # smaller pictures, an ellipsis on a long status line
        assert widget.locator(".widget-upload").evaluate(FITS)
    finally:
        page.set_viewport_size(WIDE)


@pytest.mark.parametrize("width", [700, 1400])
def test_fits_beside_the_file_browser(widget, width, tmp_path):
    """A laptop-sized window with JupyterLab's file browser open: nothing clipped, maps at full size, each head's
    table whole (the tables and tiles wrap onto more rows instead). The screenshot is kept for a person to look at."""
    page = widget.page
    page.set_viewport_size({"width": width, "height": 1000})
    try:
        if not page.locator("#filebrowser").is_visible():
            page.locator('.jp-SideBar.jp-mod-left [data-id="filebrowser"]').click()
        expect(page.locator("#filebrowser")).to_be_visible()
        widget.scroll_into_view_if_needed()
        assert widget.evaluate(STICKING_OUT) == []
        preview, *tiles = widget.evaluate(VISIBLE_IMAGES)
        assert [tile["width"] for tile in tiles] == [224] * 4, tiles  # not shrunk to thumbnails
        assert widget.locator("table").count() == len(HEADS)
        widget.screenshot(path=tmp_path / f"widget-{width}px.png")
        page.screenshot(path=tmp_path / f"page-{width}px.png")
    finally:
        page.set_viewport_size(WIDE)
