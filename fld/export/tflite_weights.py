"""Float Keras weights read back out of an int8 ``.tflite`` that ``fld.export`` wrote.

The shipped default model is only a ``.tflite``: training checkpoints are not kept in the
repository. To fine-tune it (more epochs, another scheme's heads, quantization work) the
int8 weights are dequantized into a Keras model of the same preset:

- every CONV_2D / DEPTHWISE_CONV_2D is found by the Keras layer name the converter keeps
  in its weight tensor's name (``.../<layer>_1/convolution``); kernel = int8 x
  per-channel scale, bias = int32 x its scale;
- the converter folded each inference-mode BatchNorm into the convolution before it
  (kernel x gamma / sigma, bias = beta - mean x gamma / sigma); the BatchNorm is given
  back as "identity plus that bias": moving mean 0, moving variance 1 - epsilon,
  gamma 1, beta = the folded bias (``recalibrate_batchnorm`` then gives it real
  statistics, so that training mode starts from the same function);
- ``SampleNormalization``'s gamma / beta are the constant operands of its ``mul_2`` /
  ``add_1`` ops;
- the attention's q+k and v convolutions of the exported split form are merged back
  into the fused ``qkv`` layer (``fld.export.split_attention``).

What is not recovered: the float weights' last bits (each kernel is on its int8 grid,
1/254 of its channel's range) and everything the export added after the heads (the
output cap and gain), which a Keras model does not hold. Numpy and ai-edge-litert only.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from fld.models.layers import leaf_layers
from fld.runtime.interpreter import dequantize

_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_NAME_PART = re.compile(r"([^/;]+)_1/")


def _layer_names(tensor_name: str) -> set:
    """Keras layer names inside a converter tensor name (``.../<layer>_1/...``)."""
    return set(_NAME_PART.findall(tensor_name))


def _dequantize(details: dict, values: np.ndarray) -> np.ndarray:
    quant = details["quantization_parameters"]
    if not len(quant["scales"]):
        return values.astype(np.float32)
    return dequantize(values, quant["scales"], quant["zero_points"],
                      quant["quantized_dimension"])


def read_tflite_tensors(path: str) -> dict:
    """Dequantized constant operands of an fld ``.tflite``, keyed by the Keras layer they
    belong to: ``{layer: {"kernel": (kh, kw, in, out) or (kh, kw, C, 1) depthwise,
    "bias": (out,)}}`` for convolutions, ``{layer: {"gamma"| "beta": (C,)}}`` for the
    per-channel MUL / ADD of ``SampleNormalization``; ``"bias_owner"`` names the
    BatchNorm a folded bias came from, if any."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r}: no such .tflite file")
    try:
        interpreter = Interpreter(
            model_path=path,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except Exception as e:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"{path!r}: not a loadable .tflite model ({e})") from e
    details = {d["index"]: d for d in interpreter.get_tensor_details()}

    def constant(index):
        try:
            return _dequantize(details[index], interpreter.get_tensor(index))
        except ValueError:  # an activation, not a constant
            return None

    found: dict = {}
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only op-level view
        name, inputs = op["op_name"], [int(i) for i in op["inputs"] if i >= 0]
        if name in _CONV_OPS and len(inputs) >= 2:
            weight_name = details[inputs[1]]["name"]
            owners = _layer_names(weight_name)
            kernel = constant(inputs[1])
            if kernel is None or not owners:
                continue
            if name == "CONV_2D":
                kernel = kernel.transpose(1, 2, 3, 0)                 # (O,kh,kw,I) -> Keras
            else:
                kernel = kernel.reshape(kernel.shape[1:] + (1,))      # (1,kh,kw,C) -> Keras
            bias = constant(inputs[2]) if len(inputs) > 2 else None
            bias_owners = _layer_names(details[inputs[2]]["name"]) if len(inputs) > 2 else set()
            for owner in owners:
                found[owner] = {"kernel": kernel, "bias": bias, "op": name,
                                "bias_owners": bias_owners - {owner}}
        elif name in ("MUL", "ADD") and len(inputs) == 2:
            out_name = details[int(op["outputs"][0])]["name"]
            match = re.search(r"([^/;]+)_1/(mul_2|add_1)$", out_name)
            values = constant(inputs[1])
            if match and values is not None and values.ndim == 1:
                key = "gamma" if match.group(2) == "mul_2" else "beta"
                found.setdefault(match.group(1), {})[key] = values
    if not found:
        raise ValueError(f"{path!r}: no convolution weights found (not an fld .tflite?)")
    from fld.export.split_attention import merge_split_kernels

    return merge_split_kernels(found)   # an exported split attention -> the fused layer


def load_tflite_weights(model, path: str) -> dict:
    """Sets ``model``'s weights from the fld int8 ``.tflite`` at ``path``.

    Layers are matched by name and copied only when the shapes agree (another scheme's
    heads stay at their initial values). A BatchNorm whose convolution carries its folded
    parameters becomes identity-plus-bias (see the module docstring); call
    ``recalibrate_batchnorm`` before training in training mode. Returns
    ``{"copied": [...], "skipped": [...], "copied_params": n, "folded_bn": [...]}``.
    """
    import keras

    tensors = read_tflite_tensors(path)
    layers = {layer.name: layer for layer in leaf_layers(model) if layer.weights}
    copied, skipped, folded, params = [], [], [], 0
    for name, layer in layers.items():
        entry = tensors.get(name)
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and entry \
                and "kernel" in entry and tuple(layer.kernel.shape) == entry["kernel"].shape:
            bias = entry["bias"] if entry["bias"] is not None else np.zeros(entry["kernel"].shape[-1], np.float32)
            bn_names = [n for n in entry["bias_owners"]
                        if isinstance(layers.get(n), keras.layers.BatchNormalization)]
            if layer.use_bias:
                layer.set_weights([entry["kernel"], bias])
            else:
                layer.set_weights([entry["kernel"]])
                for bn_name in bn_names:  # the folded BatchNorm: identity plus the bias
                    bn = layers[bn_name]
                    if tuple(bn.beta.shape) != bias.shape:
                        continue
                    eps = bn.epsilon
                    bn.set_weights([np.ones_like(bias), bias, np.zeros_like(bias),
                                    np.full_like(bias, 1.0 - eps)])
                    folded.append(bn_name)
            copied.append(name)
            params += sum(int(np.prod(w.shape)) for w in layer.weights)
        elif entry and {"gamma", "beta"} <= set(entry) and \
                [tuple(w.shape) for w in layer.weights] == [entry["gamma"].shape, entry["beta"].shape]:
            layer.set_weights([entry["gamma"], entry["beta"]])
            copied.append(name)
            params += 2 * int(entry["gamma"].size)
    for name, layer in layers.items():
        if name in copied or name in folded:
            continue
        skipped.append(name)
    if not copied:
        raise ValueError(f"{path!r}: no layer matches the model by name and shape "
                         f"(another model family?)")
    copied += folded
    return {"copied": copied, "skipped": skipped, "copied_params": params, "folded_bn": folded}


def recalibrate_batchnorm(model, layer_names: Sequence[str], images: np.ndarray) -> None:
    """Gives the named BatchNorm layers the mean / variance of their inputs on ``images``
    without changing what they compute in inference mode.

    A BatchNorm ``y = (x - m) / sqrt(v + eps) * g + b`` is rewritten with ``m, v`` = the
    measured per-channel mean / variance and ``g' = g / sqrt(v_old + eps) * sqrt(v + eps)``,
    ``b' = b + (m - m_old) * g / sqrt(v_old + eps)``: the same affine map, but now batch
    statistics (training mode) are close to the moving ones, so a fine-tune starts from
    the function the weights were exported with.

    Args:
        model: a functional Keras model (nested backbone allowed).
        layer_names: BatchNorm layers to recalibrate.
        images: (N, S, S, 3) float32 model inputs (N of a few dozen is enough).
    """
    import keras

    if not len(layer_names):
        return
    layers = {layer.name: layer for layer in leaf_layers(model)}
    targets = [layers[n] for n in layer_names]
    probe = _input_probe(model, targets)
    sums = [0.0] * len(targets)
    squares = [0.0] * len(targets)
    counts = [0] * len(targets)
    for start in range(0, len(images), 8):
        for i, x in enumerate(probe(images[start:start + 8], training=False)):
            x = keras.ops.convert_to_numpy(x).astype(np.float64)
            x = x.reshape(-1, x.shape[-1])
            sums[i] = sums[i] + x.sum(0)
            squares[i] = squares[i] + (x * x).sum(0)
            counts[i] += x.shape[0]
    for i, bn in enumerate(targets):
        gamma, beta, mean_old, var_old = bn.get_weights()
        mean = sums[i] / counts[i]
        var = np.maximum(squares[i] / counts[i] - mean * mean, 0.0)
        scale_old = gamma / np.sqrt(var_old + bn.epsilon)
        new_gamma = scale_old * np.sqrt(var + bn.epsilon)
        new_beta = beta + (mean - mean_old) * scale_old
        bn.set_weights([new_gamma.astype(np.float32), new_beta.astype(np.float32),
                        mean.astype(np.float32), var.astype(np.float32)])


def _input_probe(model, targets):
    """A function from ``model``'s input to the inputs of ``targets``, in ``targets``
    order. Targets may sit in the top model or in a nested functional model that takes
    the model's input (the backbone of a ``LandmarkDetector``; ``fld.export.layer_peaks``
    probes the same way)."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    owners = [next((m for m in nested if layer in m.layers), model) for layer in targets]
    probes = []
    for owner in {id(m): m for m in owners}.values():
        picked = [i for i, m in enumerate(owners) if m is owner]
        probes.append((picked, keras.Model(owner.inputs, [targets[i].input for i in picked])))

    def run(x, training=False):
        result = [None] * len(targets)
        for picked, probe in probes:
            outs = keras.tree.flatten(probe([x], training=training))
            for i, out in zip(picked, outs):
                result[i] = out
        return result

    return run
