"""Every picture of landmarks the project draws: overlays on photos and video frames, the
worst-face grids of an evaluation, training's sample predictions, the augmented-batch grid.

OpenCV only (no TensorFlow, no matplotlib), anti-aliased and sub-pixel: points are 0-based
pixel centers, as everywhere in fld, and OpenCV draws at integer pixel centers, so they map
directly. Canvases are BGR uint8 (OpenCV's order); colors are BGR triples.
"""

from __future__ import annotations

import numpy as np

from fld.fileio import atomic_path

SHIFT = 4  # sub-pixel drawing: coordinates in 1/16 px
GREEN = (0, 200, 0)
RED = (0, 0, 255)
BOX = (255, 160, 0)
TRUE_COLOR, PRED_COLOR = GREEN, RED  # ground truth vs prediction in every picture


def _fixed(value: float) -> int:
    return int(round(float(value) * (1 << SHIFT)))


def draw_points(canvas: np.ndarray, points, color, radius: float) -> np.ndarray:
    """Filled anti-aliased dots at (K, 2) ``points`` on ``canvas`` (in place; returned)."""
    import cv2

    for x, y in np.asarray(points, np.float64):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(canvas, (_fixed(x), _fixed(y)), max(1, _fixed(radius)), color, -1,
                       cv2.LINE_AA, SHIFT)
    return canvas


def draw_box(canvas: np.ndarray, box, color=BOX) -> np.ndarray:
    """A one-pixel (x0, y0, x1, y1) rectangle on ``canvas`` (in place; returned)."""
    import cv2

    x0, y0, x1, y1 = (_fixed(v) for v in box)
    cv2.rectangle(canvas, (x0, y0), (x1, y1), color, 1, cv2.LINE_AA, SHIFT)
    return canvas


def draw_faces(image_rgb: np.ndarray, faces) -> np.ndarray:
    """BGR copy of an RGB image with each ``(box, points)`` face's box and points drawn;
    the dot radius follows the face size."""
    import cv2

    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    for box, points in faces:
        size = float(max(box[2] - box[0], box[3] - box[1]))
        draw_box(canvas, box)
        draw_points(canvas, points, GREEN, max(1.0, size / 80.0))
    return canvas


def put_label(tile: np.ndarray, text: str, scale: float = 0.38) -> np.ndarray:
    """Black text with a white outline along the bottom of ``tile`` (in place; returned)."""
    import cv2

    at = (3, tile.shape[0] - 6)
    for color, thickness in (((255, 255, 255), 2), ((0, 0, 0), 1)):
        cv2.putText(tile, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness,
                    cv2.LINE_AA)
    return tile


def grid(tiles, columns: int = 4, background: int = 255) -> np.ndarray:
    """Equal-sized (S, S, 3) tiles laid out row by row, ``columns`` wide."""
    tiles = list(tiles)
    if not tiles:
        raise ValueError("grid: no tiles to lay out")
    height, width = tiles[0].shape[:2]
    columns = min(columns, len(tiles))
    rows = (len(tiles) + columns - 1) // columns
    canvas = np.full((rows * height, columns * width, 3), background, np.uint8)
    for i, tile in enumerate(tiles):
        y0, x0 = (i // columns) * height, (i % columns) * width
        canvas[y0:y0 + height, x0:x0 + width] = tile
    return canvas


def with_title(canvas: np.ndarray, title: str) -> np.ndarray:
    """``canvas`` under a white 22-pixel band holding ``title`` (unchanged if empty)."""
    if not title:
        return canvas
    band = np.full((22, canvas.shape[1], 3), 255, np.uint8)
    return np.concatenate([put_label(band, title, scale=0.45), canvas])


def model_input_to_bgr(image) -> np.ndarray:
    """A model input in [-1, 1] (RGB, float) as a BGR uint8 picture."""
    rgb = np.clip((np.asarray(image, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def compare_tile(image_bgr: np.ndarray, true_xy, pred_xy, radius: float = 1.5) -> np.ndarray:
    """A copy of ``image_bgr`` with ground truth (green) and prediction (red) points."""
    tile = image_bgr.copy()
    if true_xy is not None:
        draw_points(tile, true_xy, TRUE_COLOR, radius)
    return draw_points(tile, pred_xy, PRED_COLOR, radius)


def encode_png(canvas: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", canvas)
    if not ok:
        raise ValueError("could not encode the picture as PNG")
    return data.tobytes()


def write_image(path: str, canvas: np.ndarray) -> str:
    """Writes a BGR picture to ``path`` atomically (format from the extension)."""
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, canvas):
            raise OSError(f"cannot write {path}")
    return path


def predictions_grid_png(images, true_xy, pred_xy, columns: int = 4, title: str = "") -> bytes:
    """A PNG grid of faces with true (green) and predicted (red) points, as bytes.

    ``images`` (N, S, S, 3) in [-1, 1]; points (N, K, 2) in input pixels. Faces smaller
    than 160 px are enlarged by an integer factor so the points stay apart.
    """
    factor = max(1, -(-160 // images.shape[1]))
    tiles = []
    for image, true, pred in zip(images, true_xy, pred_xy):
        tile = model_input_to_bgr(image)
        if factor > 1:
            tile = np.kron(tile, np.ones((factor, factor, 1), np.uint8))
        # Pixel centers move to (x + 0.5) * factor - 0.5 under pixel replication.
        true, pred = ((np.asarray(xy) + 0.5) * factor - 0.5 for xy in (true, pred))
        tiles.append(compare_tile(tile, true, pred, radius=1.5))
    canvas = with_title(grid(tiles, columns), title)
    return encode_png(canvas)
