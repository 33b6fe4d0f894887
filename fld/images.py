"""Reading images: one reader for training, calibration, evaluation and the tools, and
one rule for the pixel arrays the runtime accepts.

Numpy + OpenCV only (the TensorFlow-free runtime's tools use it too).
"""

from __future__ import annotations

import os
import struct
from typing import Optional

import numpy as np

# Decoding an image costs ~6 bytes per pixel; 100 M pixels (~600 MB) covers any camera
# photo and refuses the 16,384^2 (4 MB on disk, 1.7 GB decoded) kind of file.
DEFAULT_MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An image that cannot be read or decoded."""


def image_size(path: str) -> Optional[tuple[int, int]]:
    """(width, height) from a PNG, JPEG, BMP or WebP header without decoding the pixels;
    None for other formats or a header this reader cannot follow."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head.startswith(b"BM") and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp_size(head, f)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(f)
    return None


def _jpeg_size(f) -> Optional[tuple[int, int]]:
    """Walks the JPEG marker segments to the first start-of-frame (SOF0..SOF15 but DHT,
    JPG and DAC) and reads its height and width (ITU-T T.81, B.2.2)."""
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte == b"\xff":          # fill bytes before the marker code
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:   # no length field
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = f.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        if marker == 0xDA or length < 2:   # scan data before any frame header
            return None
        f.seek(length - 2, os.SEEK_CUR)
        if f.read(1) != b"\xff":
            return None


def _webp_size(head: bytes, f) -> Optional[tuple[int, int]]:
    """Lossy (VP8), lossless (VP8L) and extended (VP8X) WebP headers (RFC 9649)."""
    data = head + f.read(32)
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    return None


def read_image_rgb(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image file as (H, W, 3) RGB uint8, or raises ImageError naming the file
    (also for an image of more than ``max_pixels`` pixels, checked before decoding)."""
    import cv2

    if not os.path.isfile(path):
        raise ImageError(f"{path}: image file not found")
    size = image_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(f"{path}: {size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} M "
                         f"pixels is over the limit of {max_pixels / 1e6:.0f} M (--max_pixels)")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(f"{path}: {image.shape[1]}x{image.shape[0]} pixels is over the limit "
                         f"of {max_pixels / 1e6:.0f} M (--max_pixels)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An image array -> (H, W, 3) uint8 RGB, the runtime's one input rule.

    Shapes (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped). Values: uint8 as
    is; uint16 scaled by 255 / 65535; other integers must lie in [0, 255]; floats in
    [0, 1] are scaled by 255, floats in [0, 255] rounded. NaN / infinite pixels, booleans
    and values outside those ranges raise ValueError (they gave silent garbage).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif image.dtype == np.bool_ or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"image dtype {image.dtype} is not a pixel type (use uint8)")
    elif image.dtype != np.uint8:
        if not np.isfinite(image).all():
            raise ValueError("image has NaN or infinite pixels")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 255:
            raise ValueError(f"image values span [{low:g}, {high:g}]: expected uint8, or "
                             f"floats in [0, 1] or [0, 255]")
        if np.issubdtype(image.dtype, np.floating) and high <= 1.0:
            image = image * 255.0
        image = np.round(image).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[..., :3]
