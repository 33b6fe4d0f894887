"""The int8 output head: the ``fused`` maps clipped, rescaled and ordered for int8, and the
two-range output.

The ``fused`` maps' peaks spread over a decade (0.05 typical, 0.5 for a few confident
maps), and an int8 output has one scale for all of them, set by the largest: the typical
map then gets ~20 levels and the low tails the soft-argmax decode uses round to zero.
``capped_fused_model`` clips the maps at a cap (``map_peak_percentile`` of the
calibration crops' peaks) so that 256 levels cover the typical peak, and orders the AAM
product so that no small intermediate is quantized on its own. A clipped peak is a flat
top around the same center, so the soft-argmax barely moves.

Two-range output (``fine_ratio`` r): a second output with the maps times r, clipped at
the same top: below ``cap / r`` its step is r times finer. The metadata names that tensor
(``ModelInfo.fine_output``, ``fine_output_name``) and the runtime merges the two
(``fld.runtime.TFLiteModel.run``). Measurements:
``docs/experiments/2026-12-03-build-measurements.md``, "int8 output".
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

FINE_OUTPUT = "fused_fine"   # capped_fused_model's second output (two-range int8)
DEFAULT_FINE_RATIO = 16.0    # its gain over the main output (simulated best of 4 / 16 / 64)
DEFAULT_CAP_PERCENTILE = 90.0   # the output clip: this percentile of calibration peaks

RELU6_TOP = 6.0


def capped_fused_model(model, cap: float, fine_ratio: Optional[float] = None):
    """The model's ``fused`` output rebuilt for int8: ``relu6(points * g * (E2H(edges) *
    heatmaps))`` with ``g = 6 / cap``, a functional model sharing ``model``'s layers.

    ``fine_ratio`` r adds a second output ``fused_fine``, the same product with gain
    ``r * g`` (its own depthwise gain and MUL): it clips wherever the map exceeds
    ``cap / r``, and below that its int8 step is r times finer. The runtime merges the
    two (``TFLiteModel.run``). Why: with one output, the 256 levels over [0, cap] round
    the maps' low tails, which the soft-argmax decode sums; simulated on a trained
    student's float maps (validation NME io): float 4.30%, one int8 output 4.41%, two
    with r = 16 4.29% (docs/experiments/).
    With ``fine_ratio`` the model returns a dict ``{"fused", "fused_fine"}``.

    The same product as the AAM's ``(E2H(edges) * points) * heatmaps``, clipped at
    ``cap`` and rescaled by a constant (every decode is scale-free), ordered and fused
    for int8, which quantizes every intermediate tensor:
    - the mask ``E2H(edges) * points`` on its own (values 1e-4 .. 0.3) lost the low values
      that make the maps' tails;
    - the RELU6 is fused into the last MUL, so that MUL's own output gets the range
      [0, cap]; a separate clip op only requantizes an already coarse tensor;
    - ``g`` is a 1x1 depthwise convolution with constant weights, not a MUL by a scalar:
      the converter gives a scalar MUL's input the output's scale, which left that
      input with a handful of int8 levels.
    Needs a ``LandmarkDetector`` whose heads run at the output resolution (the ``fpn``
    and ``transposed`` decoders), or ``fld.models.select_points`` of one.
    """
    import keras

    if not cap > 0:
        raise ValueError(f"convert: output_cap must be > 0, got {cap}")
    try:
        fused, points, heatmaps = (model.get_layer(n).output for n in ("fused", "points", "heatmaps"))
    except ValueError:
        raise ValueError("convert: output_cap needs a fld LandmarkDetector (layers 'fused', "
                         "'points', 'heatmaps')") from None
    final = model.output["fused"] if isinstance(model.output, dict) else model.output
    if tuple(fused.shape[1:3]) != tuple(final.shape[1:3]):
        raise ValueError("convert: output_cap needs heads at the output resolution (the "
                         "'fpn' or 'transposed' decoder)")
    weighted = heatmaps
    if any(layer.name == "head_edge_to_point" for layer in model.layers):
        weighted = model.get_layer("head_edge_to_point").output * heatmaps
    if fine_ratio is not None and not fine_ratio > 1:
        raise ValueError(f"convert: fine_ratio must be > 1, got {fine_ratio}")
    indices = getattr(model, "point_indices", None)        # fld.models.select_points

    def clipped_product(gain_value):
        gain = np.full((1, 1, int(weighted.shape[-1]), 1), gain_value, np.float32)
        output = keras.ops.relu6(points * keras.ops.depthwise_conv(
            weighted, gain, strides=1, padding="valid"))
        return output if indices is None else keras.ops.take(output, indices, axis=-1)

    output = clipped_product(RELU6_TOP / float(cap))
    if fine_ratio is None:
        return keras.Model(model.inputs, output)
    fine = clipped_product(RELU6_TOP * float(fine_ratio) / float(cap))
    return keras.Model(model.inputs, {"fused": output, FINE_OUTPUT: fine})



def map_peak_percentile(model, images: Iterable[np.ndarray],
                        percentile: float = DEFAULT_CAP_PERCENTILE,
                        output: str = "fused") -> float:
    """The ``percentile`` of the per-map peaks (max over H, W of each channel) of a
    model's ``output`` on ``images`` ((1, S, S, 3) float32 crops): the ``output_cap``
    for ``convert``."""
    if not 0 < percentile <= 100:
        raise ValueError(f"map_peak_percentile: percentile must be in (0, 100], got {percentile}")
    peaks = []
    for image in images:
        maps = model(np.asarray(image, np.float32), training=False)
        maps = maps[output] if isinstance(maps, dict) else maps
        peaks.append(np.asarray(maps).max(axis=(1, 2)).ravel())
    if not peaks:
        raise ValueError("map_peak_percentile: no images")
    cap = float(np.percentile(np.concatenate(peaks), percentile))
    if not cap > 0:
        raise ValueError(f"map_peak_percentile: the model's {output!r} maps are all zero on "
                         f"the calibration images (peak percentile {cap})")
    return cap



def fine_output_name(tflite_bytes: bytes) -> str:
    """The tensor name of a two-range model's ``fused_fine`` output (``capped_fused_model``).

    The converter orders a dict's outputs by key (``fused``, ``fused_fine``); checked
    here on two probe inputs (mid-gray, fixed noise): the fine maps, r times the same
    product clipped at the same top, are everywhere >= the main ones, so their sum is
    the larger unless both are all zero."""
    from fld.runtime.interpreter import dequantize, interpreter_class

    _, Interpreter = interpreter_class("ai_edge_litert")

    interpreter = Interpreter(model_content=tflite_bytes)
    interpreter.allocate_tensors()
    inp, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()
    if len(outputs) != 2:
        raise ValueError(f"export: a two-range model has 2 outputs, this one {len(outputs)}")
    noise = np.random.default_rng(0).integers(-128, 128, inp["shape"])
    sums = np.zeros(2)
    for probe in (np.zeros(inp["shape"]), noise):
        interpreter.set_tensor(inp["index"], probe.astype(inp["dtype"]))
        interpreter.invoke()
        for i, out in enumerate(outputs):
            sums[i] += dequantize(interpreter.get_tensor(out["index"]),
                                  *out["quantization"]).sum(dtype=np.float64)
    return outputs[0 if sums[0] > sums[1] else 1]["name"]
