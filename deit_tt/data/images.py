"""Decoding user images into the RGB picture a person would expect to see.

``load_image`` accepts a path or the raw bytes of a file (an upload, a base64 payload) and returns
a fully decoded 8-bit RGB ``PIL.Image``. Unusual but valid files are converted the way an image
viewer shows them:

- EXIF orientation is applied (phone photos stored sideways come out upright), as transformers'
  ``load_image`` does, unless ``exif_orientation=False``: evaluation decodes the pixels as stored, as
  torchvision's loader (``PIL.Image.open(...).convert("RGB")``) behind the published accuracies does;
- an embedded ICC profile (CMYK print JPEGs, Adobe RGB or Display P3 photos) is converted to sRGB;
  CMYK without a profile goes through PIL's plain CMYK -> RGB;
- 16-bit images (PNG ``I;16`` grayscale, 16-bit RGB) are scaled to 8 bits over their full range,
  never clipped at 255;
- transparency (RGBA, LA, palette with a transparent index) is composited on white;
- palette, grayscale and 1-bit images become RGB; animations use their first frame.

Anything that is not a usable image raises ``ImageError`` with a one-line message that names the
file and says what to do: missing or empty files, non-images, truncated or corrupt data (the pixel
data is always decoded here, so PIL's lazy loading cannot let a truncated file through), images
whose dimensions exceed ``MAX_PIXELS`` (refused from the header, before any pixel memory is
allocated) and shapes too elongated for DeiT's square centre crop.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from deit_tt.errors import UserFacingError

# 40 megapixels: larger than any phone or DSLR photo a user is likely to upload (a 24 MP camera
# gives 6000x4000), far below PIL's own bomb limit (89 MP warning, 179 MP error). An RGB image at
# the limit decodes to 120 MB.
MAX_PIXELS = 40_000_000
# DeiT sees a square centre crop of the image resized so that its shorter side is 256 pixels.
# Beyond this ratio the crop shows < 2 % of the picture and the resize itself becomes huge.
MAX_ASPECT_RATIO = 50
SUPPORTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# Decoders PIL may use (the JPEG one also opens phones' multi-picture MPO files). Formats that hand the
# file to an external program (EPS -> Ghostscript) or that are not photographs are left out on purpose.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO", "JPEG2000", "AVIF")
_WHITE = (255, 255, 255)


class ImageError(UserFacingError):
    """An image could not be used. ``kind`` is a short machine-readable reason, ``name`` the file."""

    def __init__(self, name: str, kind: str, message: str):
        self.name = name
        self.kind = kind  # missing | unreadable | empty | not_image | corrupt | too_large | bad_shape | unsupported
        super().__init__(" ".join(f"{name}: {message}".split()))  # always one line


def load_image(
    source: bytes | bytearray | memoryview | str | os.PathLike, name: str | None = None, exif_orientation: bool = True
) -> Image.Image:
    """Decode ``source`` (a file path or the file's bytes) into an 8-bit RGB image.

    ``name`` is what error messages call the image (default: the path as given, or "image" for bytes).
    ``exif_orientation``: turn the picture as its EXIF orientation tag says (a photo the way a viewer shows it);
    False keeps the stored pixels (the way torchvision's loader reads evaluation images).
    Raises ``ImageError`` for anything that is not a usable image.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "image"
        if not data:
            raise ImageError(label, "empty", f"is empty (0 bytes); pass a {SUPPORTED} image")
        return _decode(io.BytesIO(data), label, exif_orientation)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_image expects bytes or a path, not {type(source).__name__}")
    path = Path(source).expanduser()
    label = name or str(source)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(label, "missing", "no such file; check the path") from None
    except OSError as error:
        raise ImageError(label, "unreadable", f"cannot access the file ({_reason(error)}); check the path and permissions") from None
    if path.is_dir():
        raise ImageError(label, "unreadable", f"is a directory; pass an image file ({SUPPORTED})")
    if size == 0:
        raise ImageError(label, "empty", f"is empty (0 bytes); pass a {SUPPORTED} image")
    try:
        handle = path.open("rb")
    except OSError as error:
        raise ImageError(label, "unreadable", f"cannot read the file ({_reason(error)}); check its permissions") from None
    with handle:
        return _decode(handle, label, exif_orientation)


def _decode(stream, label: str, exif_orientation: bool) -> Image.Image:
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, whatever the caller configured
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt-EXIF and palette-transparency chatter
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _open_and_convert(stream, label, exif_orientation)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(label, "too_large", f"has too many pixels (decompression-bomb guard, limit {MAX_PIXELS:,}); downscale it first") from None
    except MemoryError:
        raise ImageError(label, "too_large", "is too large to decode in memory; downscale it first") from None
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... for bad data; its wording is not for users
        raise ImageError(label, "corrupt", "image data is truncated or corrupt; re-export or re-download the file") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _open_and_convert(stream, label: str, exif_orientation: bool) -> Image.Image:
    try:
        image = Image.open(stream, formats=_available_formats())
    except UnidentifiedImageError:
        stream.seek(0)
        claimed = _sniff(stream.read(16))
        if claimed:
            raise ImageError(label, "corrupt", f"starts like a {claimed} file but its data is corrupt; re-export or re-download the file") from None
        raise ImageError(label, "not_image", f"is not an image file; pass a {SUPPORTED} file") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:  # checked from the header, before the pixels are decoded
            raise ImageError(
                label, "too_large",
                f"is {width}x{height} = {width * height:,} pixels, over the {MAX_PIXELS:,} pixel limit "
                "(decompression-bomb guard); downscale it first",
            )
        if width < 1 or height < 1:
            raise ImageError(label, "bad_shape", f"has no pixels ({width}x{height}); pass a real image")
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise ImageError(
                label, "bad_shape",
                f"is {width}x{height}, more elongated than {MAX_ASPECT_RATIO}:1, too narrow for DeiT's square "
                "224x224 crop; crop it to the region of interest first",
            )
        image.load()  # decode everything now: lazy loading would let a truncated file through
        icc_profile = image.info.get("icc_profile")
        if exif_orientation:
            image = _apply_orientation(image)
        return _to_rgb(image, icc_profile, label)


def _available_formats() -> tuple[str, ...]:
    Image.init()  # registers every plugin PIL was built with
    return tuple(name for name in FORMATS if name in Image.OPEN)


def _apply_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not make a decodable photo unusable; keep it as stored
        return image


def _to_rgb(image: Image.Image, icc_profile: bytes | None, label: str) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_gray_to_rgb(image)
    if mode == "P":
        # a palette with a transparent entry (tRNS / GIF transparency) must be composited, not dropped
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if mode in ("RGBa", "La"):  # premultiplied alpha
            image = image.convert(mode.upper())
        return _composite_on_white(image.convert("RGBA"))
    if mode in ("L", "1"):
        return image.convert("RGB")
    if icc_profile and mode in ("RGB", "CMYK"):
        converted = _icc_to_srgb(image, icc_profile)
        if converted is not None:
            return converted
    if mode == "RGB":
        return image.copy()
    try:
        return image.convert("RGB")  # CMYK without a profile, YCbCr, ...
    except (ValueError, OSError):
        raise ImageError(label, "unsupported", f"uses the {mode} colour mode, which cannot be converted to RGB; save it as an RGB {SUPPORTED} file") from None


def _high_depth_gray_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit int / float) grayscale -> 8-bit, scaled over the full range rather than clipped."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        array = array.astype(np.float64) / 65535.0
    elif image.mode == "I":  # 16-bit PNGs open as "I" in older Pillow; also 32-bit TIFF
        array = array.astype(np.float64)
        peak = float(array.max(initial=0))
        array = array / (255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak)
    else:  # "F": floats, either 0..1 or 0..255
        array = np.nan_to_num(array.astype(np.float64))
        if float(array.max(initial=0)) > 1.0:
            array = array / 255.0
    gray = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _icc_to_srgb(image: Image.Image, icc_profile: bytes) -> Image.Image | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if image.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(source).lower():
            return None  # already sRGB
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # a broken or mismatched profile: fall back to the plain conversion
        return None


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _sniff(head: bytes) -> str | None:
    """The format a file's magic bytes claim, if any."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":  # BMP: reserved header fields are zero
        return "BMP"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    return text[:160]


# The photos shipped in the repository (data/images), what notebooks and the demo use by default.
BUNDLED_IMAGES = Path(__file__).resolve().parents[2] / "data" / "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def image_paths(folder: str | os.PathLike | None = None, limit: int = 0) -> list[Path]:
    """The image files of ``folder`` (default: the bundled photos), sorted by name; the first ``limit`` if > 0."""
    root = Path(folder) if folder else BUNDLED_IMAGES
    if not root.is_dir():
        raise UserFacingError(f"{root} is not a folder of images")
    paths = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserFacingError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return paths[:limit] if limit > 0 else paths
