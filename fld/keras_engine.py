"""Keras models behind the runtime's interface, so float models are evaluated and
compared through exactly the crop / decode code the .tflite runtime uses.

    landmarker = keras_landmarker("work/student/best.keras")
    points = landmarker.predict(image_rgb, box)       # same API as fld.runtime.Landmarker
"""

from __future__ import annotations


import numpy as np

from fld.cli import short_error
from fld.codec import DEFAULT_DECODE_RADIUS, VALIDATION_DECODE
from fld.crop import DEFAULT_CROP_SCALE
from fld.fileio import check_model_file


def load_keras_model(path: str, preset: str | None = None, image_size: int | None = None,
                     scheme: str | None = None, compile: bool = True,
                     any_keras_model: bool = False):
    """Loads a ``LandmarkDetector`` from ``.keras``, or from ``.weights.h5`` plus the
    preset, image size and scheme it was built with, or from an fld int8 ``.tflite``
    plus the preset (image size and scheme come from its metadata; the float weights
    are read back out of the int8 file, ``fld.export.tflite_weights``). Errors name the file.
    ``any_keras_model``: a ``.keras`` file may hold any Keras model (a teacher or an
    ``--init_from`` source), not only a ``LandmarkDetector``."""
    import keras

    import fld.models as models  # registers the custom layers for safe-mode loading

    if path.endswith(".tflite"):
        check_model_file(path, "tflite")
        return _model_from_tflite(path, preset)
    check_model_file(path, "keras")
    if path.endswith(".weights.h5"):
        if not (preset and image_size and scheme):
            raise ValueError(f"{path}: a .weights.h5 file holds weights only: also give the "
                             f"preset, image size and scheme it was trained with")
        model = models.LandmarkDetector(preset=preset, image_size=image_size, scheme=scheme)
        try:
            model.load_weights(path)
        except Exception as e:  # wrong architecture or not an HDF5 file
            raise ValueError(f"{path}: cannot load these weights into {preset} at "
                             f"{image_size}px, scheme {scheme}: {short_error(e)}") from None
        return model
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: not a model file (expected .keras, .weights.h5 with the "
                         f"preset, image size and scheme, or an fld .tflite with the preset)")
    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable Keras model ({type(e).__name__}: "
                         f"{short_error(e)})") from None
    if not any_keras_model and not isinstance(model, models.LandmarkDetector):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not an fld LandmarkDetector")
    return model


def _model_from_tflite(path: str, preset: str | None):
    """The float ``LandmarkDetector`` held (on its int8 grid) in an fld ``.tflite``."""
    import fld.models as models
    from fld.runtime.metadata import read_model_info
    from fld.export.tflite_weights import load_tflite_weights

    if not preset:
        raise ValueError(f"{path}: a .tflite holds weights without the network's "
                         f"architecture: also give the preset it was trained as (the "
                         f"bundled default: mobilevitv2_100_gn)")
    with open(path, "rb") as f:
        info = read_model_info(f.read(), path)          # MetadataError (a ValueError)
    model = models.LandmarkDetector(preset=preset, image_size=info.image_size,
                                    scheme=info.scheme)
    report = load_tflite_weights(model, path)
    # The edge-to-point transform is fixed (its values are in the layer's config).
    missing = [name for name in report["skipped"] if name != "head_edge_to_point"]
    if missing:
        raise ValueError(f"{path}: {len(missing)} layer(s) of {preset} at {info.image_size} "
                         f"px, scheme {info.scheme.name}, are not in the file (another "
                         f"preset, or a file exported with --points?): {missing[:5]}")
    return model


class KerasEngine:
    """``run(images) -> fused heatmaps`` for a Keras ``LandmarkDetector``."""

    def __init__(self, model):
        self.keras_model = model

    def run(self, images: np.ndarray) -> np.ndarray:
        outputs = self.keras_model(np.asarray(images, np.float32), training=False)
        return np.asarray(outputs["fused"])


def model_info_for(model, quantization: str = "none", crop_scale: float | None = None,
                   decode_method: str = VALIDATION_DECODE,
                   decode_radius: int = DEFAULT_DECODE_RADIUS):
    """The runtime's ``ModelInfo`` of a Keras ``LandmarkDetector``: as it runs here (float,
    ``quantization="none"``) or as ``fld.export`` writes it into a ``.tflite``.

    Input size and stride come from the model's input and ``fused`` output shapes; the
    Haar box mapping is the one measured for the model's scheme
    (``fld.runtime.detector.HAAR_BOX_MAPPINGS``), if any. ``decode_method`` defaults to
    the decode of the training's validation NME.
    """
    from fld.runtime.detector import HAAR_BOX_MAPPINGS
    from fld.runtime.metadata import make_model_info

    image_size = int(model.inputs[0].shape[1])
    output = model.output["fused"] if isinstance(model.output, dict) else model.output
    heatmap_size = int(output.shape[1])
    if not heatmap_size or image_size % heatmap_size:
        raise ValueError(f"input size {image_size} is not a multiple of the heatmap size "
                         f"{heatmap_size}")
    mapping = HAAR_BOX_MAPPINGS.get(model.scheme.name)
    return make_model_info(
        model.scheme, image_size=image_size, stride=image_size // heatmap_size,
        quantization=quantization,
        crop_scale=DEFAULT_CROP_SCALE if crop_scale is None else float(crop_scale),
        decode_method=decode_method, decode_radius=decode_radius,
        box_mapping=None if mapping is None else mapping.as_tuple())


def keras_landmarker(path: str, preset: str | None = None, image_size: int | None = None,
                     scheme: str | None = None, detector=None,
                     decode_method: str = VALIDATION_DECODE, flip_test: bool = False):
    """A ``fld.runtime.Landmarker`` running a Keras model file."""
    from fld.runtime.landmarker import Landmarker

    model = load_keras_model(path, preset, image_size, scheme)
    info = model_info_for(model, decode_method=decode_method)
    return Landmarker.from_engine(KerasEngine(model), info, detector=detector,
                                  flip_test=flip_test)
