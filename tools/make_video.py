"""A synthetic video of a real still face with its true landmarks in every frame.

    python tools/make_video.py --output clip.mp4                 # a bundled sample face
    python tools/make_video.py --face ../shared/data/300w/train/afw/1051618982_1.jpg \\
        --output clip.avi --frames 150 --size 640x480 --noise 4 --seed 2

The face (an image with its iBUG ``.pts`` beside it) moves through small, smooth, known
shifts, zooms and rotations with fresh pixel noise in every frame (fld.synthetic_video).
Writes the video (``.mp4``: mp4v, ``.avi``: MJPG) and, in the folder ``NAME_truth/``
beside it, ``frame_000000.pts`` ... (iBUG, 1-based): the layout ``tools/predict.py
--save_pts`` writes for a video, so predictions and truth compare file by file. The
jitter figures of docs/experiments/2026-12-07-tracking.md come from the same clips in
memory (benchmarks/smoothing_sweep.py), free of the video codec's loss.
"""

from __future__ import annotations

import os

from absl import app, flags

from fld.cli import one_line_errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FACE = os.path.join(REPO, "data", "sample_300w", "afw_1051618982_1.jpg")

flags.DEFINE_string("face", DEFAULT_FACE, "A face image with its .pts file beside it.")
flags.DEFINE_string("output", None, "The video to write (.mp4 or .avi).")
flags.DEFINE_integer("frames", 90, "Frames.")
flags.DEFINE_string("size", "320x240", "Frame size WIDTHxHEIGHT.")
flags.DEFINE_float("fps", 30.0, "Frames per second.")
flags.DEFINE_float("noise", 3.0, "Std of the pixel noise per frame (0-255).")
flags.DEFINE_float("face_fraction", 0.45, "Face box side as a share of the frame height.")
flags.DEFINE_bool("still", False, "No motion: only the noise changes.")
flags.DEFINE_integer("seed", 0, "Motion and noise seed.")
flags.mark_flag_as_required("output")
FLAGS = flags.FLAGS

CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 320x240") from None
    if width < 32 or height < 32:
        raise ValueError(f"--size {text!r}: at least 32x32")
    return width, height


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import cv2

    from fld.data.readers import read_pts, write_pts
    from fld.fileio import atomic_path
    from fld.images import read_image_rgb
    from fld.synthetic_video import make_clip

    ext = os.path.splitext(FLAGS.output)[1].lower()
    if ext not in CODECS:
        raise ValueError(f"--output {FLAGS.output}: use a .mp4 or .avi name")
    size = parse_size(FLAGS.size)
    pts = os.path.splitext(FLAGS.face)[0] + ".pts"
    if not os.path.isfile(pts):
        raise FileNotFoundError(f"--face {FLAGS.face}: no landmark file {pts} beside it")
    clip = make_clip(read_image_rgb(FLAGS.face), read_pts(pts), frames=FLAGS.frames, size=size,
                     face_fraction=FLAGS.face_fraction, fps=FLAGS.fps, noise=FLAGS.noise,
                     seed=FLAGS.seed, still=FLAGS.still)
    truth_dir = os.path.splitext(FLAGS.output)[0] + "_truth"
    with atomic_path(FLAGS.output) as tmp:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*CODECS[ext]), FLAGS.fps, size)
        if not writer.isOpened():
            raise OSError(f"cannot write {FLAGS.output}: OpenCV has no {CODECS[ext]} writer")
        for frame in clip.frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
    os.makedirs(truth_dir, exist_ok=True)
    for i, points in enumerate(clip.points):
        write_pts(os.path.join(truth_dir, f"frame_{i:06d}.pts"), points)
    print(f"wrote {FLAGS.output} ({len(clip.frames)} frames, {size[0]}x{size[1]}) and "
          f"{truth_dir}/frame_*.pts")
    return 0


if __name__ == "__main__":
    app.run(one_line_errors(main, "make_video.py"))
