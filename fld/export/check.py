"""A converted landmark model checked against its float Keras model on held-out faces,
and the host-side decode chosen by that check.

Both models run through the runtime's own crop and decode (``fld.runtime.Landmarker``),
so the differences are the conversion's. The converted bytes need no metadata yet: the
check runs them with the ``ModelInfo`` about to be embedded, so the file is written once.
"""

from __future__ import annotations

import sys

import numpy as np

from fld.codec import DECODE_METHODS


def compare_with_keras(tflite_bytes: bytes, info, model, held_out, progress: bool = False,
                       name: str = "converted model") -> dict:
    """Landmarks of the converted model vs the float ``model`` on ``held_out`` records.

    Returns ``{"faces", "mean_diff", "max_diff"}`` (landmark differences in heatmap
    pixels, with ``info``'s decode method) and, when the faces have ground truth, the
    mean inter-ocular NME of every host-side decode method for both models
    (``nme_converted`` / ``nme_keras``: method -> NME). {} without readable faces.
    """
    from tqdm import tqdm

    from fld.export.calibration import read_rgb
    from fld.keras_engine import KerasEngine
    from fld.metrics import nme
    from fld.runtime import Landmarker, TFLiteModel

    engine = TFLiteModel(name, model_bytes=tflite_bytes)
    engine.set_fine_output(info.fine_output)
    converted = Landmarker.from_engine(engine, info)
    keras_engine = KerasEngine(model)
    maps = {"converted": [], "keras": []}
    matrices, truth = [], []
    for record in tqdm(held_out, desc="checking", unit="face", file=sys.stderr,
                       disable=None if progress else True):
        image = read_rgb(record.image_path)
        if image is None:
            continue
        inputs, matrix = converted.crop(image, record.face_box)
        # (1, H, W, K); a flip pair: (2, H, W, K), the crop's and its mirror's maps
        maps["converted"].append(converted.crop_heatmaps(inputs))
        maps["keras"].append(keras_engine.run(converted.model_input(inputs)))
        matrices.append(matrix)
        truth.append(record.landmarks)
    if not truth:
        return {}

    def points(which, method):
        return np.stack([converted.heatmaps_to_image(h, m, method)
                         for h, m in zip(maps[which], matrices)])

    got, want = points("converted", info.decode_method), points("keras", info.decode_method)
    # image pixels -> heatmap pixels: each crop's zoom over the stride
    zooms = np.array([np.sqrt(abs(np.linalg.det(m[:, :2]))) for m in matrices])
    diffs = np.linalg.norm(got - want, axis=-1) * zooms[:, None] / info.stride
    result = {"faces": len(truth), "mean_diff": float(diffs.mean()),
              "max_diff": float(diffs.max())}
    try:
        for key, which in (("nme_converted", "converted"), ("nme_keras", "keras")):
            result[key] = {method: float(nme(points(which, method), np.stack(truth),
                                             info.scheme).mean())
                           for method in DECODE_METHODS}
    except ValueError:  # no usable ground truth (e.g. zero inter-ocular distance)
        pass
    return result


def best_decode(checked: dict) -> str | None:
    """The decode method with the lowest NME of the converted model, or None when the
    check had no ground truth."""
    scores = checked.get("nme_converted")
    return min(scores, key=scores.get) if scores else None
