"""fld.runtime.measure_box_mapping on real faces: detections matched by IoU, mapping fitted.

(``fit_box_mapping`` alone, on synthetic boxes, is tested in test_runtime.py.)
"""

import numpy as np
import pytest

from fld.crop import box_from_landmarks
from fld.runtime.detector import (HAAR_BOX_MAPPINGS, BoxMapping, HaarDetector, box_iou,
                                  measure_box_mapping)

# How the fake detector's boxes sit on the tight landmark box: 20-25 % larger, center a
# little left of and above it (as a face detector's box takes in the forehead).
DETECTOR_FROM_LANDMARKS = BoxMapping(dx=-0.02, dy=-0.10, sx=1.20, sy=1.25)


@pytest.fixture(scope="module")
def faces(real_records):
    """(image_rgb, landmarks) of 16 real faces."""
    from fld.images import read_image_rgb

    return [(read_image_rgb(r.image_path), np.asarray(r.landmarks, np.float32))
            for r in real_records[:16]]


def shifted(box, fx, fy=0.0):
    """``box`` moved by (fx, fy) times its own width / height."""
    w, h = box[2] - box[0], box[3] - box[1]
    return box + np.array([fx * w, fy * h, fx * w, fy * h], np.float32)


class FakeDetector:
    """Raw detector boxes derived from each image's own landmark box.

    Faces 0 and 1: nothing found. Face 2: only a box too far off to match (IoU 0.11).
    Every other face: first a decoy that overlaps the landmark box less (IoU 0.54) than
    the true detection (IoU 0.67), then that detection, then a small box in the corner.
    """

    def __init__(self, faces):
        self.truth = {id(image): box_from_landmarks(points) for image, points in faces}
        self.order = [id(image) for image, _ in faces]
        self.true_boxes = {}

    def __call__(self, image):
        index = self.order.index(id(image))
        box = self.truth[id(image)]
        if index < 2:
            return np.zeros((0, 4), np.float32)
        if index == 2:
            return shifted(box, 0.8)[None]
        detection = DETECTOR_FROM_LANDMARKS.apply(box)
        self.true_boxes[index] = detection
        return np.stack([shifted(box, 0.3), detection, np.array([0, 0, 8, 8], np.float32)])


def test_recovers_the_inverse_of_a_known_detector_box(faces):
    detect = FakeDetector(faces)
    result = measure_box_mapping(faces, detect)
    n = len(faces)
    assert result["images"] == n and result["detected"] == n - 3
    assert result["detection_rate"] == pytest.approx((n - 3) / n)
    # The matched pairs: the true detections (not the decoys), with their faces' boxes.
    np.testing.assert_array_equal(result["detector_boxes"],
                                  np.stack([detect.true_boxes[i] for i in range(3, n)]))
    np.testing.assert_array_equal(result["landmark_boxes"],
                                  np.stack([box_from_landmarks(p) for _, p in faces[3:]]))
    # detector = D(landmark box) => landmark center = detector center - (dx / sx) * w_det,
    # landmark size = size_det / s: the fitted mapping is D's inverse.
    d = DETECTOR_FROM_LANDMARKS
    inverse = (-d.dx / d.sx, -d.dy / d.sy, 1 / d.sx, 1 / d.sy)
    np.testing.assert_allclose(result["mapping"].as_tuple(), inverse, atol=1e-4)
    assert max(result["residuals"].values()) < 1e-4, result["residuals"]
    np.testing.assert_allclose(result["mapping"].apply(result["detector_boxes"]),
                               result["landmark_boxes"], atol=0.05)
    # min_iou decides what matches: a looser one also takes face 2's far-off box.
    assert measure_box_mapping(faces, detect, min_iou=0.1)["detected"] == n - 2
    assert measure_box_mapping(faces, detect, min_iou=0.65)["detected"] == n - 3


def test_no_matched_face_is_a_clear_error(faces):
    with pytest.raises(ValueError, match=r"no detection matched .*4 .*faces.*IoU >= 0\.3"):
        measure_box_mapping(faces[:4], lambda image: np.zeros((0, 4), np.float32))
    far = [(image, points) for image, points in faces[:3]]
    with pytest.raises(ValueError, match="no detection matched"):
        measure_box_mapping(far, lambda image: np.array([[0, 0, 5, 5]], np.float32))
    # The true detections overlap their faces at IoU 2/3: a stricter min_iou matches none.
    with pytest.raises(ValueError, match=r"IoU >= 0\.7"):
        measure_box_mapping(faces, FakeDetector(faces), min_iou=0.7)
    with pytest.raises(ValueError, match="no annotated faces"):
        measure_box_mapping([], lambda image: np.zeros((0, 4), np.float32))


def test_haar_on_real_faces_agrees_with_the_shipped_mapping(faces):
    """The Haar mapping the runtime ships (fitted on 300 faces) fits these 16 faces too."""
    result = measure_box_mapping(faces, HaarDetector())
    assert result["detected"] >= 0.6 * len(faces), result["detected"]
    mapping = result["mapping"]
    np.testing.assert_allclose(mapping.as_tuple(), HAAR_BOX_MAPPINGS["300w_68"].as_tuple(),
                               atol=0.05)
    raw, truth = result["detector_boxes"], result["landmark_boxes"]
    before = np.median(np.diag(box_iou(raw, truth)))
    after = np.median(np.diag(box_iou(mapping.apply(raw), truth)))
    assert after > before + 0.1, (before, after)
