"""The whole export of a ``LandmarkDetector``: convert, audit, embed the runtime's ``fld``
metadata (once), write the ``.tflite`` atomically.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from fld.export.check import best_decode, compare_with_keras
from fld.export.deploy_rules import AuditReport, audit
from fld.export.converter import convert
from fld.export.metadata import embed_metadata
from fld.codec import DEFAULT_DECODE, DEFAULT_DECODE_RADIUS
from fld.export.output_head import (DEFAULT_CAP_PERCENTILE, DEFAULT_FINE_RATIO, fine_output_name,
                                    map_peak_percentile)
from fld.fileio import atomic_path
from fld.keras_engine import model_info_for

@dataclasses.dataclass
class ExportResult:
    """What ``export_landmarker`` wrote.

    Attributes:
        path: the ``.tflite`` file.
        tflite_bytes: its content (with metadata).
        report: the audit's ``AuditReport``.
        info: the ``fld.runtime.metadata.ModelInfo`` embedded.
        output_cap: the value the output was clipped at (None: not clipped).
        check: ``fld.export.check.compare_with_keras``'s result on the held-out faces
            (empty without them), plus ``"decode"``: the method chosen with ``"auto"``.
    """

    path: str
    tflite_bytes: bytes
    report: AuditReport
    info: object
    output_cap: Optional[float] = None
    check: dict = dataclasses.field(default_factory=dict)


def export_landmarker(
    model,
    path: str,
    quantize: str = "int8",
    calibration_images: Iterable[np.ndarray] | None = None,
    input_type: str = "int8",
    crop_scale: Optional[float] = None,
    decode_method: str = DEFAULT_DECODE,
    decode_radius: int = DEFAULT_DECODE_RADIUS,
    verify: Optional[Callable[[str], None]] = None,
    output_cap_percentile: Optional[float] = DEFAULT_CAP_PERCENTILE,
    fine_ratio: Optional[float] = DEFAULT_FINE_RATIO,
    flip_pair: bool = False,
    crop_box=None,
    held_out: Sequence = (),
    progress: bool = False,
) -> ExportResult:
    """Converts a ``LandmarkDetector`` (``fused`` output), audits it, embeds the ``fld``
    metadata and writes ``path`` atomically.

    Args:
        model: a ``fld.models.LandmarkDetector`` (has ``scheme`` and a dict output).
        path: the ``.tflite`` to write.
        quantize: one of ``QUANTIZE_MODES``.
        calibration_images: int8 only: (1, S, S, 3) float32 crops in [-1, 1] made with
            the crop rule (``fld.export.calibration.face_crops``).
        input_type: int8 models' input / output type, ``"int8"`` or ``"uint8"``.
        crop_scale, decode_method, decode_radius: stored in the metadata for the runtime;
            ``decode_method="auto"``: the method with the lowest NME of the converted
            model on ``held_out`` (``DEFAULT_DECODE`` without ground truth).
        verify: optional check run on the finished file (at a temporary path) before it
            replaces ``path``; an exception from it leaves ``path`` untouched.
        output_cap_percentile: int8 only: clip the output at this percentile of the
            ``fused`` map peaks on the calibration images (module docstring); None = no
            clip.
        fine_ratio: with the clip: add the two-range output's fine maps with this
            ratio (``capped_fused_model``); None = one output.
        flip_pair: a batch-2 model for the crop and its mirror image (``convert``);
            the metadata says so (``ModelInfo.flip_pair``) and ``Landmarker`` feeds it.
        crop_box: a subset-points model's ``fld.runtime.crop_box.CropBox`` (stored in
            the metadata; ``calibration_images`` are then crops of the box of all the
            network's points, as training cropped, and ``held_out`` records hold the
            subset's points, cropped through the crop box as users' boxes are).
        held_out: annotated records (never calibrated on) to check the converted model
            against ``model`` (``fld.export.check``); progress: show a bar while checking.
    Returns:
        ``ExportResult``. Raises ``AuditError`` (nothing written) when the model breaks
        a deployment rule: int8 models are audited with the no-float32 rule.
    """
    auto = decode_method == "auto"
    info = model_info_for(model, quantize, crop_scale, DEFAULT_DECODE if auto else decode_method,
                           decode_radius)
    cap = None
    if quantize == "int8" and output_cap_percentile is not None and calibration_images is not None:
        cap = map_peak_percentile(model, calibration_images, output_cap_percentile)
    fine_ratio = fine_ratio if cap is not None else None
    tflite = convert(model, quantize, representative_images=calibration_images,
                     input_type=input_type, outputs="fused", output_cap=cap,
                     fine_ratio=fine_ratio, flip_pair=flip_pair)
    report = audit(tflite, int8=(quantize == "int8"))
    if fine_ratio is not None:
        info = dataclasses.replace(info, fine_output=(fine_output_name(tflite),
                                                      float(fine_ratio)))
    info = dataclasses.replace(info, flip_pair=bool(flip_pair), crop_box=crop_box)
    checked = compare_with_keras(tflite, info, model, held_out, progress) if held_out else {}
    if auto and best_decode(checked):
        checked["decode"] = best_decode(checked)
        info = dataclasses.replace(info, decode_method=checked["decode"])
    tflite = embed_metadata(tflite, info)   # once, with the decode chosen
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(tflite)
        if verify is not None:
            verify(tmp)
    return ExportResult(str(path), tflite, report, info, cap, checked)
