"""``Landmarker``: image + face box -> landmarks, with a TFLite model and no TensorFlow.

Per face: crop with the project's crop rule (``fld.crop``, the model metadata's
``crop_scale`` and ``image_size``) -> normalize (``x / 127.5 - 1``) -> quantize ->
invoke -> dequantize -> decode the heatmaps in float on the host
(``fld.codec.decode_numpy``, the metadata's method) -> heatmap cells to crop pixels
(``ModelInfo.codec``: the heatmap cell rule) -> image pixels through the inverse crop
matrix.

    landmarker = Landmarker("student_int8.tflite")
    points = landmarker.predict(image_rgb, box)        # (K, 2), 0-based image pixels
    for box, points in landmarker.detect(image_rgb):   # with the face detector
        ...
    for face in landmarker.track(frame_rgb):            # video: fld.runtime.tracking
        face.track_id, face.points

``detect`` finds faces with BlazeFace (``fld.runtime.blazeface``), maps each detector
box onto a landmark box, predicts, and re-crops around the predicted landmarks for a
second prediction (``DEFAULT_PASSES``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Optional

import numpy as np

from fld.crop import (box_from_landmarks, crop_image, crop_matrix, invert_affine,
                      normalize_image, transform_points)
from fld.images import as_rgb_uint8
from fld.runtime.bundled import (ASSETS_DIR, BUNDLED_MODELS, DEFAULT_MODEL, bundled_model_path,
                                 resolve_model)
from fld.runtime.detector import DEFAULT_DETECTOR, BoxMapping, FaceDetector
from fld.runtime.interpreter import RUNTIMES, TFLiteModel
from fld.runtime.metadata import ModelInfo, read_model_info

DEFAULT_MODEL_PATH = os.path.join(ASSETS_DIR, BUNDLED_MODELS[DEFAULT_MODEL])
# Predictions per detected face in ``detect``: the first from the detector's box, each
# further one re-cropped around the last one's landmarks (measured best per millisecond:
# docs/experiments/2026-12-07-blazeface.md).
DEFAULT_PASSES = 2


class Landmarker:
    """Facial landmarks from a TFLite model carrying ``fld`` metadata.

    Thread safety: one Landmarker may be shared by threads and gives each call the same
    points as a lone call: the model's interpreter and the detector serialize their own
    invokes (``TFLiteModel``), so threads wait for each other there; for parallel
    throughput give each thread its own Landmarker.

    Args:
        model_path: ``.tflite`` file, or the name of a bundled model
            (``fld.runtime.bundled.BUNDLED_MODELS``: ``"default"``, ``"default_51"``,
            ``"fast"``); None = ``preset``, else the default model
            (``fld/runtime/assets/default_68.tflite``).
        preset: a bundled model by name, e.g. ``Landmarker(preset="fast")`` (the
            distilled fast student); not together with ``model_path``.
        num_threads: interpreter CPU threads.
        runtime: force an interpreter (``ai_edge_litert`` / ``tflite_runtime`` / ``tf``).
        detector: face detector for ``detect``: a ``FaceDetector``, a detector name
            (``fld.runtime.detector.DETECTORS``: ``"blazeface"``, the default,
            ``"blazeface_full"``, ``"haar"``), a YuNet ``.onnx`` path or a callable
            image -> boxes. Built on first use.
        box_mapping: detector -> landmark box mapping. Default: the mapping measured for
            the detector and the model's scheme (``detector.BOX_MAPPINGS``); for Haar
            the model metadata's ``box_mapping`` first, if it has one.
        flip_test: also run the mirrored crop and average the two predictions (points
            swapped with the scheme's ``flip_perm``): twice the model time for a
            lower error (figures in MODEL_CARD.md). A flip-pair model
            (``ModelInfo.flip_pair``) always does this, in one invoke of batch two.
        reference_kernels: TFLite's builtin kernels instead of XNNPACK
            (``TFLiteModel``): CPU-independent results, for diagnosing accuracy.
    Attributes:
        info: the model's ``ModelInfo``; scheme: its landmark scheme; model: the
        ``TFLiteModel``.
    """

    def __init__(self, model_path: Optional[str] = None, num_threads: int = 1,
                 runtime: Optional[str] = None, detector=None,
                 box_mapping: Optional[BoxMapping] = None, flip_test: bool = False,
                 reference_kernels: bool = False, preset: Optional[str] = None):
        if preset is not None and model_path is not None:
            raise ValueError(f"give model_path ({model_path}) or preset ({preset}), not both")
        model_path = resolve_model(model_path) if preset is None else bundled_model_path(preset)
        model = TFLiteModel(model_path, num_threads=num_threads, runtime=runtime,
                            reference_kernels=reference_kernels)
        info = read_model_info(model.model_bytes, source=str(model_path))
        model.set_fine_output(info.fine_output)
        model.check_shapes(info.image_size, info.heatmap_size, info.num_points,
                           batch=2 if info.flip_pair else 1)
        self._setup(model, info, detector, box_mapping, flip_test)

    @classmethod
    def from_engine(cls, engine, info: ModelInfo, detector=None,
                    box_mapping: Optional[BoxMapping] = None,
                    flip_test: bool = False) -> "Landmarker":
        """A Landmarker around any engine with ``run(images (B,S,S,3) float) ->
        heatmaps (B,H,W,K) float``, e.g. a Keras model (``fld.keras_engine``), so that
        float and int8 models share the crop, decode and detection code."""
        landmarker = cls.__new__(cls)
        landmarker._setup(engine, info, detector, box_mapping, flip_test)
        return landmarker

    def _setup(self, model, info: ModelInfo, detector, box_mapping, flip_test=False) -> None:
        self.model = model
        self.flip_test = bool(flip_test) or info.flip_pair
        self.info: ModelInfo = info
        self.scheme = self.info.scheme
        self._detector_spec = detector
        self._detector: Optional[FaceDetector] = None
        self._detector_lock = threading.Lock()   # built once, on first use
        self._box_mapping = box_mapping
        self.tracker = None   # the FaceTracker of ``track``, built on its first call

    # --- one face --------------------------------------------------------------------
    def crop_box(self, box) -> np.ndarray:
        """The box the crop rule frames for ``box``, the tight box of the model's own
        points: the metadata's ``crop_box`` mapping applied (a subset-points file, e.g.
        51 of a 68-point network: ``fld.runtime.crop_box``), else ``box`` itself."""
        if self.info.crop_box is None:
            return np.asarray(box, np.float32)
        return self.info.crop_box.apply(box)

    def recrop_box(self, points) -> np.ndarray:
        """The box (of the model's own points, as ``predict`` takes) for a re-crop from the
        (K, 2) predicted ``points``: their tight box, or a subset-points file's
        ``crop_box.recrop_box`` (the full box its ``points_map`` reads from them)."""
        if self.info.crop_box is None:
            return box_from_landmarks(points)
        return self.info.crop_box.recrop_box(points)

    def crop(self, image_rgb: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """The model input (1, S, S, 3) float32 in [-1, 1] and the crop matrix, for the
        tight box of the model's own points (mapped with ``crop_box``)."""
        size = self.info.image_size
        image_rgb = as_rgb_uint8(image_rgb)
        crop_matrix(box, size, self.info.crop_scale)            # checks the box itself
        matrix = crop_matrix(self.crop_box(box), size, self.info.crop_scale)
        check_box_in_image(box, image_rgb.shape)
        crop = crop_image(image_rgb, matrix, size)
        return normalize_image(crop)[None], matrix

    def model_input(self, inputs: np.ndarray) -> np.ndarray:
        """A crop (1, S, S, 3) -> the model's whole input: with a flip-pair model, the
        crop and its mirror image (2, S, S, 3)."""
        if not self.info.flip_pair:
            return inputs
        return np.concatenate([inputs, inputs[:, :, ::-1]])

    def crop_heatmaps(self, inputs: np.ndarray) -> np.ndarray:
        """A crop (1, S, S, 3) -> float heatmaps (1, H, W, K), or (2, H, W, K) with flip
        test: the crop's and its mirror image's (one invoke for a flip-pair model)."""
        if self.info.flip_pair:
            return self.model.run(self.model_input(inputs))
        heatmaps = self.model.run(inputs)
        if not self.flip_test:
            return heatmaps
        mirrored = self.model.run(np.ascontiguousarray(inputs[:, :, ::-1]))
        return np.concatenate([heatmaps, mirrored])

    def heatmaps_to_image(self, heatmaps: np.ndarray, matrix: np.ndarray,
                          method: Optional[str] = None) -> np.ndarray:
        """Float heatmaps + crop matrix -> (K, 2) image pixels.

        ``heatmaps``: (H, W, K) or (1, H, W, K) for one crop; (2, H, W, K) for a crop and
        its mirror image (``crop_heatmaps`` with flip test): both are decoded, the
        mirror's points mapped back, and the two averaged.
        ``method``: a ``fld.codec.DECODE_METHODS`` name; default the model's own.
        """
        heatmaps = np.asarray(heatmaps)
        if heatmaps.ndim == 3 or len(heatmaps) == 1:
            crop_points = self._crop_points(heatmaps.reshape(heatmaps.shape[-3:]), method)
        elif len(heatmaps) == 2:
            both = self._crop_points(heatmaps, method)        # one decode call: (2, K, 2)
            crop_points = self._mirror_average(both[0], both[1])
        else:
            raise ValueError(f"heatmaps_to_image: expected (H, W, K) or (1 or 2, H, W, K) "
                             f"heatmaps, got shape {heatmaps.shape}")
        return transform_points(invert_affine(matrix), crop_points)

    def _mirror_average(self, points: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        """Crop points + the mirrored crop's points -> their average, in the crop."""
        return 0.5 * (points + self.scheme.flip(mirrored, self.info.image_size))

    def _crop_points(self, heatmaps: np.ndarray, method: Optional[str] = None) -> np.ndarray:
        """(..., H, W, K) heatmaps -> (..., K, 2) crop pixels (0-based pixel centers)."""
        return self.info.codec.decode_to_image(heatmaps, method or self.info.decode_method,
                                               self.info.decode_radius)

    @property
    def passes(self) -> int:
        """``predict``'s default number of passes: the metadata's ``crop_box.passes``,
        else 1."""
        return 1 if self.info.crop_box is None else self.info.crop_box.passes

    def predict(self, image_rgb: np.ndarray, box, passes: Optional[int] = None) -> np.ndarray:
        """(K, 2) float32 landmarks, 0-based image pixels, for the face in ``box``.

        ``box`` = (x0, y0, x1, y1) is the tight box of the model's own points (300-W
        ground-truth box convention; map detector boxes with ``FaceDetector``).
        ``passes``: each pass after the first crops again around the previous pass's
        points (``recrop_box``); default ``self.passes`` (the file's ``crop_box``).
        A caller running its own re-crop loop passes 1 so the two do not stack.
        """
        passes = self.passes if passes is None else int(passes)
        if passes < 1:
            raise ValueError(f"predict: passes must be >= 1, got {passes}")
        return self._passes(image_rgb, box, passes)[1]

    def _passes(self, image_rgb, box, passes: int) -> tuple[np.ndarray, np.ndarray]:
        """``passes`` predictions, each after the first cropped from the previous one's
        points; (the box of the last crop, its points)."""
        box = np.asarray(box, np.float32)
        points, _ = self.predict_with_heatmaps(image_rgb, box)
        for _ in range(int(passes) - 1):
            box = self.recrop_box(points)
            points, _ = self.predict_with_heatmaps(image_rgb, box)
        return box, points

    def predict_with_heatmaps(self, image_rgb: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """One pass of ``predict``: the points and the crop's float heatmaps
        (``crop_heatmaps``), e.g. for ``fld.runtime.tracking.heatmap_spread``."""
        inputs, matrix = self.crop(image_rgb, box)
        heatmaps = self.crop_heatmaps(inputs)
        return self.heatmaps_to_image(heatmaps, matrix), heatmaps

    # --- with the detector ------------------------------------------------------------
    @property
    def detector(self) -> FaceDetector:
        with self._detector_lock:
            if self._detector is None:
                spec = self._detector_spec if self._detector_spec is not None \
                    else DEFAULT_DETECTOR
                if isinstance(spec, FaceDetector):
                    self._detector = spec
                else:
                    mapping = self._box_mapping
                    if mapping is None and spec == "haar" and self.info.box_mapping is not None:
                        mapping = BoxMapping(*self.info.box_mapping)   # the metadata's: Haar's
                    runtime = getattr(self.model, "runtime", None)   # the same interpreter
                    self._detector = FaceDetector(spec, box_mapping=mapping,
                                                  scheme=self.scheme.name,
                                                  runtime=runtime if runtime in RUNTIMES else None)
            return self._detector

    def detect_faces(self, image_rgb: np.ndarray) -> np.ndarray:
        """(N, 4) landmark boxes of the faces found, largest first."""
        return self.detector(as_rgb_uint8(image_rgb))

    def refine(self, image_rgb: np.ndarray, box, passes: int = DEFAULT_PASSES
               ) -> tuple[np.ndarray, np.ndarray]:
        """Landmark re-crop: predicts from ``box``, then ``passes - 1`` more times from
        the previous prediction (``recrop_box``: the training crop rule's box), so a
        detector box's error in position and size is mostly undone. Returns
        ``(box, points)``: the box of the last crop and its (K, 2) landmarks."""
        if int(passes) < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        return self._passes(image_rgb, box, passes)

    def detect(self, image_rgb: np.ndarray, refine: bool = True,
               passes: int = DEFAULT_PASSES) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(box, points)] for every face found, largest first; [] when none.

        ``refine`` (default): ``passes`` predictions per face, each cropped around the
        previous one's landmarks (``refine``); ``refine=False``: one prediction from the
        detector's mapped box. ``box`` is the landmark box of the last crop.
        """
        image_rgb = as_rgb_uint8(image_rgb)
        passes = passes if refine else 1
        return [self.refine(image_rgb, box, passes) for box in self.detect_faces(image_rgb)]

    # --- video ------------------------------------------------------------------------
    def track(self, frame_rgb: np.ndarray, timestamp: Optional[float] = None) -> list:
        """[``TrackedFace``] in this video frame, each crop from the face's landmarks in
        the previous frame (``fld.runtime.tracking.FaceTracker``, with its defaults on the
        first call; assign ``self.tracker = FaceTracker(self, ...)`` for others)."""
        if self.tracker is None:
            from fld.runtime.tracking import FaceTracker   # imports nothing of this module
            self.tracker = FaceTracker(self)
        return self.tracker.track(frame_rgb, timestamp)


def check_box_in_image(box, shape) -> None:
    """ValueError unless the face box overlaps the (H, W, ...) image: a box entirely
    outside it would give points far from any pixel."""
    x0, y0, x1, y1 = (float(v) for v in box)
    height, width = shape[:2]
    if not (x1 > -0.5 and y1 > -0.5 and x0 < width - 0.5 and y0 < height - 0.5):
        raise ValueError(f"face box ({x0:.6g}, {y0:.6g}, {x1:.6g}, {y1:.6g}) lies entirely "
                         f"outside the {width}x{height} image")


def time_landmarker(landmarker: Landmarker, image_rgb: np.ndarray, box, runs: int = 200,
                    warmup: int = 10, baseline: Optional[Landmarker] = None) -> dict:
    """Latency per face in milliseconds: ``invoke`` (interpreter alone, input already
    quantized) and ``total`` (crop + normalize + quantize + invoke + decode).

    ``baseline``: a second Landmarker timed in the same loops, alternating run by run, so
    that both see the same load (``tools/benchmark.py --baseline``).
    Returns {"invoke_ms": [...], "total_ms": [...], "total_cpu_ms": [...]} (one value
    per run; ``total_cpu_ms``: this process's CPU time, which other processes' load does
    not inflate), and with a baseline the same keys prefixed ``baseline_``.
    """
    timed = {"": landmarker} if baseline is None else {"": landmarker, "baseline_": baseline}
    tensors = {}
    for prefix, one in timed.items():
        inputs, _ = one.crop(image_rgb, box)
        tensors[prefix] = one.model.quantize_input(one.model_input(inputs))
        for _ in range(warmup):
            one.predict(image_rgb, box)
    times = {prefix + key: [] for prefix in timed
             for key in ("invoke_ms", "total_ms", "total_cpu_ms")}
    for _ in range(runs):
        for prefix, one in timed.items():
            start = time.perf_counter()
            one.model.invoke_raw(tensors[prefix])
            times[prefix + "invoke_ms"].append((time.perf_counter() - start) * 1e3)
    for _ in range(runs):
        for prefix, one in timed.items():
            start, cpu = time.perf_counter(), time.process_time()
            one.predict(image_rgb, box)
            times[prefix + "total_ms"].append((time.perf_counter() - start) * 1e3)
            times[prefix + "total_cpu_ms"].append((time.process_time() - cpu) * 1e3)
    return times
