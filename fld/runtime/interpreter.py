"""Loads a ``.tflite`` landmark model in whichever TFLite interpreter is installed.

Order tried: ``ai_edge_litert`` (LiteRT), ``tflite_runtime``, ``tensorflow.lite``; or
one forced by name (``runtime="ai_edge_litert" | "tflite_runtime" | "tf"``). Only numpy
and the interpreter are imported, never TensorFlow unless ``"tf"`` is chosen or
nothing else is installed.

``TFLiteModel.run`` takes the float input (already normalized to the model's range),
quantizes it with the input tensor's scale / zero point when the model is int8 or
uint8 (``q = round(x / scale) + zero_point``, clipped to the type's range; TFLite
quantization spec: https://ai.google.dev/edge/litert/models/quantization_spec) and
returns the output dequantized (``x = (q - zero_point) * scale``) as float32.
"""

from __future__ import annotations

import importlib
import threading
from typing import Optional

import numpy as np

from fld.fileio import check_model_file

# name -> (module, attribute) of the Interpreter class.
RUNTIMES = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "Interpreter"),
    "tflite_runtime": ("tflite_runtime.interpreter", "Interpreter"),
    "tf": ("tensorflow.lite.python.interpreter", "Interpreter"),  # = tf.lite.Interpreter
}


class ModelError(ValueError):
    """A model file that cannot be used (unreadable, wrong shapes, wrong types)."""


def interpreter_class(runtime: Optional[str] = None):
    """Returns ``(name, Interpreter class)``: the forced ``runtime`` or the first found."""
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"unknown TFLite runtime {runtime!r}: use one of {sorted(RUNTIMES)}")
    names = [runtime] if runtime else list(RUNTIMES)
    errors = []
    for name in names:
        module_name, attribute = RUNTIMES[name]
        try:
            module = importlib.import_module(module_name)
            return name, getattr(module, attribute)
        except (ImportError, AttributeError) as e:
            errors.append(f"{name}: {e}")
    raise ImportError("no TFLite interpreter available (" + "; ".join(errors) + "); install "
                      "ai-edge-litert or tflite-runtime")


def interpreter_options(runtime: str, reference_kernels: bool = False) -> dict:
    """Keyword arguments of ``runtime``'s Interpreter beyond the model and threads: none
    (the default XNNPACK delegate), or the builtin kernels without it (see TFLiteModel)."""
    if not reference_kernels:
        return {}
    module = importlib.import_module(RUNTIMES[runtime][0])
    return {"experimental_op_resolver_type":
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


# CPU features that decide which int8 kernels XNNPACK runs (x86 and Arm names as Linux
# reports them in /proc/cpuinfo).
_KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp",
                 "i8mm")


def describe_cpu(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """'model name [flags that pick XNNPACK's int8 kernels]', e.g. to print beside
    latency or accuracy figures. The name is x86's ``model name``, else Arm's ``Hardware``,
    else the board's ``Model`` (a Raspberry Pi's kernel lists no CPU name, only e.g.
    ``Model : Raspberry Pi 5 Model B Rev 1.0``); the platform's machine name where /proc
    is absent."""
    import platform

    names, cpu_flags = {}, set()
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "model") and value.strip():
                    names.setdefault(key, value.strip())
                elif key in ("flags", "features"):
                    cpu_flags.update(value.split())
    except OSError:
        pass
    board = names.get("model", "")
    model = (names.get("model name") or names.get("hardware")
             or ("" if board.isdigit() else board))   # x86's 'model' is a number
    found = [name for name in _KERNEL_FLAGS if name in cpu_flags]
    return f"{model or platform.machine() or 'unknown CPU'} [{' '.join(found) or 'no flags read'}]"


def _quantization(detail: dict) -> tuple[float, int]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales) == 1:
        scale, zero_point = float(scales[0]), int(params["zero_points"][0])
    return float(scale), int(zero_point)


def dequantize(raw: np.ndarray, scale, zero_point, axis: int = 0) -> np.ndarray:
    """Quantized values -> float32 ``(raw - zero_point) * scale``: the one dequantization
    (per tensor, or per channel along ``axis`` when ``scale`` holds several values)."""
    raw = np.asarray(raw)
    scale = np.asarray(scale, np.float32)
    zero_point = np.asarray(zero_point, np.float32)
    if scale.size > 1:
        shape = [1] * raw.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return (raw.astype(np.float32) - zero_point) * scale


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Float values -> the integer ``dtype`` grid ``round(v / scale) + zero_point``, clipped
    to the type's range: the inverse of ``dequantize`` (per tensor)."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(values, np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(raw: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    return dequantize(raw, *quantization)


class TFLiteModel:
    """One loaded TFLite model with a single image input and a single output.

    Args:
        path: the ``.tflite`` file (``model_bytes`` may be given instead, ``path`` then
            only names it in messages).
        num_threads: CPU threads for the interpreter.
        runtime: force an interpreter by name (see ``RUNTIMES``); None = first found.
        reference_kernels: run TFLite's builtin kernels without the default XNNPACK
            delegate (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``; not the
            ``BUILTIN_REF`` resolver, which cannot load these models). XNNPACK's int8
            kernels are chosen by CPU instruction set, so their results differ from one
            CPU to another; the builtin kernels give the same landmarks on the CPUs
            measured (slower). For diagnosing accuracy, not for deployment.
    Thread safety: one instance may be shared by threads. ``run`` and ``invoke_raw`` hold
    a lock from setting the input to reading the outputs, so calls are serialized (one
    interpreter runs one invoke at a time); for parallel throughput give each thread its
    own instance.
    Attributes:
        runtime: the interpreter's name; input_shape / output_shape: tensor shapes;
        input_dtype / output_dtype: numpy types; model_bytes: the file's bytes.
    """

    def __init__(self, path: str, num_threads: int = 1, runtime: Optional[str] = None,
                 model_bytes: Optional[bytes] = None, reference_kernels: bool = False):
        self.path = str(path)
        if model_bytes is None:
            try:
                check_model_file(self.path, "tflite")
            except ValueError as e:
                raise ModelError(str(e)) from None
            with open(self.path, "rb") as f:
                model_bytes = f.read()
        self.model_bytes = model_bytes
        self.runtime, interpreter_cls = interpreter_class(runtime)
        self.reference_kernels = bool(reference_kernels)
        self._lock = threading.RLock()   # set-input / invoke / read-outputs as one step
        options = interpreter_options(self.runtime, self.reference_kernels)
        try:
            self.interpreter = interpreter_cls(model_content=self.model_bytes,
                                               num_threads=int(num_threads), **options)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: cannot load in {self.runtime} ({e})") from None
        inputs = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(self._outputs) not in (1, 2):
            raise ModelError(f"{self.path}: expected one input and one output tensor (or two "
                             f"for a two-range int8 output), got {len(inputs)} and "
                             f"{len(self._outputs)}")
        self._input, self._output = inputs[0], self._outputs[0]
        self._fine, self._fine_quantization, self.fine_ratio = None, None, None
        self.input_shape = tuple(int(v) for v in self._input["shape"])
        self.output_shape = tuple(int(v) for v in self._output["shape"])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.input_quantization = _quantization(self._input)
        self.output_quantization = _quantization(self._output)
        for what, dtype, (scale, _) in (("input", self.input_dtype, self.input_quantization),
                                        ("output", self.output_dtype, self.output_quantization)):
            if dtype.kind in "iu" and scale <= 0:
                raise ModelError(f"{self.path}: {what} tensor is {dtype} without quantization "
                                 f"parameters")
            if dtype.kind not in "iuf":
                raise ModelError(f"{self.path}: unsupported {what} tensor type {dtype}")

    def set_fine_output(self, fine_output: Optional[tuple[str, float]]) -> None:
        """Declares the model's two-range output (``ModelInfo.fine_output``: the second
        tensor's name and its ratio), which ``run`` then merges; None: one output."""
        if fine_output is None:
            if len(self._outputs) != 1:
                raise ModelError(f"{self.path}: {len(self._outputs)} output tensors but its "
                                 f"metadata names no fine output")
            return
        name, ratio = fine_output
        fine = [d for d in self._outputs if d["name"] == name]
        if len(self._outputs) != 2 or len(fine) != 1:
            raise ModelError(f"{self.path}: its metadata names the fine output {name!r}, but "
                             f"the output tensors are "
                             f"{[d['name'] for d in self._outputs]}")
        self._fine, self._fine_quantization = fine[0], _quantization(fine[0])
        self._output = next(d for d in self._outputs if d["name"] != name)
        self.fine_ratio = float(ratio)
        self.output_quantization = _quantization(self._output)
        if (tuple(int(v) for v in self._fine["shape"]) != self.output_shape
                or np.dtype(self._fine["dtype"]).kind not in "iu"
                or self._fine_quantization[0] <= 0):
            raise ModelError(f"{self.path}: the fine output {name!r} must be a quantized "
                             f"integer tensor shaped like the main output {self.output_shape}")

    @property
    def kernels(self) -> str:
        """'reference' or 'xnnpack' (the interpreter's default delegate)."""
        return "reference" if self.reference_kernels else "xnnpack"

    def check_shapes(self, image_size: int, heatmap_size: int, num_points: int,
                     batch: int = 1) -> None:
        """Raises ModelError unless input is (B,S,S,3) and output (B,H,H,K), B = ``batch``
        (2 for a flip-pair model, ``ModelInfo.flip_pair``)."""
        expected_in = (batch, image_size, image_size, 3)
        expected_out = (batch, heatmap_size, heatmap_size, num_points)
        if self.input_shape != expected_in or self.output_shape != expected_out:
            raise ModelError(
                f"{self.path}: wrong model for its metadata: input {self.input_shape}, output "
                f"{self.output_shape}; expected input {expected_in} and output {expected_out}")

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        """Float input -> the input tensor's type (quantized for int8 / uint8)."""
        images = np.asarray(images, np.float32)
        if self.input_dtype.kind == "f":
            return images.astype(self.input_dtype)
        return quantize(images, *self.input_quantization, self.input_dtype)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        if self.output_dtype.kind == "f":
            return raw.astype(np.float32)
        return _dequantize(raw, self.output_quantization)

    def invoke_raw(self, tensor: np.ndarray) -> np.ndarray:
        """Runs on an input already in the tensor's type; returns the raw (main) output.
        A two-range model's fine output is then ``interpreter.get_tensor`` of its index."""
        with self._lock:
            self.interpreter.set_tensor(self._input["index"], tensor)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._output["index"])

    def run_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        """Float input (the model's input shape) -> every output tensor, dequantized to
        float32, in the interpreter's output order (e.g. a detector's boxes and scores)."""
        images = np.asarray(images, np.float32)
        if images.shape != self.input_shape:
            raise ValueError(f"{self.path}: input shape {images.shape}, model expects "
                             f"{self.input_shape}")
        with self._lock:   # every output from the same invoke
            self.interpreter.set_tensor(self._input["index"], self.quantize_input(images))
            self.interpreter.invoke()
            raws = [self.interpreter.get_tensor(d["index"]) for d in self._outputs]
        return [raw.astype(np.float32) if raw.dtype.kind == "f" else
                _dequantize(raw, _quantization(d)) for raw, d in zip(raws, self._outputs)]

    def run(self, images: np.ndarray) -> np.ndarray:
        """Float (B, S, S, 3) input in the model's range (B: the model's batch, 1, or 2
        for a flip-pair model) -> float32 output.

        A two-range output (``set_fine_output``) is merged: the fine tensor's values
        divided by the ratio wherever it is not clipped at its top, the main tensor's
        elsewhere (the peaks), so the low tails keep the fine tensor's ``ratio`` times
        smaller int8 step."""
        images = np.asarray(images, np.float32)
        if images.shape != self.input_shape:
            raise ValueError(f"{self.path}: input shape {images.shape}, model expects "
                             f"{self.input_shape}")
        if len(self._outputs) == 2 and self._fine is None:
            raise ModelError(f"{self.path}: two output tensors: call set_fine_output with "
                             f"the model's metadata (Landmarker does)")
        with self._lock:   # the fine tensor must come from the same invoke
            main_raw = self.invoke_raw(self.quantize_input(images))
            if self._fine is None:
                return self.dequantize_output(main_raw)
            raw = self.interpreter.get_tensor(self._fine["index"])
        scale, zero_point = self._fine_quantization
        merged = _dequantize(raw, (scale / self.fine_ratio, zero_point))
        clipped = raw >= np.iinfo(raw.dtype).max        # a few percent of the cells
        merged[clipped] = _dequantize(main_raw[clipped], self.output_quantization)
        return merged
