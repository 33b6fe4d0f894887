"""Keras models behind the runtime's interface, so float models are evaluated and
compared through exactly the crop / decode code the .tflite runtime uses.

    landmarker = keras_landmarker("work/student/best.keras")
    points = landmarker.predict(image_rgb, box)       # same API as fld.runtime.Landmarker
"""

from __future__ import annotations

import os

import numpy as np

from fld.crop import DEFAULT_CROP_SCALE


def load_keras_model(path: str, preset: str | None = None, image_size: int | None = None,
                     scheme: str | None = None):
    """Loads a ``LandmarkDetector`` from ``.keras``, or from ``.weights.h5`` plus the
    preset, image size and scheme it was built with. Errors name the file."""
    import keras

    import fld.models as models  # registers the custom layers for safe-mode loading

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    if path.endswith(".weights.h5"):
        if not (preset and image_size and scheme):
            raise ValueError(f"{path}: a .weights.h5 file holds weights only: also give the "
                             f"preset, image size and scheme it was trained with")
        model = models.LandmarkDetector(preset=preset, image_size=image_size, scheme=scheme)
        try:
            model.load_weights(path)
        except Exception as e:  # wrong architecture or not an HDF5 file
            raise ValueError(f"{path}: cannot load these weights into {preset} at "
                             f"{image_size}px, scheme {scheme}: {e}") from None
        return model
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: not a Keras model file (.keras or .weights.h5)")
    try:
        model = keras.saving.load_model(path)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable Keras model ({type(e).__name__}: {e})") from None
    if not isinstance(model, models.LandmarkDetector):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not an fld LandmarkDetector")
    return model


class KerasEngine:
    """``run(images) -> fused heatmaps`` for a Keras ``LandmarkDetector``."""

    def __init__(self, model):
        self.keras_model = model

    def run(self, images: np.ndarray) -> np.ndarray:
        outputs = self.keras_model(np.asarray(images, np.float32), training=False)
        return np.asarray(outputs["fused"])


def model_info_for(model, crop_scale: float = DEFAULT_CROP_SCALE,
                   decode_method: str = "soft_argmax"):
    """The runtime's ``ModelInfo`` describing a float Keras ``LandmarkDetector``.

    ``decode_method`` defaults to ``soft_argmax``, the decode of the training's
    validation NME (the fused map's mean, which STAR trains).
    """
    from fld.runtime.detector import HAAR_BOX_MAPPINGS
    from fld.runtime.metadata import make_model_info

    mapping = HAAR_BOX_MAPPINGS.get(model.scheme.name)
    mapping = None if mapping is None else mapping.as_tuple()
    return make_model_info(model.scheme, image_size=model.image_size, quantization="none",
                           crop_scale=crop_scale, decode_method=decode_method,
                          box_mapping=mapping)


def keras_landmarker(path: str, preset: str | None = None, image_size: int | None = None,
                     scheme: str | None = None, detector=None,
                     decode_method: str = "soft_argmax", flip_test: bool = False):
    """A ``fld.runtime.Landmarker`` running a Keras model file."""
    from fld.runtime.landmarker import Landmarker

    model = load_keras_model(path, preset, image_size, scheme)
    info = model_info_for(model, decode_method=decode_method)
    return Landmarker.from_engine(KerasEngine(model), info, detector=detector,
                                  flip_test=flip_test)
