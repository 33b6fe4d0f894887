"""The quantization switch: a Keras model -> TFLite bytes (float32, float16, dynamic range
or full-integer int8 with ``TFLITE_BUILTINS_INT8`` only: no SELECT_TF_OPS, no float
fallback).

``convert`` exports only the ``fused`` heatmaps by default (the map the runtime decodes);
``outputs=None`` exports every output. int8 input/output tensors are int8 or uint8
(``input_type``). ``flip_pair`` converts with input batch 2: the crop and its mirror
image in one invoke (the runtime averages the two).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from fld.export.mean_split import split_large_means
from fld.export.output_head import capped_fused_model
from fld.runtime.metadata import QUANTIZATIONS

QUANTIZE_MODES = QUANTIZATIONS

def _representative_dataset(images: Iterable[np.ndarray], flip_pair: bool = False):
    def generate():
        for image in images:
            image = np.asarray(image, np.float32)
            if image.ndim == 3:
                image = image[None]
            if flip_pair:   # the batch the model will see: the crop and its mirror
                image = np.concatenate([image, image[:, :, ::-1]])
            yield [image]
    return generate



def _select_outputs(model, outputs):
    """A keras.Model whose outputs are the requested ones of ``model``."""
    import keras

    if outputs is None or not isinstance(model.output, dict):
        return model
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    missing = [n for n in names if n not in model.output]
    if missing:
        raise ValueError(f"convert: model has no output(s) {missing}; it has {sorted(model.output)}")
    picked = [model.output[n] for n in names]
    return keras.Model(model.inputs, picked[0] if len(picked) == 1 else dict(zip(names, picked)))


def convert(
    model,
    quantize: str = "int8",
    representative_images: Iterable[np.ndarray] | None = None,
    **options,
) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer.

    Args:
        model: a functional ``keras.Model`` with a fixed input shape.
        quantize: ``"int8"`` (full integer, needs ``representative_images``),
            ``"float16"`` (fp16 weights), ``"dynamic"`` (int8 weights, float
            activations) or ``"none"`` (float32).
        representative_images: float32 (1, S, S, 3) arrays in the model's input range,
            drawn like training inputs (~100 real face crops is typical).
        options: keyword arguments of ``make_converter``:
            input_type: ``"int8"`` or ``"uint8"``: the int8 model's input/output type.
            outputs: output name(s) of a dict model to export; ``None`` exports all.
            output_cap: export ``capped_fused_model(model, output_cap)`` (the ``fused``
                maps clipped at this value, rescaled to [0, 6], ordered for int8;
                ``map_peak_percentile`` picks one); None = ``outputs`` as they are.
            fine_ratio: with ``output_cap``: also export the two-range output's fine maps
                (``capped_fused_model``); ``fine_output_name`` finds its tensor.
            flip_pair: input batch 2 instead of 1: the runtime feeds a crop and its mirror
                image and averages the two predictions (flip test in one invoke; module
                docstring). int8 calibration then sees each crop with its mirror.
    Returns:
        The ``.tflite`` bytes. int8: every MEAN over more than
        ``fld.export.mean_split.MEAN_SPLIT_LIMIT`` values per output is split in two
        (``split_large_means``: XNNPACK's AVX2 int8 MEAN overflows on large ones).
    """
    tflite = make_converter(model, quantize, representative_images, **options).convert()
    if quantize == "int8":
        tflite = split_large_means(tflite)
    return tflite


def make_converter(
    model,
    quantize: str = "int8",
    representative_images: Iterable[np.ndarray] | None = None,
    input_type: str = "int8",
    outputs: str | Sequence[str] | None = "fused",
    output_cap: Optional[float] = None,
    fine_ratio: Optional[float] = None,
    flip_pair: bool = False,
):
    """The ``tf.lite.TFLiteConverter`` that ``convert`` runs (same arguments), e.g. for
    ``tf.lite.experimental.QuantizationDebugger`` (``tools/quant_error.py``)."""
    import tensorflow as tf

    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"convert: quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if input_type not in ("int8", "uint8"):
        raise ValueError(f"convert: input_type must be 'int8' or 'uint8', got {input_type!r}")
    if fine_ratio is not None and output_cap is None:
        raise ValueError("convert: fine_ratio needs output_cap")
    if output_cap is not None:
        model = capped_fused_model(model, output_cap, fine_ratio)
    else:
        model = _select_outputs(model, outputs)
    # A concrete function with a fixed batch (1, or 2 for a flip pair) gives static shapes
    # to every reshape; the variables are frozen into constants so that calibration sees
    # plain tensors.
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    batch = 2 if flip_pair else 1
    spec = tf.TensorSpec((batch,) + tuple(model.inputs[0].shape[1:]), tf.float32,
                         name="images")
    function = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    function = convert_variables_to_constants_v2(function)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    if quantize == "int8":
        if representative_images is None:
            raise ValueError("convert: int8 quantization needs representative_images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(representative_images,
                                                                   flip_pair)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, input_type)
        converter.inference_output_type = getattr(tf, input_type)
    elif quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter
