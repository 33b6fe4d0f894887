"""Latency of the whole pipeline: face detector, landmark step and the full image.

``time_pipeline`` is what ``tools/benchmark.py --pipeline`` runs (in a child Python that
imports ``fld.runtime`` only); the per-face model latency is ``time_landmarker``
(``fld.runtime.landmarker``).
"""

from __future__ import annotations

import time

import numpy as np

from fld.runtime.detector import FaceDetector
from fld.runtime.landmarker import Landmarker


def _ms(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def time_pipeline(landmarker: Landmarker, image_rgb: np.ndarray, box, others=(),
                  runs: int = 100, warmup: int = 5) -> dict:
    """Milliseconds per run of the landmarker's detector on the whole image
    (``detector_ms``), of one landmark prediction from ``box`` (``landmarks_ms``) and of
    ``Landmarker.detect`` (``full_image_ms``: detection + the default re-crop passes for
    every face found), interleaved run by run so that every figure sees the same load.

    ``others``: further detector names (e.g. ``"haar"``) timed the same way, in the same
    loop, with the same model; their lists are keyed ``{name}_detector_ms`` etc.
    Returns lists of ``runs`` values per key, and ``faces`` / ``{name}_faces``: how
    many faces each detector found.
    """
    pipelines = {"": landmarker}
    runtime = getattr(landmarker.model, "runtime", None)
    for name in others:
        detector = FaceDetector(name, scheme=landmarker.scheme.name, runtime=runtime)
        pipelines[f"{name}_"] = Landmarker.from_engine(
            landmarker.model, landmarker.info, detector=detector,
            flip_test=landmarker.flip_test)
    times: dict = {}
    for prefix, pipeline in pipelines.items():
        times[f"{prefix}faces"] = len(pipeline.detect_faces(image_rgb))
        for _ in range(warmup):
            pipeline.detect(image_rgb)
    for _ in range(runs):
        for prefix, pipeline in pipelines.items():
            for key, call in (("detector_ms", lambda: pipeline.detect_faces(image_rgb)),
                              ("landmarks_ms", lambda: pipeline.predict(image_rgb, box)),
                              ("full_image_ms", lambda: pipeline.detect(image_rgb))):
                times.setdefault(prefix + key, []).append(_ms(call))
    return times
