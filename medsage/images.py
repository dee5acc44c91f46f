"""Opening images from untrusted sources: a pixel limit before decoding, and high bit depths seen right.

``open_image`` refuses an image whose header claims more than ``max_pixels`` pixels before any pixel
is decoded (a 20000x20000 PNG of a few KB would otherwise take gigabytes), raising ``ImageTooLarge``
with the file and its size. ``grey8`` turns any mode into 8-bit grey; 16-bit and 32-bit images
(12-bit X-rays saved as 16-bit PNG) are rescaled by their own range, where ``convert("L")`` would
clip them to white. ``vision_tokens`` counts the tokens an image takes in a Qwen2-VL-family prompt from
its header size alone (``image_size``), so a data stage can budget prompts without the model.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# 100 megapixels: larger than any radiograph or slide tile a VLM is trained on (a 10000x10000 image).
DEFAULT_MAX_PIXELS = 100_000_000
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageTooLarge(ValueError):
    """An image over the pixel limit; ``reason`` is the rejection code."""

    reason = "too-large"


@contextmanager
def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS):
    """``PIL.Image.open`` with the pixel limit checked on the header; use as a context manager."""
    from PIL import Image

    # Pillow's own guard (an error above twice this) then matches the configured limit everywhere.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:  # far over the limit: Pillow refuses it at the header
        raise ImageTooLarge(f"{path}: over the limit of {max_pixels} pixels ({err})") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{path}: {width}x{height} = {width * height} pixels is over the limit of "
                                f"{max_pixels} (a decompression bomb, or raise max_pixels if the image is real)")
        yield img


def grey8(img):
    """An 8-bit grey numpy array of ``img``; wide images are scaled from their own min..max to 0..255."""
    import numpy as np

    if img.mode not in WIDE_MODES:
        return np.asarray(img.convert("L"))
    raw = np.asarray(img, dtype=np.float64)
    if raw.ndim == 3:
        raw = raw.mean(axis=2)
    finite = raw[np.isfinite(raw)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if high <= low:
        return np.zeros(raw.shape, dtype=np.uint8)
    scaled = (np.nan_to_num(raw, nan=low, posinf=high, neginf=low) - low) / (high - low) * 255.0
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


def is_wide(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Whether an image has more than 8 bits per channel (and so needs an 8-bit copy to be used)."""
    with open_image(path, max_pixels) as img:
        return img.mode in WIDE_MODES


def image_size(image: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header of a file or of encoded bytes; no pixel is decoded."""
    import io

    source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
    with open_image(source, max_pixels) as img:
        return img.size


@dataclass(frozen=True)
class PixelBounds:
    """The area an image is resized into before a Qwen2-VL-family vision encoder sees it (a model recipe's
    ``image_min_pixels`` / ``image_max_pixels``; the keys qwen-vl-utils reads from an image entry)."""

    min_pixels: int
    max_pixels: int

    def __post_init__(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"pixel bounds need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")


def vision_size(width: int, height: int, bounds: PixelBounds, factor: int = 28) -> tuple[int, int]:
    """(width, height) a Qwen2-VL-family processor resizes an image to: each side a multiple of ``factor``
    (patch size x merge size), nearest to the original, then the aspect ratio kept while the area is brought
    inside ``bounds`` (scaled down and floored above ``max_pixels``, up and ceiled below ``min_pixels``)."""
    w, h = max(factor, round(width / factor) * factor), max(factor, round(height / factor) * factor)
    if w * h > bounds.max_pixels:
        scale = math.sqrt(width * height / bounds.max_pixels)
        w, h = (max(factor, math.floor(side / scale / factor) * factor) for side in (width, height))
    elif w * h < bounds.min_pixels:
        scale = math.sqrt(bounds.min_pixels / (width * height))
        w, h = (math.ceil(side * scale / factor) * factor for side in (width, height))
    return w, h


def vision_tokens(width: int, height: int, bounds: PixelBounds, patch: int = 14, merge: int = 2) -> int:
    """Tokens one image takes in a Qwen2-VL-family prompt: one per merge x merge block of patches."""
    w, h = vision_size(width, height, bounds, patch * merge)
    return (w // (patch * merge)) * (h // (patch * merge))
