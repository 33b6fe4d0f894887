"""Export: Keras landmark models -> audited TFLite files carrying the runtime's metadata.

- ``converter``: the quantization switch (``convert``, ``make_converter``,
  ``QUANTIZE_MODES``); int8 is full-integer with builtin int8 ops only.
- ``output_head``: the int8 output head (``capped_fused_model``: the fused maps clipped
  at ``map_peak_percentile`` of the calibration peaks, and the two-range output).
- ``calibration``: real face crops for calibration and checks, and the faces that would
  stretch a tensor's int8 range (``outlier_crops``).
- ``deploy_rules``: the deployment audit (tflite-runtime 2.14 builtins, no float32 in int8).
- ``mean_split``: int8 MEANs over more than 4,096 values split (XNNPACK's AVX2 int8
  MEAN wraps around beyond ~8,192 values per output).
- ``metadata``: the ``fld`` metadata writer; ``flatbuffer``: the TFLite schema's object
  API, shared by the rewriters.
- ``landmark_model``: the whole export of a ``LandmarkDetector`` (convert, audit, embed
  metadata once, write atomically), and ``tflite_weights``: float weights read back out
  of an int8 file; ``split_attention``: a MobileViT-v2's attention projections as the
  two convolutions the int8 file runs fastest (the same function).

No module imports TensorFlow at import time (the runtime-only environment reads
``calibration``).
"""

from fld.export.deploy_rules import AuditError, AuditReport, audit
from fld.export.calibration import layer_peaks, outlier_crops
from fld.export.converter import QUANTIZE_MODES, convert, make_converter
from fld.export.landmark_model import ExportResult, export_landmarker
from fld.export.output_head import (
    DEFAULT_CAP_PERCENTILE, DEFAULT_FINE_RATIO, FINE_OUTPUT, capped_fused_model, fine_output_name,
    map_peak_percentile)
from fld.export.split_attention import split_attention

__all__ = ["AuditError", "AuditReport", "audit", "layer_peaks", "outlier_crops",
           "QUANTIZE_MODES", "convert", "make_converter", "ExportResult", "export_landmarker",
           "DEFAULT_CAP_PERCENTILE", "DEFAULT_FINE_RATIO", "FINE_OUTPUT", "capped_fused_model",
           "fine_output_name", "map_peak_percentile", "split_attention"]
