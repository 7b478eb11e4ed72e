"""Decoding user images: unusual-but-valid files come out as the RGB picture a viewer shows; invalid
ones raise a one-line ImageError. The kind generators here are reused by test_classify and test_widgets."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deit_tt.errors import UserFacingError
from deit_tt.data.images import BUNDLED_IMAGES, MAX_PIXELS, ImageError, image_paths, load_image

DATA_IMAGES = Path(__file__).resolve().parents[2] / "data" / "images"


# ------------------------------------------------------------------ generators (in memory, with PIL)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noise(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_rgb16(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), encoded by hand."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions but carries almost no data: a decompression bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")


def _cmyk_jpeg() -> bytes:
    image = Image.new("CMYK", (32, 16), (0, 255, 0, 0))  # pure magenta ink
    return _save(image, "JPEG", quality=95)


def _png16_gray() -> bytes:
    ramp = np.tile(np.array([0, 16384, 32768, 49152, 65535], dtype=np.uint16), (4, 1))
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    return _save(image, "PNG")


def _png16_rgb() -> bytes:
    array = np.zeros((4, 6, 3), dtype=np.uint16)
    array[:, :3] = (65535, 32768, 0)
    array[:, 3:] = (0, 16384, 65535)
    return png_rgb16(array)


def _rgba_transparent() -> bytes:
    array = np.zeros((16, 32, 4), dtype=np.uint8)
    array[:, :16] = (255, 0, 0, 0)  # fully transparent red: must become white, not red or black
    array[:, 16:] = (0, 0, 255, 255)  # opaque blue
    return _save(Image.fromarray(array, "RGBA"), "PNG")


def _palette() -> bytes:
    return _save(_noise((40, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")


def _palette_transparent() -> bytes:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)  # index 0 black (transparent), 1 green
    image.paste(1, (10, 0, 20, 10))
    return _save(image, "PNG", transparency=0)


def _gray_la() -> bytes:
    array = np.zeros((10, 20, 2), dtype=np.uint8)
    array[:, :10] = (0, 0)  # transparent black -> white
    array[:, 10:] = (100, 255)
    return _save(Image.fromarray(array, "LA"), "PNG")


def _exif_rotated_jpeg() -> bytes:
    array = np.zeros((20, 40, 3), dtype=np.uint8)  # stored 40 wide x 20 high
    array[:, :20] = (255, 0, 0)  # left half red
    array[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _save(Image.fromarray(array), "JPEG", quality=95, exif=exif)


def _gif() -> bytes:
    frames = [Image.new("P", (16, 16), i) for i in range(2)]
    for frame in frames:
        frame.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _truncated(fmt: str) -> bytes:
    data = _save(_noise((128, 96)), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return data[: int(len(data) * 0.6)]


# name -> (bytes builder, check of the decoded RGB array or None)
VALID_KINDS = {
    "rgb_jpeg": (lambda: _save(_noise(), "JPEG", quality=90), None),
    "cmyk_jpeg": (_cmyk_jpeg, lambda a: np.allclose(a[8, 16], (255, 0, 255), atol=8)),
    "png16_gray": (_png16_gray, lambda a: list(a[0, :, 0]) == [0, 64, 128, 191, 255]),
    "png16_rgb": (_png16_rgb, lambda a: np.allclose(a[0, 0], (255, 128, 0), atol=1) and np.allclose(a[0, 5], (0, 64, 255), atol=1)),
    "rgba_transparent": (_rgba_transparent, lambda a: tuple(a[0, 0]) == (255, 255, 255) and tuple(a[0, 31]) == (0, 0, 255)),
    "palette": (_palette, None),
    "palette_transparent": (_palette_transparent, lambda a: tuple(a[0, 0]) == (255, 255, 255) and tuple(a[0, 19]) == (0, 255, 0)),
    "gray_l": (lambda: _save(_noise().convert("L"), "PNG"), lambda a: (a[..., 0] == a[..., 1]).all()),
    "gray_la": (_gray_la, lambda a: tuple(a[0, 0]) == (255, 255, 255) and tuple(a[0, 19]) == (100, 100, 100)),
    "bilevel_1bit": (lambda: _save(_noise().convert("1"), "PNG"), lambda a: set(np.unique(a)) <= {0, 255}),
    # displayed 20 wide x 40 high; after the clockwise turn the red (left) half is on top
    "exif_rotated_jpeg": (_exif_rotated_jpeg, lambda a: a.shape == (40, 20, 3) and a[5, 10, 0] > 200 and a[35, 10, 2] > 200),
    "tiny_1x1": (lambda: _save(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), lambda a: a.shape == (1, 1, 3)),
    "tiny_3x5": (lambda: _save(_noise((3, 5)), "PNG"), lambda a: a.shape == (5, 3, 3)),
    "webp": (lambda: _save(_noise(), "WEBP"), None),
    "bmp": (lambda: _save(_noise(), "BMP"), None),
    "gif_animated": (_gif, lambda a: tuple(a[0, 0]) == (255, 0, 0)),
}

# name -> (bytes builder, ImageError.kind)
INVALID_KINDS = {
    "not_an_image": (lambda: b"this is a text file, not a picture\n", "not_image"),
    "zero_bytes": (lambda: b"", "empty"),
    "truncated_jpeg": (lambda: _truncated("JPEG"), "corrupt"),
    "truncated_png": (lambda: _truncated("PNG"), "corrupt"),
    "png_signature_then_garbage": (lambda: b"\x89PNG\r\n\x1a\n" + b"\x17" * 200, "corrupt"),
    # 8000x8000 = 64 MP: over our limit, under PIL's own warning threshold (89 MP)
    "bomb_64mp": (lambda: png_header_only(8000, 8000), "too_large"),
    # 50000x50000 = 2.5 GP: PIL's own DecompressionBombError range
    "bomb_2500mp": (lambda: png_header_only(50000, 50000), "too_large"),
    "too_elongated": (lambda: _save(Image.new("RGB", (2, 400)), "PNG"), "bad_shape"),
    # PostScript would be rendered by Ghostscript, an external program: refused as not an image
    "eps_postscript": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n", "not_image"),
}

SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp", "gif": ".gif"}


def kind_bytes(kind: str) -> bytes:
    builder = VALID_KINDS[kind][0] if kind in VALID_KINDS else INVALID_KINDS[kind][0]
    return builder()


def kind_filename(kind: str) -> str:
    for key, suffix in SUFFIX.items():
        if key in kind:
            return kind + suffix
    return kind + (".png" if kind.startswith(("png", "tiny", "gray", "bilevel", "palette", "rgba", "bomb", "too")) else ".jpg")


@pytest.fixture(params=sorted(VALID_KINDS))
def valid_kind(request):
    return request.param


@pytest.fixture(params=sorted(INVALID_KINDS))
def invalid_kind(request):
    return request.param


# ------------------------------------------------------------------ tests


def test_valid_kinds_decode_to_expected_rgb(valid_kind):
    image = load_image(kind_bytes(valid_kind), kind_filename(valid_kind))
    assert image.mode == "RGB"
    check = VALID_KINDS[valid_kind][1]
    if check is not None:
        assert check(np.asarray(image)), f"{valid_kind}: unexpected pixels {np.asarray(image)[0, :3].tolist()}"


def test_valid_kinds_from_path(valid_kind, tmp_path):
    path = tmp_path / kind_filename(valid_kind)
    path.write_bytes(kind_bytes(valid_kind))
    assert load_image(path).mode == "RGB"
    assert load_image(str(path)).size == load_image(kind_bytes(valid_kind)).size


def test_invalid_kinds_raise_one_line_error(invalid_kind):
    name = kind_filename(invalid_kind)
    with pytest.raises(ImageError) as caught:
        load_image(kind_bytes(invalid_kind), name)
    error = caught.value
    assert isinstance(error, UserFacingError)
    assert error.kind == INVALID_KINDS[invalid_kind][1]
    message = str(error)
    assert "\n" not in message and message.startswith(f"{name}: ")
    assert "Traceback" not in message and len(message) < 300


def test_truncated_file_fails_even_if_pil_was_told_to_accept_it():
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(ImageError, match="truncated"):
            load_image(kind_bytes("truncated_jpeg"), "cut.jpg")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_bomb_refused_before_decoding(monkeypatch):
    def forbidden(self, *args, **kwargs):
        raise AssertionError("pixel data must not be decoded for an oversized image")

    monkeypatch.setattr(Image.Image, "load", forbidden)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", forbidden)
    with pytest.raises(ImageError) as caught:
        load_image(png_header_only(10_000, 10_000), "huge.png")
    assert caught.value.kind == "too_large" and f"{MAX_PIXELS:,}" in str(caught.value)


def _empty_file(tmp: Path) -> Path:
    path = tmp / "empty.jpg"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "make_path, kind",
    [(lambda tmp: tmp / "does-not-exist.jpg", "missing"), (lambda tmp: tmp, "unreadable"), (_empty_file, "empty")],
    ids=["missing", "directory", "empty_file"],
)
def test_path_errors(make_path, kind, tmp_path):
    path = make_path(tmp_path)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert caught.value.kind == kind
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_memoryview_and_default_name():
    data = kind_bytes("rgb_jpeg")
    assert load_image(memoryview(data)).size == (64, 48)
    with pytest.raises(ImageError, match=r"^image: "):
        load_image(b"nope")


def test_bundled_sample_images_decode():
    files = sorted(p for p in DATA_IMAGES.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    assert 4 <= len(files) <= 6
    assert sum(p.stat().st_size for p in files) < 1_500_000
    for path in files:
        image = load_image(path)
        assert image.mode == "RGB" and min(image.size) >= 224


def test_image_paths_lists_image_files_sorted_and_limited(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()
    assert [p.name for p in image_paths(tmp_path)] == ["a.JPG", "b.png", "c.webp"]
    assert [p.name for p in image_paths(tmp_path, limit=2)] == ["a.JPG", "b.png"]
    assert image_paths()[0].parent == BUNDLED_IMAGES and any("cat" in p.stem for p in image_paths())
    with pytest.raises(UserFacingError, match="no images"):
        image_paths(tmp_path / "folder.jpg")



def test_exif_orientation_is_applied_for_photos_and_kept_as_stored_for_evaluation():
    data = _exif_rotated_jpeg()
    assert np.asarray(load_image(data)).shape == (40, 20, 3)  # turned upright, as a viewer shows it
    assert np.asarray(load_image(data, exif_orientation=False)).shape == (20, 40, 3)  # the pixels as stored (torchvision)
