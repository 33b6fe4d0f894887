"""Video tracking (fld.runtime.tracking), per-track smoothing and the synthetic video.

Real faces from the bundled data/sample_300w (the validation faces: the bundled model
did not train on them) with the bundled default model, moved through synthetic frames
(fld.synthetic_video) whose true landmarks are known.
"""

import os

import numpy as np
import pytest

from fld.crop import box_from_landmarks
from fld.metrics import nme
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # (tests.helpers: Keras)
SAMPLE = os.path.join(REPO, "data", "sample_300w")


@pytest.fixture(scope="module")
def faces():
    """Two (image, landmarks) real faces."""
    from fld.data.readers import read_pts_dir
    from fld.images import read_image_rgb

    records = read_pts_dir(SAMPLE)
    return [(read_image_rgb(r.image_path), r.landmarks) for r in (records[0], records[10])]


@pytest.fixture(scope="module")
def landmarker():
    from fld.runtime import Landmarker

    return Landmarker()


def clip_of(face, **kwargs):
    from fld.synthetic_video import make_clip

    return make_clip(face[0], face[1], **kwargs)


def counting(detect):
    """A detector wrapper that counts its calls (``.calls``)."""
    def wrapper(frame):
        wrapper.calls += 1
        return detect(frame)
    wrapper.calls = 0
    return wrapper


def blank_frames(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [np.clip(120 + rng.normal(0, 3, shape), 0, 255).astype(np.uint8) for _ in range(n)]


def test_tracking_follows_a_moving_face_without_the_detector(faces, landmarker):
    """The face drifts 3 % of its size per frame (50 px over the clip) and zooms: the
    detector runs once, on the first frame, and the crops follow the landmarks."""
    import cv2

    from fld.runtime import FaceTracker, Landmarker
    from fld.synthetic_video import frame_matrices
    from fld.crop import transform_points

    image, landmarks = faces[0]
    path = np.zeros((16, 4))
    path[:, 0] = 0.03 * np.arange(16)          # dx, in face sizes
    path[:, 1] = -0.015 * np.arange(16)        # dy
    path[:, 2] = np.log(1 + 0.01 * np.arange(16))
    matrices = frame_matrices(landmarks, path, (400, 300), 0.4)
    frames = [cv2.warpAffine(image, m, (400, 300), borderMode=cv2.BORDER_REPLICATE)
              for m in matrices]
    truth = np.stack([transform_points(m, landmarks) for m in matrices])
    assert np.linalg.norm(truth[-1].mean(0) - truth[0].mean(0)) > 50

    first_box = box_from_landmarks(truth[0])
    detector = counting(lambda frame: [first_box])
    tracker = FaceTracker(Landmarker.from_engine(landmarker.model, landmarker.info,
                                                 detector=detector),
                          detect_every=0, smooth=False)
    out = [tracker.track(frame) for frame in frames]
    assert detector.calls == 1 and tracker.detections == 1
    assert all(len(found) == 1 and found[0].track_id == 0 for found in out)
    assert out[0][0].detected and not any(found[0].detected for found in out[1:])
    points = np.stack([found[0].points for found in out])
    errors = nme(points, truth, "300w_68")
    assert errors.max() < 0.06, errors                     # still on the face at the end
    np.testing.assert_allclose(out[-1][0].box, box_from_landmarks(points[-1]))


def test_a_lost_face_is_dropped_and_redetected_when_it_returns(faces, landmarker):
    from fld.runtime import FaceTracker

    clip = clip_of(faces[0], frames=12, seed=1)
    frames = list(clip.frames[:4]) + blank_frames(4, clip.frames[0].shape) + list(clip.frames[4:8])
    tracker = FaceTracker(landmarker, detect_every=0)
    out, detections = [], []
    for frame in frames:
        out.append(tracker.track(frame))
        detections.append(tracker.detections)
    assert [len(found) for found in out] == [1] * 4 + [0] * 4 + [1] * 4, \
        [len(found) for found in out]
    # Detector: frame 0, then on every blank frame (nothing tracked), then once more
    # when the face is back; not on the tracked frames.
    assert detections == [1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 6, 6], detections
    assert {f[0].track_id for f in out[:4]} == {0} and {f[0].track_id for f in out[8:]} == {1}
    assert out[8][0].detected
    errors = nme(np.stack([f[0].points for f in out[8:]]), clip.points[4:8], "300w_68")
    assert errors.max() < 0.06, errors


def test_two_faces_side_by_side_give_two_tracks(faces, landmarker):
    from fld.runtime import FaceTracker

    left, right = clip_of(faces[0], frames=6, seed=2), clip_of(faces[1], frames=6, seed=3)
    tracker = FaceTracker(landmarker, detect_every=3)
    for i in range(6):
        found = tracker.track(np.concatenate([left.frames[i], right.frames[i]], axis=1))
        assert [f.track_id for f in found] == [0, 1] or [f.track_id for f in found] == [1, 0]
        by_side = sorted(found, key=lambda f: f.points[:, 0].mean())
        shifted = right.points[i] + [left.frames.shape[2], 0]
        errors = nme(np.stack([f.points for f in by_side]),
                     np.stack([left.points[i], shifted]), "300w_68")
        assert errors.max() < 0.06, (i, errors)
    assert tracker.detections == 2          # frames 0 and 3


def test_heatmap_spread_separates_a_face_from_background(faces, landmarker):
    from fld.runtime.tracking import MAX_FACE_SPREAD, heatmap_spread

    image, landmarks = faces[0]
    box = box_from_landmarks(landmarks)

    def spread(img, b):
        return heatmap_spread(landmarker.crop_heatmaps(landmarker.crop(img, b)[0]))

    face = spread(image, box)
    side = 0.3 * (box[2] - box[0])
    corner = spread(image, np.array([0, 0, side, side]))       # away from the face
    flat = spread(np.full((200, 200, 3), 128, np.uint8), np.array([50, 50, 150, 150]))
    assert face < 0.8 * MAX_FACE_SPREAD, face
    assert corner > 1.2 * MAX_FACE_SPREAD and flat > 1.2 * MAX_FACE_SPREAD, (corner, flat)
    # Golden values: one sharp peak per map -> 0; an empty map -> a uniform map's spread.
    peaks = np.zeros((16, 16, 3), np.float32)
    peaks[4, 5, :] = 1.0
    assert heatmap_spread(peaks) == pytest.approx(0.0, abs=1e-6)
    two = np.zeros((16, 16, 1), np.float32)
    two[8, 2], two[8, 10] = 1.0, 1.0                            # std 4 cells in x
    assert heatmap_spread(two) == pytest.approx(4 / 16, abs=1e-6)
    uniform = np.sqrt(2 * (16 ** 2 - 1) / 12) / 16
    assert heatmap_spread(np.zeros((16, 16, 2))) == pytest.approx(uniform, abs=1e-6)
    assert heatmap_spread(np.ones((16, 16, 2))) == pytest.approx(uniform, abs=1e-6)


def test_smoothing_lowers_jitter_on_a_synthetic_video(faces, landmarker):
    from fld.runtime import FaceTracker
    from fld.synthetic_video import jitter_percent

    clip = clip_of(faces[0], frames=30, seed=4)
    tracker = FaceTracker(landmarker, detect_every=0, smooth=True)
    out = [tracker.track(frame, i / clip.fps)[0] for i, frame in enumerate(clip.frames)]
    raw = np.stack([f.raw_points for f in out])
    smooth = np.stack([f.points for f in out])
    np.testing.assert_allclose(smooth[0], raw[0])              # the filter starts there
    raw_jitter = jitter_percent(raw, clip.points)
    smooth_jitter = jitter_percent(smooth, clip.points)
    assert 0.1 < raw_jitter < 2.0, raw_jitter
    assert smooth_jitter < 0.75 * raw_jitter, (smooth_jitter, raw_jitter)
    # ... without lagging off the face.
    assert nme(smooth, clip.points, "300w_68").mean() < 1.2 * nme(raw, clip.points,
                                                                  "300w_68").mean()


def test_landmarker_track_and_the_timing_helper(faces, landmarker):
    from fld.runtime import Landmarker, TrackedFace, time_tracking_frame

    clip = clip_of(faces[0], frames=6, seed=5)
    fresh = Landmarker.from_engine(landmarker.model, landmarker.info)
    found = fresh.track(clip.frames[0])
    assert fresh.tracker is not None and len(found) == 1 and isinstance(found[0], TrackedFace)
    assert found[0].points.shape == (68, 2) and found[0].spread > 0
    timing = time_tracking_frame(landmarker, clip.frames, runs=1,
                                 box=box_from_landmarks(clip.points[0]))
    assert timing["frames"] == 5 and len(timing["tracking_ms"]) == 5
    assert timing["tracking_frame_ms"] > 0 and timing["landmarks_ms"] > 0
    assert timing["ratio"] == pytest.approx(timing["tracking_frame_ms"] / timing["landmarks_ms"])


def test_bad_frames_and_arguments_give_clear_errors(landmarker):
    from fld.runtime import FaceTracker
    from fld.runtime.tracking import heatmap_spread

    tracker = FaceTracker(landmarker)
    bad = [(np.zeros((40, 40, 5), np.uint8), r"FaceTracker: bad frame \(shape \(40, 40, 5\)"),
           (np.zeros((40, 40, 3), bool), r"dtype bool.*not a pixel type"),
           (np.full((40, 40, 3), 300.0), r"values span \[300, 300\]"),
           (np.zeros((40,), np.uint8), r"bad frame \(shape \(40,\)"),
           (None, r"expected a frame as an \(H, W, 3\) uint8 array, got NoneType"),
           ([[1, 2, 3]], r"got list")]
    for frame, message in bad:
        with pytest.raises(ValueError, match=message):
            tracker.track(frame)
    for kwargs, message in (({"detect_every": -1}, "detect_every must be an integer >= 0"),
                            ({"detect_every": 2.5}, "detect_every must be an integer"),
                            ({"max_faces": 0}, "max_faces must be >= 1"),
                            ({"beta": -1.0}, "beta >= 0")):
        with pytest.raises(ValueError, match=message):
            FaceTracker(landmarker, **kwargs)
    with pytest.raises(ValueError, match=r"heatmap_spread: expected .* got shape \(16, 16\)"):
        heatmap_spread(np.zeros((16, 16)))


def test_point_smoother_smooths_and_restarts_on_a_jump():
    from fld.runtime import PointSmoother

    rng = np.random.default_rng(0)
    base = np.array([[100, 100], [200, 100], [150, 150], [120, 200], [180, 200]], np.float32)
    smoother = PointSmoother(min_cutoff=1.0, beta=0.0)
    out = np.stack([smoother(base + rng.normal(0, 1.0, base.shape), i / 30) for i in range(60)])
    assert np.abs(out[30:] - base).std() < 0.5           # jitter of 1 px reduced
    jumped = smoother(base + 300.0, 60 / 30)              # 3 face sizes: no lag after it
    assert np.abs(jumped - (base + 300.0)).max() < 1e-3


def test_synthetic_clip_points_follow_the_pixels():
    """A bright dot drawn at each landmark lands, in every frame, on the clip's point."""
    from fld.synthetic_video import jitter_percent, make_clip, residual_motion

    for factor in (1, 2):       # 2: the clip downscales the source once first
        image = np.zeros((300 * factor, 300 * factor, 3), np.uint8)
        landmarks = factor * np.array([[100, 120], [200, 120], [150, 150], [120, 210],
                                       [180, 200], [150, 90]], np.float32)
        r = 1 if factor == 1 else 2
        for x, y in landmarks.astype(int):
            image[y - r:y + r + 1, x - r:x + r + 1] = 255
        clip = make_clip(image, landmarks, frames=8, size=(320, 240), noise=0.0, seed=3)
        assert clip.frames.shape == (8, 240, 320, 3) and clip.points.shape == (8, 6, 2)
        assert np.abs(clip.points - clip.points[0]).max() > 1.0     # it does move
        for frame, points in zip(clip.frames, clip.points):
            grey = frame[..., 0].astype(np.float64)
            for x, y in points:
                xi, yi = int(round(x)), int(round(y))
                window = grey[yi - 3:yi + 4, xi - 3:xi + 4]
                ys, xs = np.mgrid[yi - 3:yi + 4, xi - 3:xi + 4]
                center = np.array([(window * xs).sum(), (window * ys).sum()]) / window.sum()
                np.testing.assert_allclose(center, [x, y], atol=0.25, err_msg=str(factor))
    # Jitter: a fixed offset is no jitter; alternating +-d in x is a std of d (x only).
    scheme = _scheme_6()
    io = np.linalg.norm(clip.points[:, 1] - clip.points[:, 0], axis=-1)
    assert jitter_percent(clip.points + 5.0, clip.points, scheme) == pytest.approx(0, abs=1e-4)
    wobble = clip.points.copy()
    wobble[:, :, 0] += (0.01 * io * (-1.0) ** np.arange(8))[:, None]
    motion = residual_motion(wobble, clip.points)
    assert np.abs(motion[:, :, 1]).max() < 1e-4
    assert jitter_percent(wobble, clip.points, scheme) == pytest.approx(
        100 * np.sqrt(0.5 * (0.02 ** 2)), rel=0.05)


def _scheme_6():
    from fld.schemes import Scheme

    return Scheme("six", 6, (1, 0, 2, 4, 3, 5), (0, 1), ((0,), (1,)), ())


def test_a_51_point_file_tracks_through_its_re_crop_box(faces):
    """The shipped 51-point file: each frame's next box is the file's re-crop box of its
    points (through its points map), not their tight box, and the points stay on the face."""
    from fld.runtime import FaceTracker, Landmarker
    from fld.synthetic_video import make_clip

    path = os.path.join(REPO, "fld", "runtime", "assets", "default_51.tflite")
    image, landmarks = faces[0]
    clip = make_clip(image, landmarks[17:], frames=6)
    first = box_from_landmarks(clip.points[0])
    fifty_one = Landmarker(path, detector=lambda frame: [first])
    tracker = FaceTracker(fifty_one, detect_every=0, smooth=False)
    out = [tracker.track(frame)[0] for frame in clip.frames]
    for face in out:
        np.testing.assert_allclose(face.box, fifty_one.recrop_box(face.raw_points), atol=1e-4)
        assert np.abs(face.box - box_from_landmarks(face.raw_points)).max() > 1.0
    errors = nme(np.stack([f.points for f in out]), clip.points, "pair_51")
    assert errors.max() < 0.08, errors
