"""TensorFlow-free runtime: a ``.tflite`` landmark model + face detector + video tracking and smoothing.

Imports numpy, OpenCV and a TFLite interpreter (``ai_edge_litert``, ``tflite_runtime``
or, as a last resort, ``tensorflow.lite``) only; never TensorFlow or Keras otherwise.

    from fld.runtime import Landmarker
    landmarker = Landmarker("student_int8.tflite", num_threads=2)
    for box, points in landmarker.detect(image_rgb):
        ...
"""

from fld.runtime.blazeface import BlazeFaceDetector
from fld.runtime.detector import (
    BLAZEFACE_BOX_MAPPINGS, BOX_MAPPINGS, DEFAULT_DETECTOR, DETECTORS, HAAR_BOX_MAPPING,
    HAAR_BOX_MAPPINGS, BoxMapping, FaceDetector, HaarDetector, YuNetDetector, fit_box_mapping,
    measure_box_mapping)
from fld.runtime.interpreter import (RUNTIMES, ModelError, TFLiteModel, describe_cpu,
                                    interpreter_class)
from fld.runtime.landmarker import DEFAULT_MODEL_PATH, DEFAULT_PASSES, Landmarker, time_landmarker
from fld.runtime.metadata import (
    FORMAT, METADATA_NAME, MetadataError, ModelInfo, make_model_info, read_metadata,
    read_model_info)
from fld.runtime.smoothing import OneEuroFilter, PointSmoother
from fld.runtime.tracking import FaceTracker, TrackedFace, heatmap_spread, time_tracking_frame

__all__ = [
    "BLAZEFACE_BOX_MAPPINGS", "BOX_MAPPINGS", "DEFAULT_DETECTOR", "DEFAULT_MODEL_PATH",
    "DEFAULT_PASSES", "DETECTORS", "FORMAT", "HAAR_BOX_MAPPING", "HAAR_BOX_MAPPINGS",
    "METADATA_NAME", "RUNTIMES", "BlazeFaceDetector", "BoxMapping", "FaceDetector",
    "FaceTracker", "HaarDetector", "Landmarker", "MetadataError", "ModelError", "ModelInfo",
    "OneEuroFilter", "PointSmoother", "TFLiteModel", "TrackedFace", "YuNetDetector",
    "describe_cpu", "fit_box_mapping", "heatmap_spread", "interpreter_class",
    "make_model_info", "measure_box_mapping", "read_metadata", "read_model_info",
    "time_landmarker", "time_tracking_frame",
]
