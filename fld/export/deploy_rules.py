"""The deployment audit of a converted model: only tflite-runtime 2.14 builtins, no rejected
kernel, no transpose above 5-D and, for int8 models, no op touching a float32 tensor (no
float islands, no QUANTIZE / DEQUANTIZE round trips on float data).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from fld.export.flatbuffer import builtin_names, tensor_type_names, unpack_model

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
    schema, model = unpack_model(tflite_bytes, "audit input")
    op_names, type_names = builtin_names(schema), tensor_type_names(schema)
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
