"""Landmarks for images, folders of images, videos or a webcam, with a ``.tflite`` model.

    python tools/predict.py --model student_int8.tflite --input photos/ \\
        --output_dir out/ --save_pts --save_overlay
    python tools/predict.py --model m.tflite --input photos/ --boxes boxes.csv --save_pts ...
    python tools/predict.py --model m.tflite --input clip.mp4 --smooth --save_overlay ...
    python tools/predict.py --model m.tflite --input 0 --max_frames 300 ...   # webcam 0

Faces come from the face detector (``--detector``: the bundled BlazeFace CNN by default,
``blazeface_full`` for small faces in wide shots, ``haar`` for OpenCV's Haar cascade, or a
YuNet ``.onnx`` path), each face predicted ``--passes`` times (default 2: the second crop
around the first prediction's landmarks, ``Landmarker.detect``), or, with ``--boxes``, from a CSV
``image,x0,y0,x1,y1`` (one face per row, a header row allowed, the image named relative
to the input folder (or its file name for a single image), 0-based pixel coordinates of
the tight box of the model's own points: the 51 inner points for a 51-point file, which
maps it onto its training crop with its metadata's ``crop_box``, ``fld.runtime.crop_box``).
An image in which the detector finds no face is reported on
stderr (``no face found in PATH``; it adds no faces to the summary).

Videos and webcams: with ``--track`` (the default) each face is tracked
(``fld.runtime.tracking``): a frame's crop comes from the face's landmarks in the previous
frame; the detector runs on the first frame, when a face is lost (its heatmaps spread
out) and every ``--detect_every`` frames; ``--smooth`` adds One-Euro smoothing per face.
``--notrack`` runs the detector on every frame.

Outputs (in ``--output_dir``, keeping each input's path relative to the input folder):
- ``--save_pts``: ``NAME.pts`` in iBUG format (1-based) for the first face (the largest
  detected, or the first CSV row), ``NAME_1.pts``, ``NAME_2.pts`` ... for further faces.
  Videos: ``NAME/frame_000123.pts`` (and ``frame_000123_1.pts`` ...): with ``--track``
  the faces of a frame in track order (the longest-tracked first), with ``--notrack``
  largest first.
- ``--save_overlay``: the image with the points drawn (and the face box), ``NAME.jpg``
  for JPEG inputs, ``NAME.png`` otherwise; videos: ``NAME.mp4``.
- Inputs whose names differ only in the extension (``face.jpg``, ``face.png``) keep
  distinct outputs: ``face_jpg.pts``, ``face_png.pts`` (and overlays likewise).
- An existing file beside an input image (e.g. its ground-truth ``.pts`` when
  ``--output_dir`` is the input folder) is never overwritten unless ``--overwrite``;
  the check runs before any work. An overlay never replaces its input image.

A file that cannot be decoded inside a folder is reported on stderr and skipped; the
last line is a summary ``images: N, faces: F, skipped: S``. A missing input, an empty
folder, a single input that is not an image / video, or an unusable model is an error
(exit status 1). TensorFlow is not imported (``fld.runtime`` only).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import os
import sys

import numpy as np
from absl import app, flags

from fld.cli import one_line_errors, short_error
from fld.crop import MAX_COORDINATE, box_from_landmarks
from fld.data.readers import IMAGE_EXTENSIONS, write_pts
from fld.drawing import draw_faces, write_image
from fld.fileio import atomic_path, check_writable_dir
from fld.images import DEFAULT_MAX_PIXELS, read_image_rgb
from fld.runtime import DEFAULT_PASSES, FaceTracker, Landmarker, MetadataError, ModelError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

flags.DEFINE_string("model", None, "The .tflite model, or a bundled model's name: default "
                    "(the accurate one, used when not given), default_51 or fast.")
flags.DEFINE_string("input", None, "An image, a folder of images, a video or a webcam index.")
flags.DEFINE_string("boxes", None, "CSV image,x0,y0,x1,y1 of landmark boxes, the tight box "
                    "of the model's own points (no detection).")
flags.DEFINE_string("output_dir", None, "Where .pts files and overlays go.")
flags.DEFINE_bool("save_pts", False, "Write iBUG .pts files.")
flags.DEFINE_bool("save_overlay", False, "Write images (videos) with the landmarks drawn.")
flags.DEFINE_bool("track", True, "Videos / webcam: track the faces, each frame's crop from "
                  "the previous frame's landmarks (--notrack: detect on every frame).")
flags.DEFINE_bool("smooth", False, "Videos / webcam, with --track: One-Euro smoothing of "
                  "each tracked face's points (ignored for images).")
flags.DEFINE_string("detector", "blazeface", "Face detector: blazeface (default), "
                    "blazeface_full (small faces in wide shots), haar, or a YuNet .onnx path.")
flags.DEFINE_integer("passes", DEFAULT_PASSES, "Detected faces: landmark predictions per "
                     "face, each cropped around the last one's landmarks (1: from the "
                     "detector's box only).", lower_bound=1)
flags.DEFINE_integer("threads", 1, "Interpreter CPU threads.")
flags.DEFINE_bool("flip_test", False, "Also run the mirrored crop and average the two "
                  "predictions: lower error, twice the model time.")
flags.DEFINE_string("runtime", None, "Force ai_edge_litert, tflite_runtime or tf.")
flags.DEFINE_integer("detect_every", 10, "Videos with --track: also run the detector every "
                     "N frames, for new faces (0: only when a face is lost).")
flags.DEFINE_float("max_face_spread", None, "Videos with --track: the heatmap spread above "
                   "which a tracked face counts as lost (default: MAX_FACE_SPREAD of "
                   "fld.runtime.tracking, measured for the bundled model).")
flags.DEFINE_integer("max_frames", 0, "Videos / webcam: stop after N frames (0: all).")
flags.DEFINE_bool("overwrite", False, "Allow replacing existing files that sit beside the "
                  "input images (e.g. their ground-truth .pts files).")
flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS, "Refuse images with more pixels than "
                     "this (checked from the file header, before decoding).")
flags.mark_flag_as_required("input")
FLAGS = flags.FLAGS


class InputError(Exception):
    """A problem with the command line's inputs: reported, exit status 1."""


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str) -> list[str]:
    """Image paths under ``folder`` relative to it, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files if is_image(f)]
    return sorted(found)


def read_boxes(path: str) -> dict[str, list[np.ndarray]]:
    """CSV ``image,x0,y0,x1,y1`` -> {image (normalized relative path): [boxes]}."""
    if not os.path.isfile(path):
        raise InputError(f"boxes file not found: {path}")
    boxes: dict[str, list[np.ndarray]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not any(cell.strip() for cell in row):
                continue
            try:
                values = [float(v) for v in row[1:]]
            except ValueError:
                if n == 1:
                    continue  # header row
                raise InputError(f"{path}:{n}: box coordinates must be numbers: {row}") from None
            if len(values) != 4 or not np.all(np.isfinite(values)) or \
                    values[2] <= values[0] or values[3] <= values[1] or \
                    max(abs(v) for v in values) > MAX_COORDINATE:
                raise InputError(f"{path}:{n}: expected image,x0,y0,x1,y1 with x1 > x0, "
                                 f"y1 > y0 and |v| <= {MAX_COORDINATE:.0e}, got {row}")
            boxes.setdefault(os.path.normpath(row[0].strip()), []).append(
                np.asarray(values, np.float32))
    if not boxes:
        raise InputError(f"{path}: no boxes in this CSV")
    return boxes


def output_stems(names: list[str]) -> dict[str, str]:
    """Input name -> output stem: the name without its extension, or with the extension
    folded in (``face_jpg``) where several inputs share a stem (case-insensitively, as
    on case-insensitive file systems), so that no two inputs write the same file."""
    split = {name: os.path.splitext(name) for name in names}
    counts = collections.Counter(stem.lower() for stem, _ in split.values())
    return {name: stem if counts[stem.lower()] == 1 else f"{stem}_{ext.lstrip('.').lower()}"
            for name, (stem, ext) in split.items()}


class Outputs:
    """Writes .pts files and overlays under the output folder, never over an existing
    file in a folder that holds input images (``protect``) unless ``overwrite``."""

    def __init__(self, output_dir, save_pts, save_overlay, overwrite=False):
        self.output_dir, self.save_pts, self.save_overlay = output_dir, save_pts, save_overlay
        self.overwrite, self._protected = overwrite, set()

    def protect(self, input_paths) -> None:
        """Marks the folders of these inputs: existing files there are not replaced."""
        self._protected.update(os.path.dirname(os.path.realpath(p)) for p in input_paths)

    def check_writable(self, path: str) -> None:
        if (not self.overwrite and os.path.exists(path)
                and os.path.dirname(os.path.realpath(path)) in self._protected):
            raise InputError(f"{path} exists beside the input images (their annotation?): "
                             f"not overwritten; choose another --output_dir or pass --overwrite")

    def pts_paths(self, stem: str, count: int) -> list[str]:
        base = os.path.join(self.output_dir, stem)
        return [f"{base}.pts" if i == 0 else f"{base}_{i}.pts" for i in range(count)]

    def write_faces(self, stem: str, faces) -> None:
        if self.save_pts:
            paths = self.pts_paths(stem, len(faces))
            for path in paths:
                self.check_writable(path)
            for path, (_, points) in zip(paths, faces):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_pts(path, points)

    def overlay_path(self, relative: str, stem: str) -> str:
        ext = os.path.splitext(relative)[1]
        return os.path.join(self.output_dir,
                            stem + (".jpg" if ext.lower() in (".jpg", ".jpeg") else ".png"))

    def planned(self, relative: str, stem: str) -> list[str]:
        """The files one input's first face writes."""
        return ((self.pts_paths(stem, 1) if self.save_pts else [])
                + ([self.overlay_path(relative, stem)] if self.save_overlay else []))


def make_landmarker(detect: bool) -> Landmarker:
    """The model, and (``detect``) its face detector, built now: a bad --model or
    --detector fails once, before any image."""
    try:
        landmarker = Landmarker(FLAGS.model, num_threads=FLAGS.threads, runtime=FLAGS.runtime,
                                detector=FLAGS.detector, flip_test=FLAGS.flip_test)
    except (OSError, MetadataError, ModelError, ImportError) as e:
        raise InputError(str(e)) from None
    if detect:
        try:
            landmarker.detector
        except (OSError, ValueError, ImportError) as e:
            raise InputError(f"--detector {FLAGS.detector}: {e}") from None
    return landmarker


def run_images(landmarker, root, relatives, boxes, outputs, progress,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, int]:
    """Processes images; returns (images, faces, skipped)."""
    from tqdm import tqdm

    names = [os.path.basename(r) if root is None else r for r in relatives]
    paths = [r if root is None else os.path.join(root, r) for r in relatives]
    stems = output_stems(names)
    outputs.protect(paths)
    for name, path in zip(names, paths):   # before any work: nothing is lost halfway
        for target in outputs.planned(name, stems[name]):
            if os.path.realpath(target) == os.path.realpath(path):
                raise InputError(f"overlay {target} would overwrite its input image: choose "
                                 f"another --output_dir")
            outputs.check_writable(target)
    images = faces_total = skipped = 0
    bar = tqdm(list(zip(names, paths)), desc="predict", unit="img", file=sys.stderr,
               disable=None if progress else True)
    for name, path in bar:
        try:
            image = read_image_rgb(path, max_pixels)
            if boxes is not None:
                faces = [(b, landmarker.predict(image, b))
                         for b in boxes.get(os.path.normpath(name), [])]
            else:
                faces = landmarker.detect(image, passes=FLAGS.passes)
                if not faces:
                    tqdm.write(f"no face found in {path}", file=sys.stderr)
        except Exception as e:   # noqa: BLE001 - one bad image never ends a folder's run
            reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            tqdm.write(f"skipped {path}: {short_error(reason)}", file=sys.stderr)
            skipped += 1
            continue
        images += 1
        faces_total += len(faces)
        outputs.write_faces(stems[name], faces)
        if outputs.save_overlay:
            write_image(outputs.overlay_path(name, stems[name]), draw_faces(image, faces))
    return images, faces_total, skipped


def run_video(landmarker, source, stem, outputs) -> tuple[int, int, int]:
    """Processes a video file or webcam index; returns (frames, faces, skipped).

    Ctrl-C ends a webcam / video run early and keeps what was written.
    """
    import cv2

    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise InputError(f"cannot open video {source!r}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    tracker = FaceTracker(landmarker, detect_every=FLAGS.detect_every, smooth=FLAGS.smooth,
                          max_spread=FLAGS.max_face_spread) if FLAGS.track else None
    writer, frames, faces_total = None, 0, 0
    with contextlib.ExitStack() as stack:  # closes in reverse: writer, then the rename
        stack.callback(capture.release)
        try:
            while not FLAGS.max_frames or frames < FLAGS.max_frames:
                ok, frame_bgr = capture.read()
                if not ok:
                    break
                frame = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
                if tracker is not None:
                    faces = [(box_from_landmarks(face.points), face.points)
                             for face in tracker.track(frame, frames / fps)]
                else:
                    faces = landmarker.detect(frame, passes=FLAGS.passes)
                faces_total += len(faces)
                outputs.write_faces(os.path.join(stem, f"frame_{frames:06d}"), faces)
                if outputs.save_overlay:
                    if writer is None:
                        tmp = stack.enter_context(
                            atomic_path(os.path.join(outputs.output_dir, stem + ".mp4")))
                        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (frame.shape[1], frame.shape[0]))
                        stack.callback(writer.release)
                    writer.write(draw_faces(frame, faces))
                frames += 1
        except KeyboardInterrupt:
            print(f"interrupted after {frames} frames", file=sys.stderr)
        else:
            warn_short_read(capture, source, frames)
    if frames == 0:
        raise InputError(f"no frames could be read from {source!r}")
    return frames, faces_total, 0


def warn_short_read(capture, source, frames: int) -> None:
    """Warns when a video file ended before the frame count its header states."""
    import cv2

    expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if isinstance(source, str) and expected > frames and \
            not (FLAGS.max_frames and frames >= FLAGS.max_frames):
        print(f"warning: {source}: read {frames} of the {expected} frames its header states "
              f"(truncated or corrupt file?)", file=sys.stderr)


def predict(argv_input: str) -> int:
    """Runs the whole command; returns the exit status."""
    saving = FLAGS.save_pts or FLAGS.save_overlay
    if saving and not FLAGS.output_dir:
        raise InputError("--save_pts / --save_overlay need --output_dir")
    outputs = Outputs(FLAGS.output_dir, FLAGS.save_pts, FLAGS.save_overlay, FLAGS.overwrite)
    boxes = read_boxes(FLAGS.boxes) if FLAGS.boxes else None

    if argv_input.isdigit():
        kind = "webcam"
    elif not os.path.exists(argv_input):
        raise InputError(f"input not found: {argv_input}")
    elif os.path.isdir(argv_input):
        kind = "folder"
        relatives = list_images(argv_input)
        if not relatives:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {argv_input}")
    elif argv_input.lower().endswith(VIDEO_EXTENSIONS):
        kind = "video"
    else:
        kind = "image"
        try:
            read_image_rgb(argv_input, FLAGS.max_pixels)
        except ValueError as e:
            raise InputError(str(e)) from None
    if boxes is not None and kind in ("video", "webcam"):
        raise InputError("--boxes works with images and folders, not videos")

    if saving:
        try:
            check_writable_dir(FLAGS.output_dir, "--output_dir")
        except OSError as e:
            raise InputError(str(e)) from None
    landmarker = make_landmarker(detect=boxes is None)
    if kind == "folder":
        counts = run_images(landmarker, argv_input, relatives, boxes, outputs, progress=True,
                            max_pixels=FLAGS.max_pixels)
        what = "images"
    elif kind == "image":
        counts = run_images(landmarker, None, [argv_input], boxes, outputs, progress=False,
                            max_pixels=FLAGS.max_pixels)
        what = "images"
    else:
        source = int(argv_input) if kind == "webcam" else argv_input
        stem = f"webcam{argv_input}" if kind == "webcam" else \
            os.path.splitext(os.path.basename(argv_input))[0]
        counts = run_video(landmarker, source, stem, outputs)
        what = "frames"
    done, faces, skipped = counts
    print(f"{what}: {done}, faces: {faces}, skipped: {skipped}")
    return 1 if done == 0 else 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        return predict(FLAGS.input)
    except InputError as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    app.run(one_line_errors(main, "predict.py"))
