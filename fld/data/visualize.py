"""Pictures of what the pipeline feeds the model: faces, landmarks, heatmaps, edges."""

from __future__ import annotations

import numpy as np

from fld import drawing


def batch_grid_png(images, targets, path: str, codec, columns: int = 4,
                   title: str = "") -> str:
    """Writes a grid of augmented faces to ``path`` (PNG, atomically).

    ``codec``: the ``HeatmapCodec`` that made the targets. Each tile shows the crop with
    its landmarks (red dots, from the ``landmarks`` target mapped back to pixels) and the
    heatmaps (max over points, yellow) and edge maps (max over edges, cyan) blended over it.
    """
    images = (np.asarray(images, np.float32) + 1.0) / 2.0  # [-1, 1] -> [0, 1], RGB
    heat = np.asarray(targets["heatmaps"]).max(axis=-1)
    edges = np.asarray(targets["edges"]).max(axis=-1)
    points = codec.to_image(np.asarray(targets["landmarks"]))
    stride = codec.stride
    tiles = []
    for i in range(len(images)):
        up = np.kron(np.stack([heat[i], edges[i]], -1), np.ones((stride, stride, 1)))
        overlay = images[i] * (1 - 0.6 * up[..., :1]) + 0.6 * up[..., :1] * np.array([1, 1, 0])
        overlay = overlay * (1 - 0.5 * up[..., 1:]) + 0.5 * up[..., 1:] * np.array([0, 1, 1])
        tile = drawing.model_input_to_bgr(2.0 * np.clip(overlay, 0, 1) - 1.0)
        tiles.append(drawing.draw_points(tile, points[i], drawing.RED, radius=1.5))
    canvas = drawing.with_title(drawing.grid(tiles, columns), title)
    return drawing.write_image(path, canvas)
