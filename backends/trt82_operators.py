"""TensorRT 8.2's ONNX parser: which operators it imports, for which types, with which limits.

Source: onnx/onnx-tensorrt `docs/operators.md`, the operator support matrix
of the release branches, and `docs/Changelog.md`:

- "TensorRT 8.2 supports operators up to Opset 13" (release/8.2-GA docs/operators.md).
- The rows below are the release/8.4-GA matrix (commit 009d6541b4ee1fa3f3150cd7cbabe7e56aa54840,
  "TensorRT 8.4 supports operators up to Opset 13", same columns as 8.2-GA) with
  the two importers the Changelog lists as new in 8.4 GA (`Shrink`, `Xor`)
  marked unsupported. Cross-checked against the release/8.0 matrix plus the
  8.2 EA Changelog entry (added: Einsum, IsNaN, GatherND, Scatter,
  ScatterElements, ScatterND, Sign, Round; Pad gained N-D padding and the
  `edge` and `reflect` modes).
- Types: "TensorRT supports the following ONNX data types: DOUBLE, FLOAT32,
  FLOAT16, INT8, and BOOL. There is limited support for INT32, INT64, and
  DOUBLE types. TensorRT will attempt to cast down INT64 to INT32 and DOUBLE
  down to FLOAT, clamping values to +-INT_MAX or +-FLT_MAX if necessary."
- FP16 initializers are imported natively only from 8.4 GA (Changelog:
  "Added native FP16 support for importing and manipulating FP16 initializers").

The restriction column is kept as the source words it; `edgec.backends.tensorrt`
turns each one into a check.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_OPSET = 13
# ONNX 1.8 (opset 13) is IR 7; the 8.2 parser only warns on newer IR versions.
MAX_IR_VERSION = 7
SOURCE = "onnx-tensorrt release/8.2-GA docs/operators.md"


@dataclass(frozen=True)
class OpSupport:
    supported: bool
    types: frozenset[str] = frozenset()  # "FP32", "FP16", "INT32", "INT8", "BOOL"
    restriction: str = ""


def _y(types: str = "", restriction: str = "") -> OpSupport:
    return OpSupport(True, frozenset(t.strip() for t in types.split(",") if t.strip()), restriction)


_N = OpSupport(False)

F = "FP32, FP16"
FI = "FP32, FP16, INT32"
F8 = "FP32, FP16, INT8"
ALL = "FP32, FP16, INT32, INT8, BOOL"

OPERATORS: dict[str, OpSupport] = {
    "Abs": _y(FI),
    "Acos": _y(F),
    "Acosh": _y(F),
    "Add": _y(FI),
    "And": _y("BOOL"),
    "ArgMax": _y(F),
    "ArgMin": _y(F),
    "Asin": _y(F),
    "Asinh": _y(F),
    "Atan": _y(F),
    "Atanh": _y(F),
    "AveragePool": _y("FP32, FP16, INT8, INT32", "2D or 3D Pooling only"),
    "BatchNormalization": _y(F),
    "BitShift": _N,
    "Cast": _y(ALL),
    "Ceil": _y(F),
    "Celu": _y(F),
    "Clip": _y(F8),
    "Compress": _N,
    "Concat": _y(ALL),
    "ConcatFromSequence": _N,
    "Constant": _y(ALL),
    "ConstantOfShape": _y("FP32"),
    "Conv": _y(F8, "2D or 3D convolutions only. Weights `W` must be an initializer"),
    "ConvInteger": _N,
    "ConvTranspose": _y(F8, "2D or 3D deconvolutions only. Weights `W` must be an initializer"),
    "Cos": _y(F),
    "Cosh": _y(F),
    "CumSum": _y(F, "`axis` must be an initializer"),
    "DepthToSpace": _y(FI),
    "DequantizeLinear": _y("INT8", "`x_zero_point` must be zero"),
    "Det": _N,
    "Div": _y(FI),
    "Dropout": _y(F),
    "DynamicQuantizeLinear": _N,
    "Einsum": _y(F, "Ellipsis and diagonal operations are not supported. Broadcasting between inputs is not supported"),
    "Elu": _y(F8),
    "Equal": _y(FI),
    "Erf": _y(F),
    "Exp": _y(F),
    "Expand": _y("FP32, FP16, INT32, BOOL"),
    "EyeLike": _y("FP32, FP16, INT32, BOOL"),
    "Flatten": _y("FP32, FP16, INT32, BOOL"),
    "Floor": _y(F),
    "Gather": _y("FP32, FP16, INT8, INT32"),
    "GatherElements": _y("FP32, FP16, INT8, INT32"),
    "GatherND": _y("FP32, FP16, INT8, INT32"),
    "Gemm": _y(F8),
    "GlobalAveragePool": _y(F8),
    "GlobalLpPool": _y(F8),
    "GlobalMaxPool": _y(F8),
    "Greater": _y(FI),
    "GreaterOrEqual": _y(FI),
    "GRU": _y(F, "For bidirectional GRUs, activation functions must be the same for both the forward and reverse pass"),
    "HardSigmoid": _y(F8),
    "Hardmax": _N,
    "Identity": _y(ALL),
    "If": _y("FP32, FP16, INT32, BOOL", "Output tensors of the two conditional branches must have broadcastable "
             "shapes, and must have different names"),
    "ImageScaler": _y(F),
    "InstanceNormalization": _y(F, "Scales `scale` and biases `B` must be initializers. Input rank must be >=3 & <=5"),
    "IsInf": _N,
    "IsNaN": _y(FI),
    "LeakyRelu": _y(F8),
    "Less": _y(FI),
    "LessOrEqual": _y(FI),
    "Log": _y(F),
    "LogSoftmax": _y(F),
    "Loop": _y("FP32, FP16, INT32, BOOL"),
    "LRN": _y(F),
    "LSTM": _y(F, "For bidirectional LSTMs, activation functions must be the same for both the forward and reverse "
               "pass"),
    "LpNormalization": _y(F),
    "LpPool": _y(F8),
    "MatMul": _y(F),
    "MatMulInteger": _N,
    "Max": _y(FI),
    "MaxPool": _y(F8, "2D or 3D pooling only. `Indices` output tensor unsupported"),
    "MaxRoiPool": _N,
    "MaxUnpool": _N,
    "Mean": _y(FI),
    "MeanVarianceNormalization": _N,
    "Min": _y(FI),
    "Mod": _N,
    "Mul": _y(FI),
    "Multinomial": _N,
    "Neg": _y(FI),
    "NegativeLogLikelihoodLoss": _N,
    # "Y [EXPERIMENTAL]": a plugin whose output is padded to [max_output_boxes_per_class, 3]
    # instead of ONNX's [num_selected, 3]; edgec treats it as unsupported.
    "NonMaxSuppression": _y(F, "[EXPERIMENTAL] Inputs `max_output_boxes_per_class`, `iou_threshold`, and "
                            "`score_threshold` must be initializers. Output has fixed shape and is padded to "
                            "[`max_output_boxes_per_class`, 3]."),
    "NonZero": _N,
    "Not": _y("BOOL"),
    "OneHot": _N,
    "Or": _y("BOOL"),
    "Pad": _y("FP32, FP16, INT8, INT32"),
    "ParametricSoftplus": _y(F8),
    "Pow": _y(F),
    "PRelu": _y(F8),
    "QLinearConv": _N,
    "QLinearMatMul": _N,
    "QuantizeLinear": _y(F, "`y_zero_point` must be 0"),
    "RandomNormal": _N,
    "RandomNormalLike": _N,
    "RandomUniform": _y(F, "`seed` value is ignored by TensorRT"),
    "RandomUniformLike": _y(F, "`seed` value is ignored by TensorRT"),
    "Range": _y(FI, "Floating point inputs are only supported if `start`, `limit`, and `delta` inputs are "
                "initializers"),
    "Reciprocal": _N,
    "ReduceL1": _y(F),
    "ReduceL2": _y(F),
    "ReduceLogSum": _y(F),
    "ReduceLogSumExp": _y(F),
    "ReduceMax": _y(F),
    "ReduceMean": _y(F),
    "ReduceMin": _y(F),
    "ReduceProd": _y(F),
    "ReduceSum": _y(F),
    "ReduceSumSquare": _y(F),
    "Relu": _y(F8),
    "Reshape": _y(ALL),
    "Resize": _y(F, "Supported resize transformation modes: `half_pixel`, `pytorch_half_pixel`, "
                 "`tf_half_pixel_for_nn`, `asymmetric`, and `align_corners`. Supported resize modes: `nearest`, "
                 "`linear`. Supported nearest modes: `floor`, `ceil`, `round_prefer_floor`, `round_prefer_ceil`"),
    "ReverseSequence": _y(F, "Dynamic input shapes are unsupported"),
    "RNN": _y(F, "For bidirectional RNNs, activation functions must be the same for both the forward and reverse "
              "pass"),
    "RoiAlign": _N,
    "Round": _y(F8),
    "ScaledTanh": _y(F8),
    "Scan": _y(F),
    "Scatter": _y("FP32, FP16, INT8, INT32"),
    "ScatterElements": _y("FP32, FP16, INT8, INT32"),
    "ScatterND": _y("FP32, FP16, INT8, INT32"),
    "Selu": _y(F8),
    "SequenceAt": _N,
    "SequenceConstruct": _N,
    "SequenceEmpty": _N,
    "SequenceErase": _N,
    "SequenceInsert": _N,
    "SequenceLength": _N,
    "Shape": _y(ALL),
    "Shrink": _N,  # added in 8.4 GA
    "Sigmoid": _y(F8),
    "Sign": _y("FP32, FP16, INT8, INT32"),
    "Sin": _y(F),
    "Sinh": _y(F),
    "Size": _y(ALL),
    "Slice": _y(ALL, "`axes` must be an initializer"),
    "Softmax": _y(F),
    "SoftmaxCrossEntropyLoss": _N,
    "Softplus": _y(F8),
    "Softsign": _y(F8),
    "SpaceToDepth": _y(FI),
    "Split": _y("FP32, FP16, INT32, BOOL"),
    "SplitToSequence": _N,
    "Sqrt": _y(F),
    "Squeeze": _y(ALL, "`axes` must be an initializer"),
    "StringNormalizer": _N,
    "Sub": _y(FI),
    "Sum": _y(FI),
    "Tan": _y(F),
    "Tanh": _y(F8),
    "TfIdfVectorizer": _N,
    "ThresholdedRelu": _y(F8),
    "Tile": _y("FP32, FP16, INT32, BOOL"),
    "TopK": _y(F, "`K` input must be an initializer"),
    "Transpose": _y(ALL),
    "Unique": _N,
    "Unsqueeze": _y(ALL, "`axes` must be a constant tensor"),
    "Upsample": _y(F),
    "Where": _y("FP32, FP16, INT32, BOOL"),
    "Xor": _N,  # added in 8.4 GA
}

# Resize attribute values the 8.2 importer takes (restriction column above; ONNX defaults in brackets).
RESIZE_COORDINATE_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                     "align_corners"})
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
# Pad: constant since 7.x; `edge` and `reflect` since 8.2 EA (Changelog).
PAD_MODES = frozenset({"constant", "edge", "reflect"})


# -- the restriction column as checks --------------------------------------------------------
#
# Each check takes a graph-surgeon node (shapes and dtypes known) and returns
# None or the reason the 8.2 parser refuses it. Besides the column's words,
# "non-constant shapes" are refused: engines here are built for static shapes,
# so every shape-like input (Reshape/Expand/Tile/Slice/Pad/Resize/...) must be
# a constant, as it is once shape inference has folded constants.


def _present(node, i: int) -> bool:
    return len(node.inputs) > i and bool(node.inputs[i].name)


def const_value(tensor):
    """The numpy value of a constant input (an initializer or a Constant node's output), else None."""
    import onnx_graphsurgeon as gs

    from edgec.weights import is_placeholder

    if isinstance(tensor, gs.Constant):
        return None if is_placeholder(tensor) else tensor.values  # a large weight of a sub-model being written
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return value.values
    return None


def _is_const(tensor) -> bool:
    """Whether an input is a constant (as `const_value` finds one), without reading its values."""
    import onnx_graphsurgeon as gs

    return isinstance(tensor, gs.Constant) or (len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant"
                                               and isinstance(tensor.inputs[0].attrs.get("value"), gs.Constant))


def _need_const(node, indices, what: str) -> str | None:
    for i in indices:
        if _present(node, i) and not _is_const(node.inputs[i]):
            return f"input {i} ('{node.inputs[i].name}') of {node.op} must be a constant: {what}"
    return None


def _rank(node, i: int = 0) -> int | None:
    shape = node.inputs[i].shape if _present(node, i) else None
    return None if shape is None else len(shape)


def _spatial(node, dims: str) -> str | None:
    rank = _rank(node)
    if rank is not None and rank not in (4, 5):
        return f"{node.op} on a rank-{rank} input: {dims}"
    return None


def _conv(node):
    return _spatial(node, "2D or 3D only") or _need_const(node, [1], "weights `W` must be an initializer")


def _pool(node):
    reason = _spatial(node, "2D or 3D pooling only")
    if reason is None and node.op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1].name:
        return "MaxPool's `Indices` output is unsupported"
    return reason


def _resize(node):
    attrs = node.attrs
    mode = attrs.get("mode", "nearest")
    coord = attrs.get("coordinate_transformation_mode", "half_pixel")
    nearest = attrs.get("nearest_mode", "round_prefer_floor")
    if mode not in RESIZE_MODES:
        return f"Resize mode '{mode}': TensorRT 8.2 takes {', '.join(sorted(RESIZE_MODES))}"
    if coord not in RESIZE_COORDINATE_MODES:
        return f"Resize coordinate_transformation_mode '{coord}' is unsupported"
    if mode == "nearest" and nearest not in RESIZE_NEAREST_MODES:
        return f"Resize nearest_mode '{nearest}' is unsupported"
    for attr, ok in (("antialias", 0), ("exclude_outside", 0), ("keep_aspect_ratio_policy", "stretch")):
        if attrs.get(attr, ok) != ok:
            return f"Resize {attr}={attrs[attr]!r} is unsupported"
    if "axes" in attrs:
        return "Resize `axes` (opset 18) is unsupported"
    return _need_const(node, [1, 2, 3], "output shape must be static")


def _upsample(node):
    mode = node.attrs.get("mode", "nearest")
    if mode not in RESIZE_MODES:
        return f"Upsample mode '{mode}' is unsupported"
    return _need_const(node, [1], "scales must be static")


def _pad(node):
    mode = node.attrs.get("mode", "constant")
    if mode not in PAD_MODES:
        return f"Pad mode '{mode}': TensorRT 8.2 takes {', '.join(sorted(PAD_MODES))}"
    if _present(node, 3):
        return "Pad `axes` (opset 18) is unsupported"
    return _need_const(node, [1, 2], "pads must be static")


def _instance_norm(node):
    rank = _rank(node)
    if rank is not None and not 3 <= rank <= 5:
        return f"InstanceNormalization on a rank-{rank} input: rank must be >=3 & <=5"
    return _need_const(node, [1, 2], "scales `scale` and biases `B` must be initializers")


def _einsum(node):
    equation = str(node.attrs.get("equation", "")).replace(" ", "")
    if "..." in equation:
        return "Einsum with an ellipsis is unsupported"
    terms = equation.split("->")[0].split(",")
    if any(len(set(term)) != len(term) for term in terms):
        return "Einsum diagonal operations (a repeated index) are unsupported"
    sizes: dict[str, set[int]] = {}
    for term, t in zip(terms, node.inputs):
        if t.shape is not None and len(t.shape) == len(term):
            for letter, dim in zip(term, t.shape):
                sizes.setdefault(letter, set()).add(dim)
    if any(len(s) > 1 for s in sizes.values()):
        return "Einsum broadcasting between inputs is unsupported"
    return None


def _rnn(node):
    if node.attrs.get("direction", "forward") == "bidirectional":
        acts = list(node.attrs.get("activations", []))
        half = len(acts) // 2
        if acts and acts[:half] != acts[half:]:
            return f"bidirectional {node.op}: activation functions must be the same for both directions"
    return None


def _range(node):
    dtype = node.inputs[0].dtype if node.inputs else None
    if dtype is not None and str(dtype).startswith("float"):
        return _need_const(node, [0, 1, 2], "floating point start, limit and delta must be initializers")
    return None


def _arg(node):
    if node.attrs.get("select_last_index", 0):
        return f"{node.op} select_last_index=1 is unsupported"
    return None


def _dropout(node):
    if _present(node, 2):
        value = const_value(node.inputs[2])
        if value is None or bool(value):
            return "Dropout in training mode is unsupported"
    return None


def _no_int8(node):
    return f"{node.op} is INT8 quantization, which the Jetson Nano's Maxwell GPU (sm_53) does not run"


def _nms(node):
    return ("NonMaxSuppression is experimental in TensorRT 8.2 and pads its output to "
            "[max_output_boxes_per_class, 3] instead of ONNX's [num_selected, 3]")


def _if(node):
    then_g, else_g = node.attrs.get("then_branch"), node.attrs.get("else_branch")
    if then_g is not None and else_g is not None:
        same = {t.name for t in then_g.outputs} & {t.name for t in else_g.outputs}
        if same:
            return f"If branches must name their outputs differently (both write '{sorted(same)[0]}')"
    return None


RESTRICTIONS = {
    "Conv": _conv, "ConvTranspose": _conv,
    "AveragePool": _pool, "MaxPool": _pool, "LpPool": _pool,
    "Resize": _resize, "Upsample": _upsample, "Pad": _pad,
    "InstanceNormalization": _instance_norm, "Einsum": _einsum,
    "GRU": _rnn, "LSTM": _rnn, "RNN": _rnn,
    "Range": _range, "ArgMax": _arg, "ArgMin": _arg, "Dropout": _dropout,
    "QuantizeLinear": _no_int8, "DequantizeLinear": _no_int8,
    "NonMaxSuppression": _nms, "If": _if,
    "CumSum": lambda n: _need_const(n, [1], "`axis` must be an initializer"),
    "TopK": lambda n: _need_const(n, [1], "`K` input must be an initializer"),
    "Slice": lambda n: _need_const(n, [1, 2, 3, 4], "`axes` (and starts/ends/steps) must be initializers"),
    "Squeeze": lambda n: _need_const(n, [1], "`axes` must be an initializer"),
    "Unsqueeze": lambda n: _need_const(n, [1], "`axes` must be a constant tensor"),
    "Split": lambda n: _need_const(n, [1], "`split` must be an initializer"),
    "Clip": lambda n: _need_const(n, [1, 2], "`min` and `max` must be initializers"),
    "Reshape": lambda n: _need_const(n, [1], "the target shape must be static"),
    "Expand": lambda n: _need_const(n, [1], "the target shape must be static"),
    "Tile": lambda n: _need_const(n, [1], "the repeats must be static"),
    "ConstantOfShape": lambda n: _need_const(n, [0], "the shape must be static"),
}
