"""Evaluation on annotated faces: per-face errors, tables and reports.

One code path for every model kind: a *predictor* is any object with the runtime's
``predict(image_rgb, box) -> (K, 2)`` and ``detect(image_rgb) -> [(box, points)]``
(``fld.runtime.Landmarker`` for .tflite files and for Keras models alike), so float and
int8 numbers differ only because the models differ.

Numpy + OpenCV only (no TensorFlow).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np

from fld import drawing, metrics
from fld.codec import VALIDATION_DECODE
from fld.crop import box_from_landmarks
from fld.fileio import write_text_atomic
from fld.images import ImageError, read_image_rgb
from fld.runtime.detector import box_iou
from fld.schemes import Scheme

BOX_SOURCES = ("gt", "detector")


@dataclasses.dataclass
class FaceResult:
    """The outcome on one annotated face (``pred`` is None when no face was detected)."""

    image_path: str
    subset: str
    gt: np.ndarray
    pred: np.ndarray | None
    nme_io: float = float("nan")
    nme_ip: float = float("nan")

    @property
    def detected(self) -> bool:
        return self.pred is not None


def load_predictor(path: str, decode_method: str | None = None, num_threads: int = 1,
                   preset: str | None = None, image_size: int | None = None,
                   scheme: str | None = None, flip_test: bool = False,
                   reference_kernels: bool = False, detector=None):
    """A runtime ``Landmarker`` for a ``.tflite`` file (or a bundled model's name,
    ``fld.runtime.bundled``) or a Keras model file.

    ``decode_method`` overrides the host-side decode (default: a ``.tflite``'s stored one;
    soft-argmax for Keras models, as training's validation decodes). ``preset``,
    ``image_size`` and ``scheme`` are needed for ``.weights.h5`` files only.
    ``flip_test``: average with the mirrored crop's prediction (``Landmarker``).
    ``reference_kernels``: a ``.tflite`` runs on TFLite's builtin kernels instead of
    XNNPACK (CPU-independent results; an error for Keras models).
    ``detector``: the face detector of ``detect`` (``Landmarker``'s; None: its default).
    """
    from fld.runtime.bundled import resolve_model

    path = resolve_model(path)
    if path.endswith(".tflite"):
        from fld.runtime.landmarker import Landmarker

        landmarker = Landmarker(path, num_threads=num_threads, flip_test=flip_test,
                                reference_kernels=reference_kernels, detector=detector)
        if decode_method:
            landmarker.info = dataclasses.replace(landmarker.info, decode_method=decode_method)
        return landmarker
    if reference_kernels:
        raise ValueError(f"{path}: reference_kernels applies to .tflite models only")
    from fld.keras_engine import keras_landmarker

    return keras_landmarker(path, preset, image_size, scheme, detector=detector,
                            decode_method=decode_method or VALIDATION_DECODE, flip_test=flip_test)


def match_detection(detections, gt_box, min_iou: float = 0.3):
    """The detected face whose predicted landmark box overlaps ``gt_box`` most, or None."""
    if not detections:
        return None
    boxes = np.stack([box_from_landmarks(points) for _box, points in detections])
    overlaps = box_iou(boxes, gt_box)[:, 0]
    best = int(np.argmax(overlaps))
    return detections[best][1] if overlaps[best] >= min_iou else None


def evaluate(records, predictor, scheme: Scheme, boxes: str = "gt",
             progress: bool = True, read_image=None,
             skipped: list | None = None, passes: int | None = None) -> list[FaceResult]:
    """Runs ``predictor`` on every record and scores it.

    Args:
        records: ``fld.data.records.Record`` list (ground truth in the scheme).
        predictor: object with ``predict(image, box)`` and ``detect(image)``.
        scheme: the landmark scheme of records and predictor.
        boxes: ``gt`` crops from the ground-truth landmark box (the 300-W protocol);
            ``detector`` runs face detection and scores the matching face.
        read_image: image reader (default ``fld.images.read_image_rgb``).
        skipped: a list: faces whose image cannot be decoded are appended to it (as
            their ImageError message) and left out; None: such a face is an error.
        passes: with ``detector`` boxes, ``predictor.detect(image, passes=passes)``
            (``Landmarker``'s landmark re-crop); None: the predictor's default.
    """
    if boxes not in BOX_SOURCES:
        raise ValueError(f"unknown box source {boxes!r}: use one of {BOX_SOURCES}")
    if not records:
        raise ValueError("evaluate: no annotated faces")
    read_image = read_image or read_image_rgb
    results = []
    iterator = records
    if progress:
        from tqdm import tqdm

        iterator = tqdm(records, desc="evaluating", unit="face", disable=None)
    for record in iterator:
        try:
            image = read_image(record.image_path)
        except ImageError as e:
            if skipped is None:
                raise ImageError(f"{e} (--skip_bad skips and counts such faces)") from None
            skipped.append(str(e))
            continue
        gt = np.asarray(record.landmarks, np.float32)
        gt_box = box_from_landmarks(gt)
        if boxes == "gt":
            pred = predictor.predict(image, gt_box)
        else:
            found = (predictor.detect(image) if passes is None
                     else predictor.detect(image, passes=passes))
            pred = match_detection(found, gt_box)
        result = FaceResult(record.image_path, record.subset, gt, pred)
        if pred is not None:
            if pred.shape != gt.shape:
                raise ValueError(f"{record.image_path}: model predicts {pred.shape[0]} points, "
                                 f"annotation has {gt.shape[0]}")
            result.nme_io = float(metrics.nme(pred[None], gt[None], scheme, "inter_ocular")[0])
            result.nme_ip = float(metrics.nme(pred[None], gt[None], scheme, "inter_pupil")[0])
        results.append(result)
    return results


TABLE_COLUMNS = ("subset", "faces", "detected", "nme_io_mean", "nme_io_median", "nme_ip_mean",
                 "fr_08", "fr_10", "auc_08", "auc_10")


def summary_rows(results: list[FaceResult]) -> list[dict]:
    """One row per subset (sorted) plus ``all``; NMEs in percent, over detected faces."""
    groups = sorted({r.subset for r in results})
    rows = []
    for name, members in [(g, [r for r in results if r.subset == g]) for g in groups] + [
            ("all", results)]:
        if len(groups) == 1 and name != "all":
            continue
        found = [r for r in members if r.detected]
        row = {"subset": name or "(root)", "faces": len(members), "detected": len(found)}
        if found:
            io_ = np.array([r.nme_io for r in found])
            ip_ = np.array([r.nme_ip for r in found])
            s = metrics.summarize(io_)
            row.update(nme_io_mean=100 * s["mean"], nme_io_median=100 * s["median"],
                       nme_ip_mean=100 * float(ip_.mean()), fr_08=100 * s["fr_08"],
                       fr_10=100 * s["fr_10"], auc_08=s["auc_08"], auc_10=s["auc_10"])
        rows.append(row)
    return rows


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The rows as an aligned text table (or a Markdown table)."""
    def cell(row, key):
        value = row.get(key, "")
        if isinstance(value, float):
            return f"{value:.4f}" if key.startswith("auc") else f"{value:.2f}"
        return str(value)

    header = ["subset", "faces", "detected", "NME io %", "median io %", "NME ip %",
              "FR@0.08 %", "FR@0.10 %", "AUC@0.08", "AUC@0.10"]
    body = [[cell(r, k) for k in TABLE_COLUMNS] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    fmt = "  ".join("{:>%d}" % w for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*b) for b in body])


def write_csv(results_by_model: dict, path: str) -> str:
    """Per-face CSV: model, image, subset, detected, nme_io, nme_ip."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "image", "subset", "detected", "nme_io", "nme_ip"])
    for model, results in results_by_model.items():
        for r in results:
            writer.writerow([model, r.image_path, r.subset, int(r.detected),
                             f"{r.nme_io:.6f}", f"{r.nme_ip:.6f}"])
    write_text_atomic(path, buffer.getvalue())
    return path


def worst_faces_png(results: list[FaceResult], path: str, count: int = 16,
                    tile: int = 192, read_image=None) -> str:
    """A grid of the ``count`` worst faces: ground truth green, prediction red."""
    import cv2

    from fld.crop import crop_face, transform_points

    read_image = read_image or read_image_rgb
    scored = sorted((r for r in results if r.detected), key=lambda r: -r.nme_io)[:count]
    if not scored:
        raise ValueError("worst_faces_png: no detected faces to show")
    tiles = []
    for r in scored:
        face, matrix = crop_face(read_image(r.image_path), box_from_landmarks(r.gt), tile, 1.4)
        face = drawing.compare_tile(cv2.cvtColor(face, cv2.COLOR_RGB2BGR),
                                    transform_points(matrix, r.gt),
                                    transform_points(matrix, r.pred), radius=2.0)
        tiles.append(drawing.put_label(
            face, f"{100 * r.nme_io:.1f}% {os.path.basename(r.image_path)[:18]}"))
    return drawing.write_image(path, drawing.grid(tiles, columns=4))


def write_report(results_by_model: dict, report_dir: str) -> dict:
    """CED plot, per-face CSV, worst-16 grid per model and a Markdown summary.

    Returns the paths written, by kind.
    """
    os.makedirs(report_dir, exist_ok=True)
    paths = {"csv": write_csv(results_by_model, os.path.join(report_dir, "per_face.csv"))}
    curves = {m: np.array([r.nme_io for r in res if r.detected])
              for m, res in results_by_model.items()}
    curves = {m: c for m, c in curves.items() if c.size}
    if curves:
        paths["ced"] = metrics.plot_ced(curves, os.path.join(report_dir, "ced.png"))
    sections = ["# Evaluation summary", ""]
    for model, results in results_by_model.items():
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        if any(r.detected for r in results):
            paths[f"worst_{safe}"] = worst_faces_png(
                results, os.path.join(report_dir, f"worst16_{safe}.png"))
        sections += [f"## {model}", "", format_table(summary_rows(results), markdown=True), ""]
    paths["summary"] = os.path.join(report_dir, "summary.md")
    write_text_atomic(paths["summary"], "\n".join(sections))
    return paths
