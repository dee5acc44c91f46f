"""Opening images from untrusted sources: a pixel limit before decoding, and high bit depths seen right.

``open_image`` refuses an image whose header claims more than ``max_pixels`` pixels before any pixel
is decoded (a 20000x20000 PNG of a few KB would otherwise take gigabytes), raising ``ImageTooLarge``
with the file and its size. ``grey8`` turns any mode into 8-bit grey; 16-bit and 32-bit images
(12-bit X-rays saved as 16-bit PNG) are rescaled by their own range, where ``convert("L")`` would
clip them to white.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
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
