"""The BlazeFace detector (fld.runtime.blazeface) and the landmark re-crop of
Landmarker.detect, on real faces: anchors and decoding pinned, boxes against the
ground-truth landmark boxes, no face / two faces / tiny / huge / gray inputs, bad model
files, and the second pass undoing a poor box."""

import numpy as np
import pytest

from fld.crop import box_from_landmarks
from fld.runtime.blazeface import (BLAZEFACE_MODELS, MIN_IMAGE_SIDE, BlazeFaceDetector,
                                   BlazeFaceModel, decode, make_anchors, weighted_nms)
from fld.runtime.detector import FaceDetector, box_iou
from fld.runtime.interpreter import ModelError
from tests.helpers import read_rgb


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("blazeface")


@pytest.fixture(scope="module")
def landmarker():
    from fld.runtime import Landmarker

    return Landmarker()   # the bundled 68-point model, BlazeFace by default


@pytest.fixture(scope="module")
def faces(real_records):
    """(image, 68 landmarks) of 12 real faces (afw; one annotated face per image)."""
    return [(read_rgb(r.image_path), np.asarray(r.landmarks, np.float32))
            for r in real_records[:12]]


# --- anchors, decoding, NMS: pinned by hand ------------------------------------------------
def test_anchor_layout_is_pinned():
    short = BLAZEFACE_MODELS["short"]
    anchors = make_anchors(short.input_size, short.strides, short.anchors_per_layer)
    assert anchors.shape == (896, 2)   # 16 x 16 x 2 + 8 x 8 x 6
    # stride 8: 16 x 16 cells, 2 anchors each, row by row
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[[0, 2, 32, 511]],
                               [[1 / 32, 1 / 32], [3 / 32, 1 / 32], [1 / 32, 3 / 32],
                                [31 / 32, 31 / 32]])
    # strides 16, 16, 16: one 8 x 8 map, 6 anchors per cell
    np.testing.assert_allclose(anchors[512:518], np.full((6, 2), 1 / 16))
    np.testing.assert_allclose(anchors[[518, 512 + 48, 895]],
                               [[3 / 16, 1 / 16], [1 / 16, 3 / 16], [15 / 16, 15 / 16]])
    full = BLAZEFACE_MODELS["full"]
    wide = make_anchors(full.input_size, full.strides, full.anchors_per_layer)
    assert wide.shape == (2304, 2)
    np.testing.assert_allclose(wide[[0, 1, 48]], [[1 / 96, 1 / 96], [3 / 96, 1 / 96],
                                                  [1 / 96, 3 / 96]])


def test_decode_by_hand():
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]], np.float32)
    raw = np.zeros((2, 16), np.float32)
    raw[0, :4] = [12.8, -6.4, 32.0, 64.0]     # input pixels of a 128 input
    raw[0, 4:6] = [-12.8, 0.0]                # keypoint 0
    logits = np.array([0.0, np.log(3.0)], np.float32)
    boxes, scores, keypoints = decode(raw, logits, anchors, 128)
    # center (0.25 + 0.1, 0.5 - 0.05), size (0.25, 0.5)
    np.testing.assert_allclose(boxes[0], [0.225, 0.2, 0.475, 0.7], atol=1e-6)
    np.testing.assert_allclose(boxes[1], [0.75, 0.75, 0.75, 0.75], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0], [0.15, 0.5], atol=1e-6)
    np.testing.assert_allclose(keypoints[1], np.tile([0.75, 0.75], (6, 1)), atol=1e-6)
    np.testing.assert_allclose(scores, [0.5, 0.75], atol=1e-6)
    extreme = decode(raw, np.array([1e4, -1e4]), anchors, 128)[1]   # no overflow, no NaN
    assert extreme[0] == 1.0 and 0.0 <= extreme[1] < 1e-40


def test_weighted_nms_blends_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 1, 10, 11]],
                     np.float32)
    scores = np.array([0.9, 0.6, 0.8, 0.3], np.float32)
    points = np.repeat(boxes[:, None, :2], 6, axis=1)
    out_boxes, out_scores, out_points = weighted_nms(boxes, scores, points, 0.3)
    np.testing.assert_allclose(out_scores, [0.9, 0.8])
    weights = np.array([0.9, 0.6, 0.3]) / 1.8
    np.testing.assert_allclose(out_boxes[0], weights @ boxes[[0, 1, 3]], atol=1e-5)
    np.testing.assert_allclose(out_boxes[1], boxes[2])
    np.testing.assert_allclose(out_points[0, 0], weights @ boxes[[0, 1, 3], :2], atol=1e-5)
    empty = weighted_nms(boxes[:0], scores[:0], points[:0], 0.3)
    assert [a.shape for a in empty] == [(0, 4), (0,), (0, 6, 2)]


# --- real faces ---------------------------------------------------------------------------
def test_boxes_match_the_landmark_boxes_of_real_faces(detector, faces):
    ious = []
    for image, landmarks in faces:
        boxes = detector(image)
        assert len(boxes) >= 1
        ious.append(box_iou(boxes, box_from_landmarks(landmarks)).max())
    assert min(ious) >= 0.5 and np.median(ious) >= 0.75, np.round(ious, 2)


def test_keypoints_sit_on_the_eyes_nose_and_mouth(faces):
    raw = BlazeFaceDetector()
    for image, landmarks in faces[:6]:
        found = raw.detect(image)
        side = box_from_landmarks(landmarks)[2:] - box_from_landmarks(landmarks)[:2]
        # the subject's right eye (image left, 68-point 36-41), left eye, nose tip, mouth
        truth = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0),
                          landmarks[30], landmarks[[62, 66]].mean(0)])
        error = np.linalg.norm(found.keypoints[0, :4] - truth, axis=1) / side.max()
        assert error.max() < 0.12, error
        assert found.scores[0] >= 0.5 and found.boxes.shape == (len(found), 4)


def test_no_face_gives_an_empty_result(detector, landmarker):
    rng = np.random.default_rng(0)
    for image in (np.full((240, 320, 3), 128, np.uint8),
                  rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)):
        assert detector(image).shape == (0, 4)
        assert landmarker.detect(image) == []


def test_two_faces_side_by_side(detector, faces):
    import cv2

    (left, left_points), (right, right_points) = faces[0], faces[3]
    height = min(left.shape[0], right.shape[0])
    scale_l, scale_r = height / left.shape[0], height / right.shape[0]
    left = cv2.resize(left, None, fx=scale_l, fy=scale_l, interpolation=cv2.INTER_AREA)
    right = cv2.resize(right, None, fx=scale_r, fy=scale_r, interpolation=cv2.INTER_AREA)
    height = min(left.shape[0], right.shape[0])
    image = np.concatenate([left[:height], right[:height]], axis=1)
    truth = np.stack([box_from_landmarks((left_points + 0.5) * scale_l - 0.5),
                      box_from_landmarks((right_points + 0.5) * scale_r - 0.5
                                         + [left.shape[1], 0])])
    boxes = detector(image)
    assert len(boxes) == 2, boxes
    iou = box_iou(boxes, truth)
    assert iou.max(axis=0).min() >= 0.5, iou


def test_tiny_and_huge_images(detector, faces):
    import cv2

    with pytest.raises(ValueError, match=f"at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"):
        detector(np.zeros((20, 300, 3), np.uint8))
    assert detector(np.zeros((MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, 3), np.uint8)).shape == (0, 4)
    image, landmarks = faces[1]
    factor = 4000 / max(image.shape[:2])   # a 4000 px photo of the same face
    huge = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    truth = box_from_landmarks((landmarks + 0.5) * factor - 0.5)
    assert box_iou(detector(huge), truth).max() >= 0.5
    small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)   # a 64 px thumbnail
    truth = box_from_landmarks((landmarks + 0.5) * 64 / np.array(image.shape[1::-1]) - 0.5)
    assert box_iou(detector(small), truth).max() >= 0.5


def test_gray_and_rgba_images(detector, faces):
    import cv2

    image, landmarks = faces[2]
    truth = box_from_landmarks(landmarks)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert box_iou(detector(gray), truth).max() >= 0.5                 # (H, W)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(detector(rgba), detector(image))          # alpha dropped


def test_bad_detector_files_fail_clearly(tmp_path):
    from fld.runtime import DEFAULT_MODEL_PATH

    corrupt = tmp_path / "face_detection_short_range.tflite"
    corrupt.write_bytes(b"TFL3 this is not a flatbuffer" * 10)
    spec = BLAZEFACE_MODELS["short"]
    for path, message in ((tmp_path / "missing.tflite", "not found"),
                          (corrupt, "cannot load"),
                          (DEFAULT_MODEL_PATH, "not a BlazeFace model with 896 anchors")):
        model = BlazeFaceModel(str(path), spec.input_size, spec.strides, spec.anchors_per_layer)
        with pytest.raises(ModelError, match=message) as error:
            BlazeFaceDetector(model)
        assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="unknown BlazeFace model 'medium'"):
        BlazeFaceDetector("medium")


def test_full_range_model_finds_a_face(faces):
    image, landmarks = faces[0]
    boxes = FaceDetector("blazeface_full")(image)
    assert box_iou(boxes, box_from_landmarks(landmarks)).max() >= 0.5


# --- landmark re-crop ------------------------------------------------------------------------
def test_recrop_lowers_the_error_from_a_poor_box(faces, landmarker):
    from fld import metrics
    from fld.schemes import get_scheme

    scheme = get_scheme("300w_68")
    errors = {1: [], 2: []}
    for image, landmarks in faces[:4]:
        x0, y0, x1, y1 = box_from_landmarks(landmarks)
        w, h = x1 - x0, y1 - y0
        # 20 % of the face to the right and 15 % down, 30 % too large
        cx, cy = (x0 + x1) / 2 + 0.2 * w, (y0 + y1) / 2 + 0.15 * h
        poor = np.array([cx - 0.65 * w, cy - 0.65 * h, cx + 0.65 * w, cy + 0.65 * h])
        for passes in errors:
            _, points = landmarker.refine(image, poor, passes=passes)
            errors[passes].append(
                metrics.nme(points[None], landmarks[None], scheme, "inter_ocular")[0])
    assert np.mean(errors[2]) < 0.8 * np.mean(errors[1]), errors
    with pytest.raises(ValueError, match="passes must be >= 1"):
        landmarker.refine(faces[0][0], poor, passes=0)


def test_evaluate_with_detector_boxes_runs_the_passes(real_records, landmarker):
    from fld import evaluation
    from fld.schemes import get_scheme

    records = real_records[:2]
    scheme = get_scheme("300w_68")
    scored = {p: evaluation.evaluate(records, landmarker, scheme, "detector", progress=False,
                                     passes=p) for p in (1, 2)}
    for passes, results in scored.items():
        assert all(r.detected for r in results)
        expected = landmarker.detect(read_rgb(records[0].image_path), passes=passes)[0][1]
        np.testing.assert_allclose(results[0].pred, expected, atol=1e-4)
    assert scored[1][0].nme_io != scored[2][0].nme_io
