"""BlazeFace: a small SSD-style CNN face detector, run by the runtime's TFLite interpreter.

The models are MediaPipe's (``fld/runtime/assets/face_detection_*.tflite``, Apache-2.0;
origin and checksums in ``assets/mediapipe_NOTICE.txt``). What runs around them is
written here from the published description (V. Bazarevsky et al., "BlazeFace:
Sub-millisecond Neural Face Detection on Mobile GPUs", arXiv:1907.05047, 2019):

- input: the whole image letterboxed into an S x S square (the longer side fills it,
  centered, black padding), pixels scaled to [-1, 1];
- anchors (SSD, Liu et al. 2016): one per cell and per anchor slot of each feature map,
  at the cell centers ``((i + 0.5) / cells)``, of a fixed size (1 x 1 of the input): the
  short-range model has a 16 x 16 map (stride 8) with 2 anchors per cell and an 8 x 8
  map (strides 16, three layers of 2) with 6: 512 + 384 = 896 anchors;
- per anchor 16 regressed numbers: box center offset x, y and size w, h, then 6
  keypoints (x, y offsets: the two eyes, nose tip, mouth, two ear tragions), all in
  input pixels (divided by S to get anchor units), and one score logit (sigmoid);
- weighted non-maximum suppression (the paper's "blending" tie resolution): overlapping
  candidates are merged into their score-weighted mean box instead of being dropped.

    detector = BlazeFaceDetector()                 # the bundled short-range model
    boxes = detector(image_rgb)                    # (N, 4) image pixels, best first
    found = detector.detect(image_rgb)             # boxes, scores, (N, 6, 2) keypoints

Boxes are in the project's pixel convention (0-based pixel centers, ``fld.crop``); they
are detector boxes, which ``fld.runtime.detector.BoxMapping`` maps onto landmark boxes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from fld.crop import crop_image, crop_matrix, invert_affine, normalize_image, transform_points
from fld.images import as_rgb_uint8
from fld.runtime.interpreter import ModelError, TFLiteModel

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


@dataclasses.dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace variant: its file and anchor layout.

    ``strides``: one entry per SSD layer; consecutive layers of one stride share a
    feature map (``input_size / stride`` cells a side) and stack their anchors.
    """

    path: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int
    score_threshold: float = 0.5
    nms_threshold: float = 0.3


# The short-range model: faces within ~2 m of the camera, i.e. filling a good part of the
# image (selfies, portraits, the 300-W photos). The full-range model (192 x 192 input, one
# 48 x 48 map, 1 anchor per cell: 2,304 anchors) also finds small faces in wide shots.
BLAZEFACE_MODELS = {
    "short": BlazeFaceModel(os.path.join(ASSETS, "face_detection_short_range.tflite"),
                            input_size=128, strides=(8, 16, 16, 16), anchors_per_layer=2),
    "full": BlazeFaceModel(os.path.join(ASSETS, "face_detection_full_range_sparse.tflite"),
                           input_size=192, strides=(4,), anchors_per_layer=1,
                           score_threshold=0.6),
}
NUM_KEYPOINTS = 6
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
# Below this the letterboxed face would be a few input pixels: too small to detect.
MIN_IMAGE_SIDE = 32


def make_anchors(input_size: int, strides, anchors_per_layer: int) -> np.ndarray:
    """(A, 2) anchor centers (x, y) in units of the input side, in the models' order:
    feature maps by stride (finest first), then rows, columns, anchor slots."""
    strides = list(strides)
    centers = []
    layer = 0
    while layer < len(strides):
        stride, repeats = strides[layer], 1
        while layer + repeats < len(strides) and strides[layer + repeats] == stride:
            repeats += 1
        cells = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells,
                             (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs, ys], axis=-1).reshape(-1, 1, 2)
        centers.append(np.repeat(grid, anchors_per_layer * repeats, axis=1).reshape(-1, 2))
        layer += repeats
    return np.concatenate(centers).astype(np.float32)


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
           input_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs (A, 16), (A,) or (A, 1) -> boxes (A, 4) as (x0, y0, x1, y1), scores
    (A,) and keypoints (A, 6, 2), coordinates in units of the input side (0..1 spans it,
    edges of the input's pixels)."""
    raw = np.asarray(regressors, np.float32).reshape(len(anchors), -1) / input_size
    center = raw[:, 0:2] + anchors        # anchors are 1 x 1: offsets and sizes unscaled
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([center - half, center + half], axis=1)
    keypoints = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None]
    logits = np.clip(np.asarray(logits, np.float64).reshape(-1), -100.0, 100.0)
    return boxes, (1.0 / (1.0 + np.exp(-logits))).astype(np.float32), keypoints


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray,
                 iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted non-maximum suppression: the best remaining candidate and every other
    one overlapping it by IoU > ``iou_threshold`` become one detection, its box and
    keypoints their score-weighted mean, its score the best one's. Best first."""
    from fld.runtime.detector import box_iou

    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    remaining = np.ones(len(boxes), bool)
    out_boxes, out_scores, out_points = [], [], []
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        group = remaining & (box_iou(boxes[i], boxes)[0] > iou_threshold)
        group[i] = True
        weights = scores[group] / scores[group].sum()
        out_boxes.append(weights @ boxes[group])
        out_points.append(np.tensordot(weights, keypoints[group], axes=1))
        out_scores.append(scores[i])
        remaining &= ~group
    if not out_boxes:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                np.zeros((0, NUM_KEYPOINTS, 2), np.float32))
    return (np.asarray(out_boxes, np.float32), np.asarray(out_scores, np.float32),
            np.asarray(out_points, np.float32))


@dataclasses.dataclass
class Detections:
    """Faces found in one image, best score first: ``boxes`` (N, 4) (x0, y0, x1, y1),
    ``scores`` (N,), ``keypoints`` (N, 6, 2) (``KEYPOINT_NAMES``), image pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


class BlazeFaceDetector:
    """BlazeFace on the runtime's TFLite interpreter: ``image_rgb -> (N, 4)`` detector
    boxes, best first (``detect`` also gives scores and keypoints).

    Args:
        model: ``"short"`` (default) or ``"full"`` (``BLAZEFACE_MODELS``), or a
            ``BlazeFaceModel``.
        score_threshold / nms_threshold: override the model's (0.5 / 0.3 short range).
        num_threads / runtime: as ``TFLiteModel``.
    Raises:
        ModelError: the model file is missing, unreadable or not a BlazeFace model (the
            message names the file).
    Thread safety: as ``TFLiteModel`` (invokes are serialized).
    """

    def __init__(self, model="short", score_threshold: Optional[float] = None,
                 nms_threshold: Optional[float] = None, num_threads: int = 1,
                 runtime: Optional[str] = None):
        if isinstance(model, str):
            if model not in BLAZEFACE_MODELS:
                raise ValueError(f"unknown BlazeFace model {model!r}: use one of "
                                 f"{sorted(BLAZEFACE_MODELS)}")
            model = BLAZEFACE_MODELS[model]
        self.spec: BlazeFaceModel = model
        self.score_threshold = (model.score_threshold if score_threshold is None
                                else float(score_threshold))
        self.nms_threshold = model.nms_threshold if nms_threshold is None else float(nms_threshold)
        if not os.path.isfile(model.path):
            raise ModelError(f"BlazeFace detector model not found: {model.path} (a partial "
                             f"checkout or install? reinstall fld)")
        try:
            self.model = TFLiteModel(model.path, num_threads=num_threads, runtime=runtime)
        except ModelError as e:
            raise ModelError(f"BlazeFace detector: {e}") from None
        self.anchors = make_anchors(model.input_size, model.strides, model.anchors_per_layer)
        self._check_outputs()

    def _check_outputs(self) -> None:
        size, count = self.spec.input_size, len(self.anchors)
        shapes = [tuple(int(v) for v in d["shape"]) for d in self.model._outputs]
        want = sorted([(1, count, 4 + 2 * NUM_KEYPOINTS), (1, count, 1)])
        if self.model.input_shape != (1, size, size, 3) or sorted(shapes) != want:
            raise ModelError(f"{self.spec.path}: not a BlazeFace model with {count} anchors: "
                             f"input {self.model.input_shape}, outputs {shapes}; expected "
                             f"input {(1, size, size, 3)} and outputs {want}")
        self._box_output = int(np.argmax([s[-1] for s in shapes]))

    def letterbox(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model input (1, S, S, 3) in [-1, 1] and its 2x3 image -> input matrix:
        the crop rule (``fld.crop``) with the whole image as the box and no margin."""
        image_rgb = as_rgb_uint8(image_rgb)
        height, width = image_rgb.shape[:2]
        if min(height, width) < MIN_IMAGE_SIDE:
            raise ValueError(f"image {width}x{height} is too small for the BlazeFace face "
                             f"detector: at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels")
        size = self.spec.input_size
        matrix = crop_matrix((-0.5, -0.5, width - 0.5, height - 0.5), size, scale=1.0)
        return normalize_image(crop_image(image_rgb, matrix, size))[None], matrix

    def detect(self, image_rgb: np.ndarray) -> Detections:
        """Faces in an RGB (or gray, or RGBA) image; empty ``Detections`` when none."""
        inputs, matrix = self.letterbox(image_rgb)
        outputs = self.model.run_outputs(inputs)
        regressors, logits = outputs[self._box_output], outputs[1 - self._box_output]
        boxes, scores, keypoints = decode(regressors, logits, self.anchors,
                                          self.spec.input_size)
        keep = scores >= self.score_threshold
        boxes, scores, keypoints = weighted_nms(boxes[keep], scores[keep], keypoints[keep],
                                                self.nms_threshold)
        # input units -> input pixel centers -> image pixels
        back = invert_affine(matrix)
        size = self.spec.input_size
        corners = transform_points(back, boxes.reshape(-1, 2) * size - 0.5).reshape(-1, 4)
        points = transform_points(back, keypoints.reshape(-1, 2) * size - 0.5)
        return Detections(corners.astype(np.float32), scores,
                          points.reshape(-1, NUM_KEYPOINTS, 2).astype(np.float32))

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        return self.detect(image_rgb).boxes
