"""Which heatmap statistic tells a face crop from a non-face crop, and where to cut it.

    PYTHONPATH=$PWD python benchmarks/face_confidence.py --every 2 --json out.json

For every annotated face of ../shared/data/300w/train (``--every N``: every Nth file by
sorted path) the landmark model (default: the bundled ``default_68.tflite``) runs on
- ``face``: the crop of its ground-truth landmark box (the training crop rule);
- ``background``: a crop from the same image, placed at random where it does not overlap
  the face box, of the face box's size or, in 300-W's tightly framed images, smaller
  (3/4, 1/2 or 1/3 of it);
- ``flat`` / ``noise`` (every 4th face): a 256 x 256 image of one random grey, and of
  uniform (sometimes blurred) pixel noise, cropped around its center;
- ``shift_25`` / ``shift_50`` (every 4th face, for information only): the face box moved
  sideways by 25 % / 50 % of its longer side, what a tracker sees while drifting.

Candidate measures, each "higher = more face-like", from the decoded model's float
heatmaps (both maps of a flip pair averaged): ``peak`` (mean over landmarks of each
map's maximum), ``neg_spread`` (minus ``heatmap_spread``: the mean soft-argmax standard
deviation, as a fraction of the heatmap's width), ``peak_fraction`` (mean of max / sum),
``window_mass`` (mean share of a map's mass within 2 cells of its peak). Prints each one's AUC (face vs background + flat +
noise) and the width of the gap between them (``separation``), then, for the best (AUC,
then gap), the threshold with the best balanced accuracy and its face /
non-face pass rates; for ``neg_spread``, minus that threshold is ``MAX_FACE_SPREAD`` in
fld/runtime/tracking.py. The last line is ``threshold: T``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_300W = os.path.join(os.path.dirname(REPO), "shared", "data", "300w", "train")


def _maps(heatmaps: np.ndarray) -> np.ndarray:
    """(B, H, W, K) or (H, W, K) -> (B, H*W, K) non-negative, finite."""
    hm = np.asarray(heatmaps, np.float32)
    hm = hm.reshape((-1,) + hm.shape[-3:])
    hm = np.maximum(np.nan_to_num(hm, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    return hm.reshape(len(hm), -1, hm.shape[-1])


def peak(heatmaps):
    return float(_maps(heatmaps).max(axis=1).mean())


def neg_spread(heatmaps):
    """Minus fld.runtime.tracking.heatmap_spread (the tracker's measure)."""
    from fld.runtime.tracking import heatmap_spread

    return -heatmap_spread(heatmaps)


def peak_fraction(heatmaps):
    flat = _maps(heatmaps)
    return float((flat.max(axis=1) / np.maximum(flat.sum(axis=1), 1e-12)).mean())


def window_mass(heatmaps, radius: int = 2):
    hm = np.asarray(heatmaps, np.float32)
    h, w = hm.shape[-3:-1]
    flat = _maps(hm)
    best = flat.argmax(axis=1)                                # (B, K)
    py, px = np.divmod(best, w)
    ys, xs = np.divmod(np.arange(h * w), w)
    near = ((np.abs(ys[None, :, None] - py[:, None]) <= radius)
            & (np.abs(xs[None, :, None] - px[:, None]) <= radius))
    mass = (flat * near).sum(axis=1) / np.maximum(flat.sum(axis=1), 1e-12)
    return float(mass.mean())


MEASURES = {"peak": peak, "neg_spread": neg_spread, "peak_fraction": peak_fraction,
            "window_mass": window_mass}


def auc(positive, negative) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney U)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):           # average ranks of ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def separation(positive, negative) -> float:
    """(1st percentile of the faces - 99th percentile of the non-faces) / the faces'
    median absolute value: how wide the gap is, in units of a typical face score."""
    low, high = np.percentile(positive, 1), np.percentile(negative, 99)
    return float((low - high) / abs(np.median(positive)))


def best_threshold(positive, negative) -> tuple[float, float, float]:
    """The cut with the best balanced accuracy: (threshold, face pass rate, non-face
    pass rate), passing = score >= threshold. Cuts lie midway between neighbouring
    scores; where several cuts tie (e.g. a clean separation), the middle of their range."""
    pos, neg = np.sort(positive), np.sort(negative)
    candidates = np.unique(np.concatenate([pos, neg]))
    cuts = np.concatenate([[candidates[0] - 1e-6], (candidates[1:] + candidates[:-1]) / 2])
    tpr = 1 - np.searchsorted(pos, cuts, side="left") / len(pos)
    fpr = 1 - np.searchsorted(neg, cuts, side="left") / len(neg)
    balanced = tpr - fpr
    tied = np.flatnonzero(balanced == balanced.max())
    threshold = 0.5 * (cuts[tied[0]] + cuts[tied[-1]])
    face_pass = float(np.mean(pos >= threshold))
    return float(threshold), face_pass, float(np.mean(neg >= threshold))


def background_box(box, shape, rng, tries: int = 60):
    """A box inside the image, not overlapping ``box``, of ``box``'s size or, where the
    image is framed too tightly for that (300-W's are: the face fills about half of
    it), of 3/4, 1/2 or 1/3 of it; None if none fits."""
    x0, y0, x1, y1 = box
    height, width = shape[:2]
    for fraction in (1.0, 0.75, 0.5, 0.33):
        w, h = fraction * (x1 - x0), fraction * (y1 - y0)
        if width - w <= 1 or height - h <= 1:
            continue
        for _ in range(tries):
            bx, by = rng.uniform(0, width - w), rng.uniform(0, height - h)
            if bx + w <= x0 or bx >= x1 or by + h <= y0 or by >= y1:
                return np.array([bx, by, bx + w, by + h], np.float32)
    return None


def synthetic_images(rng) -> dict:
    """A flat grey and a noise image, 256 x 256, with a centered box."""
    import cv2

    flat = np.full((256, 256, 3), rng.integers(0, 256), np.uint8)
    noise = rng.integers(0, 256, (256, 256, 3)).astype(np.uint8)
    if rng.random() < 0.5:
        noise = cv2.GaussianBlur(noise, (0, 0), float(rng.uniform(1, 6)))
    return {"flat": flat, "noise": noise}


def collect(landmarker, records, seed: int = 0) -> dict[str, dict[str, list]]:
    """{crop kind: {measure: [scores]}}."""
    from fld.crop import box_from_landmarks
    from fld.images import read_image_rgb

    rng = np.random.default_rng(seed)
    scores: dict[str, dict[str, list]] = {}

    def score(kind, image, box):
        inputs, _ = landmarker.crop(image, box)
        heatmaps = landmarker.crop_heatmaps(inputs)
        for name, fn in MEASURES.items():
            scores.setdefault(kind, {}).setdefault(name, []).append(fn(heatmaps))

    for n, record in enumerate(records):
        image = read_image_rgb(record.image_path)
        box = box_from_landmarks(record.landmarks)
        score("face", image, box)
        other = background_box(box, image.shape, rng)
        if other is not None:
            score("background", image, other)
        if n % 4 == 0:
            side = float(max(box[2] - box[0], box[3] - box[1]))
            for fraction in (0.25, 0.5):
                shift = np.array([fraction * side, 0, fraction * side, 0], np.float32)
                score(f"shift_{int(fraction * 100)}", image, box + shift)
            center = np.array([128 - side / 2, 128 - side / 2, 128 + side / 2, 128 + side / 2])
            for kind, synthetic in synthetic_images(rng).items():
                score(kind, synthetic, np.clip(center, 16, 240))
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=".tflite model (default: bundled)")
    parser.add_argument("--data_dir", default=DATA_300W)
    parser.add_argument("--every", type=int, default=1, help="use every Nth face")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the scores here")
    args = parser.parse_args(argv)

    from fld.crop import box_from_landmarks
    from fld.data.readers import read_pts_dir
    from fld.images import read_image_rgb
    from fld.runtime import Landmarker, describe_cpu

    records = read_pts_dir(args.data_dir)[::max(1, args.every)]
    landmarker = Landmarker(args.model, num_threads=args.threads)
    start = time.perf_counter()
    scores = collect(landmarker, records)
    print(f"cpu: {describe_cpu()}; {len(records)} faces in {time.perf_counter() - start:.0f} s")
    for kind, by_measure in scores.items():
        print(f"{kind:>12}: n={len(by_measure['peak']):5d}  " + "  ".join(
            f"{name} median {np.median(v):.4g}" for name, v in by_measure.items()))
    negatives = ("background", "flat", "noise")
    probe = landmarker.crop_heatmaps(landmarker.crop(
        read_image_rgb(records[0].image_path), box_from_landmarks(records[0].landmarks))[0])
    aucs = {}
    for name, fn in MEASURES.items():
        start = time.perf_counter()
        for _ in range(50):
            fn(probe)
        cost = (time.perf_counter() - start) / 50 * 1e3
        neg = np.concatenate([scores[k][name] for k in negatives if k in scores])
        aucs[name] = auc(scores["face"][name], neg)
        print(f"AUC {name}: {aucs[name]:.4f} (background alone "
              f"{auc(scores['face'][name], scores['background'][name]):.4f}); "
              f"gap {separation(scores['face'][name], neg):.3f}; {cost:.3f} ms per frame")
    best = max(aucs, key=lambda name: (round(aucs[name], 4), separation(
        scores["face"][name], np.concatenate([scores[k][name] for k in negatives]))))
    neg = np.concatenate([scores[k][best] for k in negatives if k in scores])
    threshold, face_pass, other_pass = best_threshold(scores["face"][best], neg)
    typical = float(np.median(scores["face"][best]))
    print(f"best measure: {best}; threshold {threshold:.4g} = {threshold / typical:.3f} x the "
          f"median face ({typical:.4g}); faces passing {face_pass:.2%}, non-faces passing "
          f"{other_pass:.2%}")
    for kind in scores:
        passing = np.mean(np.asarray(scores[kind][best]) >= threshold)
        print(f"  {kind:>12} passing: {passing:.2%}")
    if args.json:
        from fld.fileio import write_text_atomic
        write_text_atomic(args.json, json.dumps({"aucs": aucs, "best": best,
                                                 "threshold": threshold, "scores": scores}))
    print(f"threshold: {threshold:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
