"""Pictures of what the pipeline feeds the model: faces, landmarks, heatmaps, edges."""

from __future__ import annotations

import numpy as np

from fld.fileio import atomic_path


def batch_grid_png(images, targets, path: str, codec, columns: int = 4,
                   title: str = "") -> str:
    """Writes a grid of augmented faces to ``path`` (PNG, atomically).

    ``codec``: the ``HeatmapCodec`` that made the targets. Each tile shows the crop (top) with its landmarks (red dots, from the ``landmarks``
    target mapped back to pixels) and the heatmaps (max over points, yellow) and edge
    maps (max over edges, cyan) blended over it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = (np.asarray(images) + 1.0) / 2.0  # [-1, 1] -> [0, 1]
    heat = np.asarray(targets["heatmaps"]).max(axis=-1)
    edges = np.asarray(targets["edges"]).max(axis=-1)
    points = codec.to_image(np.asarray(targets["landmarks"]))
    stride = codec.stride
    n = len(images)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    size = images.shape[1]
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        up = np.kron(np.stack([heat[i], edges[i]], -1), np.ones((stride, stride, 1)))
        overlay = images[i].copy()
        overlay = overlay * (1 - 0.6 * up[..., :1]) + 0.6 * up[..., :1] * np.array([1, 1, 0])
        overlay = overlay * (1 - 0.5 * up[..., 1:]) + 0.5 * up[..., 1:] * np.array([0, 1, 1])
        ax.imshow(np.clip(overlay, 0, 1), extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        ax.scatter(points[i, :, 0], points[i, :, 1], s=4, c="red", linewidths=0)
        ax.set_xlim(-0.5, size - 0.5)
        ax.set_ylim(size - 0.5, -0.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=72)
    finally:
        plt.close(fig)
    return path
