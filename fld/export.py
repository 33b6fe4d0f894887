"""TFLite export: the one place that converts models (``convert``) and checks what came
out (``audit``).

Outputs: a ``LandmarkDetector`` returns a dict; ``convert`` exports only the ``fused``
heatmaps by default (the map the runtime decodes), which keeps the int8 graph small and
its single output easy to dequantise. Pass ``outputs=None`` to export every output, or a
tuple of names.

int8: full-integer quantisation with ``TFLITE_BUILTINS_INT8`` only (no SELECT_TF_OPS,
no float fallback); input and output tensors are int8 or uint8 (``input_type``), their
scale / zero point are in the interpreter's tensor details.

Output cap (int8): the ``fused`` maps' peaks spread over a decade (0.05 typical, 0.5 for
a few confident maps), and an int8 output has one scale for all of them, set by the
largest. The typical map then gets ~20 levels and its low tails, which the soft-argmax
decode uses, round to zero. ``output_cap`` clips the fused maps at a value
(``capped_fused_model``, which also orders the AAM product so that no small
intermediate is quantised on its own) so that the output's 256 levels cover the typical
peak; ``map_peak_percentile`` picks it from the calibration crops. A clipped peak is a
flat top around the same centre, so the soft-argmax barely moves. Measured on a student
(BUILD.md, "int8 output"): int8 - float NME +0.29 points before, +0.11 after.

Two-range output (``fine_ratio``): the remaining gap was mostly the output's own 256
levels rounding the tails (run 7, simulated on float maps: 4.30% float, 4.41% with one
int8 output; with every op but the input/output left in float the int8 file still
scored 4.41%). ``export_landmarker`` therefore adds a second output with the maps times
``fine_ratio`` (clipped at the same top): below ``cap / fine_ratio`` its step is that
many times finer. The metadata names that tensor (``ModelInfo.fine_output``) and the
runtime merges the two (``fld.runtime.TFLiteModel.run``).

Flip pair (``flip_pair``): the flip test (predict the crop and its mirror image, map the
mirror's points back, average) costs two invokes per face; a model converted with input
batch 2 runs both crops in one invoke, which shares the weights' memory traffic
(measured in BUILD.md, "Flip pair"). The metadata marks such a file
(``ModelInfo.flip_pair``) and ``Landmarker`` feeds it the pair.

Large int8 MEANs (``fld.tflite_mean_split``): XNNPACK's int8 MEAN on AVX2 CPUs without
VNNI accumulates in int16 and wraps around beyond ~8192 values per output (the
GroupNorm variances of layer3 / layer4); ``convert`` splits every int8 MEAN over
``MEAN_SPLIT_LIMIT`` values into two smaller ones, so ``audit`` sees the final graph.

``export_landmarker`` is the whole export of a ``LandmarkDetector``: convert, audit,
embed the runtime's ``fld`` metadata, write the ``.tflite`` atomically.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

QUANTIZE_MODES = ("int8", "float16", "dynamic", "none")
FINE_OUTPUT = "fused_fine"   # capped_fused_model's second output (two-range int8)
DEFAULT_FINE_RATIO = 16.0    # its gain over the main output (simulated best of 4 / 16 / 64)

# Builtin ops the tflite-runtime 2.14 op resolver registers, restricted to those a
# vision model can plausibly produce (names from the TFLite schema's BuiltinOperator).
# Anything else (STABLEHLO_*, ops added after 2.14, custom / flex ops) is rejected.
TFLITE_2_14_BUILTINS = frozenset("""
    ABS ADD ADD_N ARG_MAX ARG_MIN AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
    BROADCAST_ARGS BROADCAST_TO CAST CEIL CONCATENATION CONV_2D CONV_3D COS CUMSUM
    DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE DIV ELU EQUAL EXP EXPAND_DIMS FILL FLOOR
    FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GELU GREATER GREATER_EQUAL
    HARD_SWISH L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOCAL_RESPONSE_NORMALIZATION
    LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN
    MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 POW PRELU QUANTIZE RANGE
    REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RELU_N1_TO_1 RELU_0_TO_1 RESHAPE
    RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT SELECT SELECT_V2 SHAPE
    SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE
    SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM TANH TILE TOPK_V2 TRANSPOSE
    TRANSPOSE_CONV UNPACK ZEROS_LIKE
""".split())

# (op, tensor type) pairs that exist in newer runtimes but that tflite-runtime 2.14
# rejects, measured here: the int8 SQRT kernel (op version 2).
TFLITE_2_14_REJECTED = frozenset({("SQRT", "INT8")})

MAX_TRANSPOSE_DIMS = 5  # tflite-runtime <= 2.11 cannot transpose more than 5-D


class AuditError(ValueError):
    """A converted model breaks a deployment rule; the message lists every offence."""


@dataclasses.dataclass
class AuditReport:
    """What ``audit`` found.

    Attributes:
        op_counts: builtin op name -> number of uses.
        float_ops: ops reading or writing a float32 tensor, as ``"OP(i): tensor"``.
        problems: every rule broken (empty when the model passes).
    """

    op_counts: dict
    float_ops: list
    problems: list

    def __str__(self):
        ops = ", ".join(f"{name} x{n}" for name, n in sorted(self.op_counts.items()))
        verdict = "OK" if not self.problems else f"{len(self.problems)} problem(s)"
        return f"{sum(self.op_counts.values())} ops ({ops}); {verdict}"


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


RELU6_TOP = 6.0


def capped_fused_model(model, cap: float, fine_ratio: Optional[float] = None):
    """The model's ``fused`` output rebuilt for int8: ``relu6(points * g * (E2H(edges) *
    heatmaps))`` with ``g = 6 / cap``, a functional model sharing ``model``'s layers.

    ``fine_ratio`` r adds a second output ``fused_fine``, the same product with gain
    ``r * g`` (its own depthwise gain and MUL): it clips wherever the map exceeds
    ``cap / r``, and below that its int8 step is r times finer. The runtime merges the
    two (``TFLiteModel.run``). Why: with one output, the 256 levels over [0, cap] round
    the maps' low tails, which the soft-argmax decode sums; simulated on run 7's float
    maps (validation NME io): float 4.30%, one int8 output 4.41%, two with r = 16 4.29%.
    With ``fine_ratio`` the model returns a dict ``{"fused", "fused_fine"}``.

    The same product as the AAM's ``(E2H(edges) * points) * heatmaps``, clipped at
    ``cap`` and rescaled by a constant (every decode is scale-free), ordered and fused
    for int8, which quantises every intermediate tensor:
    - the mask ``E2H(edges) * points`` on its own (values 1e-4 .. 0.3) lost the low values
      that make the maps' tails;
    - the RELU6 is fused into the last MUL, so that MUL's own output gets the range
      [0, cap]; a separate clip op only requantises an already coarse tensor;
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


def map_peak_percentile(model, images: Iterable[np.ndarray], percentile: float = 90.0,
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


def layer_peaks(model, images: Sequence[np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Every layer's largest absolute output on every image, in inference mode.

    Returns ``(names, peaks)``: one name per probed tensor (``layer`` or ``layer:i`` for a
    layer with several outputs; layers of a nested backbone are probed too, in graph order)
    and ``peaks`` (images, tensors). Used to find faces that drive a layer far out of its
    usual range (``outlier_crops``, ``tools/probe_layers.py``).
    """
    import keras

    probes, names = [], []

    def tensors(layers):
        out = []
        for layer in layers:
            flat = keras.tree.flatten(layer.output)
            names.extend(layer.name if len(flat) == 1 else f"{layer.name}:{i}"
                         for i in range(len(flat)))
            out += flat
        return out

    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.layers:   # nested backbone: its layers
            probes.append(keras.Model(layer.input, tensors(layer.layers[1:])))
    probes.append(keras.Model(model.input, tensors(
        [x for x in model.layers[1:] if not isinstance(x, keras.Model)])))
    peaks = []
    for image in images:
        row = []
        for probe in probes:
            outputs = probe(np.asarray(image, np.float32), training=False)
            row += [float(np.abs(np.asarray(o)).max()) for o in keras.tree.flatten(outputs)]
        peaks.append(row)
    return names, np.asarray(peaks, np.float64).reshape(len(peaks), len(names))


def outlier_crops(model, images: Sequence[np.ndarray], factor: float = 10.0) -> list[int]:
    """Indices of calibration images on which some layer's output peaks above ``factor``
    times that layer's median peak over all the images.

    int8 calibration takes each tensor's range from its min and max over the images, so
    one image that drives a layer far out of its usual range (measured: one 300-W face
    sent the student's layer-4 attention to 494 against a typical 0.7) stretches that
    tensor's scale until the usual values get a few levels: the converted student then
    scored 12.8% instead of 7.4%. Leave such images out of calibration.

    Args:
        model: the Keras model to convert (layers of a nested backbone are probed too).
        images: (1, S, S, 3) float32 crops.
        factor: how far above the median peak counts as an outlier.
    """
    if not images:
        return []
    _, peaks = layer_peaks(model, images)                       # (images, tensors)
    typical = np.maximum(np.median(peaks, axis=0), 1e-6)
    return [int(i) for i in np.flatnonzero((peaks > factor * typical).any(axis=1))]


def convert(
    model,
    quantize: str = "int8",
    representative_images: Iterable[np.ndarray] | None = None,
    input_type: str = "int8",
    outputs: str | Sequence[str] | None = "fused",
    output_cap: Optional[float] = None,
    fine_ratio: Optional[float] = None,
    flip_pair: bool = False,
) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer.

    Args:
        model: a functional ``keras.Model`` with a fixed input shape.
        quantize: ``"int8"`` (full integer, needs ``representative_images``),
            ``"float16"`` (fp16 weights), ``"dynamic"`` (int8 weights, float
            activations) or ``"none"`` (float32).
        representative_images: float32 (1, S, S, 3) arrays in the model's input range,
            drawn like training inputs (~100 real face crops is typical).
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
        ``fld.tflite_mean_split.MEAN_SPLIT_LIMIT`` values per output is split in two
        (``split_large_means``: XNNPACK's AVX2 int8 MEAN overflows on large ones).
    """
    tflite = make_converter(model, quantize, representative_images, input_type, outputs,
                            output_cap, fine_ratio, flip_pair).convert()
    if quantize == "int8":
        from fld.tflite_mean_split import split_large_means

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
            raise ValueError("convert: int8 quantisation needs representative_images")
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


def audit(tflite_bytes: bytes, int8: bool = True, raise_on_error: bool = True) -> AuditReport:
    """Checks a TFLite model against the deployment rules.

    Rules: every op is a builtin known to tflite-runtime 2.14 (``TFLITE_2_14_BUILTINS``)
    and not a rejected kernel (``TFLITE_2_14_REJECTED``); no TRANSPOSE has more than 5
    dimensions; with ``int8=True`` no op reads or writes a float32 tensor (so no float
    islands, no QUANTIZE/DEQUANTIZE round trips on float data).

    Args:
        tflite_bytes: the flatbuffer.
        int8: enforce the no-float32 rule.
        raise_on_error: raise ``AuditError`` listing every offence (else only report).
    Returns:
        ``AuditReport``.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(tflite_bytes), 0))
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    counts, float_ops, problems = Counter(), [], []
    for g, graph in enumerate(model.subgraphs):
        tensors = graph.tensors
        for i, op in enumerate(graph.operators or []):
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = op_names.get(builtin, f"UNKNOWN_{builtin}")
            if name == "CUSTOM":
                name = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
            counts[name] += 1
            where = f"{name}(subgraph {g}, op {i})"
            used = [t for t in list(op.inputs) + list(op.outputs) if t >= 0]
            types = {type_names[tensors[t].type] for t in used}
            if name not in TFLITE_2_14_BUILTINS:
                problems.append(f"{where}: not a tflite-runtime 2.14 builtin")
            for t in types:
                if (name, t) in TFLITE_2_14_REJECTED:
                    problems.append(f"{where}: {t} kernel rejected by tflite-runtime 2.14")
            if name == "TRANSPOSE":
                rank = len(tensors[op.inputs[0]].shape)
                if rank > MAX_TRANSPOSE_DIMS:
                    problems.append(f"{where}: {rank}-D transpose (max {MAX_TRANSPOSE_DIMS})")
            if int8:
                floats = [tensors[t].name.decode() for t in used
                          if type_names[tensors[t].type] == "FLOAT32"]
                if floats:
                    float_ops.append(f"{where}: {floats[0]}")
                    problems.append(f"{where}: float32 tensor {floats[0]!r}")
    report = AuditReport(dict(counts), float_ops, problems)
    if problems and raise_on_error:
        raise AuditError("TFLite audit failed:\n  " + "\n  ".join(problems) + f"\n({report})")
    return report


@dataclasses.dataclass
class ExportResult:
    """What ``export_landmarker`` wrote.

    Attributes:
        path: the ``.tflite`` file.
        tflite_bytes: its content (with metadata).
        report: the audit's ``AuditReport``.
        info: the ``fld.runtime.metadata.ModelInfo`` embedded.
        output_cap: the value the output was clipped at (None: not clipped).
    """

    path: str
    tflite_bytes: bytes
    report: AuditReport
    info: object
    output_cap: Optional[float] = None


def fine_output_name(tflite_bytes: bytes) -> str:
    """The tensor name of a two-range model's ``fused_fine`` output (``capped_fused_model``).

    The converter orders a dict's outputs by key (``fused``, ``fused_fine``); checked
    here on two probe inputs (mid-grey, fixed noise): the fine maps, r times the same
    product clipped at the same top, are everywhere >= the main ones, so their sum is
    the larger unless both are all zero."""
    from ai_edge_litert.interpreter import Interpreter

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
            scale, zero = out["quantization"]
            sums[i] += ((interpreter.get_tensor(out["index"]).astype(np.float64) - zero)
                        * scale).sum()
    return outputs[0 if sums[0] > sums[1] else 1]["name"]


def landmarker_info(model, quantize: str, crop_scale: Optional[float] = None,
                    decode_method: str = "local_soft_argmax", decode_radius: int = 2):
    """The runtime metadata (``ModelInfo``) of a ``LandmarkDetector`` exported as ``quantize``.

    Input size and stride come from the model's input and ``fused`` output shapes; the
    Haar box mapping is the one measured for the model's scheme
    (``fld.runtime.detector.HAAR_BOX_MAPPINGS``), if any.
    """
    from fld.crop import DEFAULT_CROP_SCALE
    from fld.runtime.detector import HAAR_BOX_MAPPINGS
    from fld.runtime.metadata import make_model_info

    image_size = int(model.inputs[0].shape[1])
    output = model.output["fused"] if isinstance(model.output, dict) else model.output
    heatmap_size = int(output.shape[1])
    if not heatmap_size or image_size % heatmap_size:
        raise ValueError(f"export: input size {image_size} is not a multiple of the heatmap "
                         f"size {heatmap_size}")
    mapping = HAAR_BOX_MAPPINGS.get(model.scheme.name)
    return make_model_info(
        model.scheme, image_size=image_size, stride=image_size // heatmap_size,
        quantization=quantize,
        crop_scale=DEFAULT_CROP_SCALE if crop_scale is None else float(crop_scale),
        decode_method=decode_method, decode_radius=decode_radius,
        box_mapping=None if mapping is None else mapping.as_tuple())


def export_landmarker(
    model,
    path: str,
    quantize: str = "int8",
    calibration_images: Iterable[np.ndarray] | None = None,
    input_type: str = "int8",
    crop_scale: Optional[float] = None,
    decode_method: str = "local_soft_argmax",
    decode_radius: int = 2,
    verify: Optional[Callable[[str], None]] = None,
    output_cap_percentile: Optional[float] = 90.0,
    fine_ratio: Optional[float] = DEFAULT_FINE_RATIO,
    flip_pair: bool = False,
) -> ExportResult:
    """Converts a ``LandmarkDetector`` (``fused`` output), audits it, embeds the ``fld``
    metadata and writes ``path`` atomically.

    Args:
        model: a ``fld.models.LandmarkDetector`` (has ``scheme`` and a dict output).
        path: the ``.tflite`` to write.
        quantize: one of ``QUANTIZE_MODES``.
        calibration_images: int8 only: (1, S, S, 3) float32 crops in [-1, 1] made with
            the crop rule (``fld.calibration.face_crops``).
        input_type: int8 models' input / output type, ``"int8"`` or ``"uint8"``.
        crop_scale, decode_method, decode_radius: stored in the metadata for the runtime.
        verify: optional check run on the finished file (at a temporary path) before it
            replaces ``path``; an exception from it leaves ``path`` untouched.
        output_cap_percentile: int8 only: clip the output at this percentile of the
            ``fused`` map peaks on the calibration images (module docstring); None = no
            clip.
        fine_ratio: with the clip: add the two-range output's fine maps with this
            ratio (``capped_fused_model``); None = one output.
        flip_pair: a batch-2 model for the crop and its mirror image (``convert``);
            the metadata says so (``ModelInfo.flip_pair``) and ``Landmarker`` feeds it.
    Returns:
        ``ExportResult``. Raises ``AuditError`` (nothing written) when the model breaks
        a deployment rule: int8 models are audited with the no-float32 rule.
    """
    from fld.export_metadata import embed_metadata
    from fld.fileio import atomic_path

    info = landmarker_info(model, quantize, crop_scale, decode_method, decode_radius)
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
    info = dataclasses.replace(info, flip_pair=bool(flip_pair))
    tflite = embed_metadata(tflite, info)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(tflite)
        if verify is not None:
            verify(tmp)
    return ExportResult(str(path), tflite, report, info, cap)
