"""Jitter and per-frame cost of video landmarks: tracking raw, tracking + One-Euro, and
the detector on every frame, on synthetic clips of real still faces (fld.synthetic_video).

    PYTHONPATH=$PWD python benchmarks/smoothing_sweep.py --faces 6 --frames 90 \\
        --plot docs/experiments/2026-12-07-tracking-jitter.png

Each clip moves one face of data/sample_300w (validation faces: the bundled model did
not train on them) through small known shifts / zooms / rotations with fresh pixel noise
(``--noise``), ``--still`` clips only add the noise. Modes:
- ``detect``: ``Landmarker.detect`` on every frame (the detector's box, no tracking); the
  face nearest the truth is kept; a frame where the detector misses repeats the last points;
- ``track``: ``FaceTracker`` (crops from the previous landmarks, detector every
  ``--detect_every`` frames), raw points;
- ``smooth``: the same run's One-Euro smoothed points (``--min_cutoff``, ``--beta``).
Then a sweep of the filter's parameters over the tracked raw points (the filter does not
feed back into the crops, so filtering them afterwards gives what the tracker gives).

Reported per mode: jitter (std of the frame-to-frame motion minus the true motion, % of
the inter-ocular distance; the mean over clips), NME (% io, mean over frames) and ms per
frame (median); then ``time_tracking_frame``'s tracking frame against the landmark step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_detect(landmarker, clip) -> tuple[np.ndarray, list[float], int]:
    """Detector on every frame: (N, K, 2) points, ms per frame, frames missed."""
    from fld.crop import box_from_landmarks
    from fld.runtime.tracking import box_iou

    points, times, misses = [], [], 0
    for frame, truth in zip(clip.frames, clip.points):
        start = time.perf_counter()
        found = landmarker.detect(frame)
        times.append((time.perf_counter() - start) * 1e3)
        if not found:
            misses += 1
            points.append(points[-1] if points else truth * np.nan)
            continue
        iou = box_iou(box_from_landmarks(truth), [box for box, _ in found])[0]
        points.append(found[int(np.argmax(iou))][1])
    return np.stack(points), times, misses


def run_track(landmarker, clip, detect_every, filter_args):
    """FaceTracker: raw (N, K, 2), smoothed (N, K, 2), ms per frame, frames lost."""
    from fld.runtime import FaceTracker

    tracker = FaceTracker(landmarker, detect_every=detect_every, smooth=True,
                          min_cutoff=filter_args[0], beta=filter_args[1],
                          d_cutoff=filter_args[2])
    raw, smooth, times, lost = [], [], [], 0
    for i, frame in enumerate(clip.frames):
        start = time.perf_counter()
        found = tracker.track(frame, i / clip.fps)
        times.append((time.perf_counter() - start) * 1e3)
        if not found:
            lost += 1
            raw.append(raw[-1] if raw else clip.points[i] * np.nan)
            smooth.append(smooth[-1] if smooth else clip.points[i] * np.nan)
            continue
        raw.append(found[0].raw_points)
        smooth.append(found[0].points)
    return np.stack(raw), np.stack(smooth), times, lost


def smooth_offline(raw: np.ndarray, fps: float, min_cutoff, beta, d_cutoff=1.0):
    from fld.runtime import PointSmoother

    smoother = PointSmoother(min_cutoff, beta, d_cutoff)
    return np.stack([smoother(p, i / fps) for i, p in enumerate(raw)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data_dir", default=os.path.join(REPO, "data", "sample_300w"))
    parser.add_argument("--faces", type=int, default=6, help="clips (one face each)")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--noise", type=float, default=3.0)
    parser.add_argument("--still", action="store_true", help="no motion, noise only")
    parser.add_argument("--detect_every", type=int, default=10)
    parser.add_argument("--min_cutoff", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=20.0)
    parser.add_argument("--d_cutoff", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", default=None, help="PNG of jitter per frame")
    args = parser.parse_args(argv)

    from fld.data.readers import read_pts_dir
    from fld.images import read_image_rgb
    from fld.metrics import nme
    from fld.runtime import Landmarker, describe_cpu, time_tracking_frame
    from fld.synthetic_video import frame_jitter_percent, jitter_percent, make_clip

    records = read_pts_dir(args.data_dir)
    step = max(1, len(records) // max(1, args.faces))
    records = records[::step][:args.faces]
    landmarker = Landmarker(args.model, num_threads=args.threads)
    scheme = landmarker.scheme
    filter_args = (args.min_cutoff, args.beta, args.d_cutoff)
    print(f"cpu: {describe_cpu()}; {len(records)} clips x {args.frames} frames, noise "
          f"{args.noise}, {'still' if args.still else 'moving'}, detect_every "
          f"{args.detect_every}, One-Euro {filter_args}")

    results = {"detect": [], "track": [], "smooth": []}   # (jitter, nme, ms) per clip
    per_frame = {name: [] for name in results}
    raws, clips = [], []
    for n, record in enumerate(records):
        clip = make_clip(read_image_rgb(record.image_path), record.landmarks,
                         frames=args.frames, noise=args.noise, seed=n, still=args.still)
        detected, detect_ms, misses = run_detect(landmarker, clip)
        raw, smooth, track_ms, lost = run_track(landmarker, clip, args.detect_every, filter_args)
        if np.isnan(detected).any() or np.isnan(raw).any():
            print(f"  {os.path.basename(record.image_path)}: no face on the first frame "
                  f"(detector), clip left out")
            continue
        raws.append(raw)
        clips.append(clip)
        for name, points, ms in (("detect", detected, detect_ms), ("track", raw, track_ms),
                                 ("smooth", smooth, track_ms)):
            results[name].append((jitter_percent(points, clip.points, scheme),
                                  100 * nme(points, clip.points, scheme).mean(),
                                  float(np.median(ms))))
            per_frame[name].append(frame_jitter_percent(points, clip.points, scheme))
        print(f"  {os.path.basename(record.image_path)}: jitter detect "
              f"{results['detect'][-1][0]:.3f} track {results['track'][-1][0]:.3f} smooth "
              f"{results['smooth'][-1][0]:.3f} % io; detector misses {misses}, lost {lost}")
    if not clips:
        raise SystemExit("no clip had a detected face")
    print(f"{'mode':>8} {'jitter %io':>10} {'NME %io':>8} {'ms/frame':>9}")
    for name, rows in results.items():
        rows = np.asarray(rows)
        print(f"{name:>8} {rows[:, 0].mean():10.3f} {rows[:, 1].mean():8.3f} "
              f"{np.median(rows[:, 2]):9.2f}")

    print("One-Euro sweep over the tracked raw points (jitter / NME, % io):")
    betas = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)
    print(f"{'min_cutoff':>10} " + " ".join(f"{'beta ' + format(b, 'g'):>15}" for b in betas))
    for min_cutoff in (0.3, 1.0, 3.0):
        cells = []
        for beta in betas:
            jit, err = zip(*[(jitter_percent(s, c.points, scheme),
                              100 * nme(s, c.points, scheme).mean())
                             for s, c in ((smooth_offline(r, c.fps, min_cutoff, beta), c)
                                          for r, c in zip(raws, clips))])
            cells.append(f"{np.mean(jit):6.3f} / {np.mean(err):5.3f}")
        print(f"{min_cutoff:10g} " + " ".join(f"{c:>15}" for c in cells))

    timing = time_tracking_frame(landmarker, clips[0].frames, runs=3,
                                 box=_first_box(clips[0]))
    print(f"tracking frame {timing['tracking_frame_ms']:.2f} ms, landmark step "
          f"{timing['landmarks_ms']:.2f} ms (Landmarker.predict), ratio {timing['ratio']:.3f} "
          f"over {timing['frames']} frames")
    if args.plot:
        _plot(per_frame, args.plot, len(clips))
        print(f"plot: {args.plot}")
    return 0


def _first_box(clip):
    from fld.crop import box_from_landmarks

    return box_from_landmarks(clip.points[0])


def _plot(per_frame, path, count) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fld.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = {"detect": "detector every frame", "track": "tracking, raw",
              "smooth": "tracking + One-Euro"}
    for name, curves in per_frame.items():
        mean = np.mean(np.stack(curves), axis=0)
        ax.plot(np.arange(1, len(mean) + 1), mean, label=f"{labels[name]} ({mean.mean():.2f})")
    ax.set_xlabel("frame")
    ax.set_ylabel("jitter, % inter-ocular")
    ax.set_title(f"Frame-to-frame jitter (RMS residual motion), mean of {count} clips")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
