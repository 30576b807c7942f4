"""The fusion pass: each rewrite rule (structure, numerics, ONNX check), where rules must
not apply (and why), fusion groups on ResNet- and transformer-style graphs, and
properties on random DAGs."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgec.errors import EdgecError
from edgec.passes.fusion import Fusion
from edgec.passes.fusion_groups import Dag, build_groups, is_convex, is_safe
from edgec.passes.rewrites import RULES, Skip, explain
from edgec.pipeline import PassManager, VerifyInvariants

try:
    from . import fusion_graphs as fg
except ImportError:
    import fusion_graphs as fg


def reasons(model: onnx.ModelProto, rule: str) -> dict[str, str]:
    """Node name -> why ``rule`` does not apply there, on the graph as the pass receives it."""
    prog = fg.program(model)
    return {s.node: s.reason for s in explain(prog.graph, [RULES[rule]])}


def set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    for i, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[i].CopyFrom(onnx.numpy_helper.from_array(value, name))
    return model


def fuse_checked(model: onnx.ModelProto, **options):
    prog, changed = fg.fuse(model, **options)
    fg.check_all(model, prog)
    return prog, changed


# -- bn-into-conv ----------------------------------------------------------------------

BN = """
g (float[1,4,6,6] x) => (float[1,6,6,6] y)
<float[6,{cin},3,3] w, float[6] cb, float[6] s, float[6] b, float[6] m, float[6] var>
{{
  [conv] c = Conv<pads = [1, 1, 1, 1], group = {group}>(x, w{bias})
  [bn] y = BatchNormalization<epsilon = 1e-3>(c, s, b, m, var)
}}
"""


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("group", [1, 2])
def test_bn_folds_into_conv(bias, group):
    model = fg.parse(BN.format(cin=4 // group, group=group, bias=", cb" if bias else ""))
    prog, changed = fuse_checked(model)
    assert changed
    assert fg.ops(prog) == ["Conv"]
    conv = fg.node(prog, "conv")
    assert [t.name for t in conv.outputs] == ["y"]
    assert len(conv.inputs) == 3 and all(isinstance(t, gs.Constant) for t in conv.inputs[1:])
    assert fg.groups(prog) == [("single", ["conv"])]


def test_bn_fold_leaves_a_shared_weight_alone():
    model = fg.parse("""
g (float[1,4,6,6] x) => (float[1,4,6,6] y, float[1,4,6,6] z)
<float[4,4,3,3] w, float[4] s, float[4] b, float[4] m, float[4] var>
{
  [conv_a] c = Conv<pads = [1, 1, 1, 1]>(x, w)
  [bn] y = BatchNormalization(c, s, b, m, var)
  [conv_b] z = Conv<pads = [1, 1, 1, 1]>(x, w)
}
""")
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Conv", "Conv"]
    assert fg.node(prog, "conv_b").inputs[1].name == "w"
    assert fg.node(prog, "conv_a").inputs[1].name != "w"


def test_bn_not_folded_when_conv_output_has_two_readers():
    model = fg.parse(BN.format(cin=4, group=1, bias="").replace(
        "=> (float[1,6,6,6] y)", "=> (float[1,6,6,6] y, float[1,6,6,6] r)").replace(
        "}\n", "  [relu] r = Relu(c)\n}\n"))
    assert reasons(model, "bn-into-conv") == {"bn": "Conv 'conv' output feeds 2 nodes"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Conv", "BatchNormalization", "Relu"]
    assert fg.groups(prog) == [("single", ["conv"]), ("single", ["bn"]), ("single", ["relu"])]


def test_bn_not_folded_when_conv_output_is_a_graph_output():
    model = fg.parse(BN.format(cin=4, group=1, bias="").replace(
        "=> (float[1,6,6,6] y)", "=> (float[1,6,6,6] y, float[1,6,6,6] c)"))
    assert reasons(model, "bn-into-conv") == {"bn": "Conv 'conv' output 'c' is a graph output"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Conv", "BatchNormalization"]


def test_bn_not_folded_when_scale_is_not_constant():
    model = fg.parse(BN.format(cin=4, group=1, bias="").replace(
        "(float[1,4,6,6] x)", "(float[1,4,6,6] x, float[6] s)").replace("float[6] s,", ""))
    assert reasons(model, "bn-into-conv") == {"bn": "BN scale is not constant"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Conv", "BatchNormalization"]
    assert fg.groups(prog) == [("conv-bn", ["conv", "bn"])]


# -- matmul-add-into-gemm --------------------------------------------------------------

GEMM = """
g (float[{a}] a) => (float[{y}] y)
<float[8,3] w, float[{c}] bias>
{{
  [mm] m = MatMul(a, w)
  [add] y = Add({args})
}}
"""


@pytest.mark.parametrize("c", ["3", "1,3", "5,3", "5,1", ""])
@pytest.mark.parametrize("args", ["m, bias", "bias, m"])
def test_matmul_add_becomes_gemm(c, args):
    model = fg.parse(GEMM.format(a="5,8", y="5,3", c=c, args=args))
    prog, changed = fuse_checked(model)
    assert changed
    assert fg.ops(prog) == ["Gemm"]
    gemm = fg.node(prog, "mm")
    assert [t.name for t in gemm.inputs] == ["a", "w", "bias"] and gemm.outputs[0].name == "y"


def test_matmul_with_3d_input_stays():
    model = fg.parse(GEMM.format(a="2,5,8", y="2,5,3", c="3", args="m, bias"))
    assert reasons(model, "matmul-add-into-gemm") == {"add": "MatMul 'mm' input A has rank 3, Gemm needs 2-D"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["MatMul", "Add"]
    assert fg.groups(prog) == [("gemm-bias", ["mm", "add"])]


def test_matmul_with_variable_weight_stays():
    model = fg.parse(GEMM.format(a="5,8", y="5,3", c="3", args="m, bias").replace(
        "(float[5,8] a)", "(float[5,8] a, float[8,3] w)").replace("float[8,3] w,", ""))
    assert reasons(model, "matmul-add-into-gemm") == {"add": "MatMul 'mm' input B is not a constant 2-D tensor"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["MatMul", "Add"]


def test_matmul_add_with_variable_bias_stays():
    model = fg.parse(GEMM.format(a="5,8", y="5,3", c="3", args="m, bias").replace(
        "(float[5,8] a)", "(float[5,8] a, float[3] bias)").replace(", float[3] bias>", ">"))
    assert reasons(model, "matmul-add-into-gemm") == {"add": "bias of Add 'add' is not constant"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["MatMul", "Add"]
    assert fg.groups(prog) == [("single", ["mm"]), ("single", ["add"])]


def test_matmul_add_with_broadcasting_bias_stays():
    model = fg.parse(GEMM.format(a="5,8", y="2,5,3", c="2,5,3", args="m, bias"))
    assert reasons(model, "matmul-add-into-gemm") == {
        "add": "bias of Add 'add' has shape [2, 5, 3], not broadcastable to [5, 3]"}
    fuse_checked(model)


def test_matmul_output_read_twice_stays():
    model = fg.parse("""
g (float[5,8] a) => (float[5,3] y, float[5,3] z)
<float[8,3] w, float[3] bias>
{
  [mm] m = MatMul(a, w)
  [add] y = Add(m, bias)
  [relu] z = Relu(m)
}
""")
    assert reasons(model, "matmul-add-into-gemm") == {"add": "MatMul 'mm' output feeds 2 nodes"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["MatMul", "Add", "Relu"]


# -- pad-into-conv and pad-into-pool ---------------------------------------------------

PAD_CONV = """
g (float[1,3,8,8] x) => (float[1,4,H,W] y)
<float[4,3,3,3] w, int64[8] pads = {{{pads}}}, float value = {{{value}}}>
{{
  [pad] p = Pad<mode = "{mode}">(x, pads, value)
  [conv] y = Conv<{conv_attrs}>(p, w)
}}
"""


@pytest.mark.parametrize("pads, conv_attrs, merged", [
    ("0, 0, 1, 1, 0, 0, 1, 1", "kernel_shape = [3, 3]", [1, 1, 1, 1]),
    ("0, 0, 1, 2, 0, 0, 2, 0", "pads = [1, 0, 0, 1], strides = [2, 2]", [2, 2, 2, 1]),
    ("0, 0, 0, 1, 0, 0, 0, 0", "auto_pad = \"VALID\"", [0, 1, 0, 0]),
])
def test_pad_folds_into_conv(pads, conv_attrs, merged):
    model = fg.parse(PAD_CONV.format(pads=pads, value="0.0", mode="constant", conv_attrs=conv_attrs))
    prog, changed = fuse_checked(model)
    assert changed and fg.ops(prog) == ["Conv"]
    conv = fg.node(prog, "conv")
    assert conv.attrs["pads"] == merged and "auto_pad" not in conv.attrs
    assert conv.inputs[0].name == "x"


def test_pad_with_axes_folds_into_conv():
    model = fg.parse("""
g (float[1,3,8,8] x) => (float[1,4,8,8] y)
<float[4,3,3,3] w, int64[4] pads = {1, 1, 1, 1}, int64[2] axes = {-2, -1}>
{
  [pad] p = Pad(x, pads, , axes)
  [conv] y = Conv(p, w)
}
""", opset=18)
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Conv"] and fg.node(prog, "conv").attrs["pads"] == [1, 1, 1, 1]


@pytest.mark.parametrize("pads, value, mode, conv_attrs, reason", [
    ("0, 0, 1, 1, 0, 0, 1, 1", "1.0", "constant", "", "Pad 'pad' pad value is 1.0, not 0"),
    ("0, 0, 1, 1, 0, 0, 1, 1", "0.0", "reflect", "", "Pad 'pad' mode is 'reflect', not 'constant'"),
    ("0, 1, 1, 1, 0, 0, 1, 1", "0.0", "constant", "", "Pad 'pad' pads the batch or channel dim"),
    ("0, 0, 1, -1, 0, 0, 1, 1", "0.0", "constant", "", "Pad 'pad' has negative pads (a crop)"),
    ("0, 0, 1, 1, 0, 0, 1, 1", "0.0", "constant", "auto_pad = \"SAME_UPPER\"", "Conv 'conv' has auto_pad=SAME_UPPER"),
])
def test_pad_not_folded_into_conv(pads, value, mode, conv_attrs, reason):
    text = PAD_CONV.format(pads=pads, value=value, mode=mode, conv_attrs=conv_attrs or "group = 1")
    if pads.startswith("0, 1"):  # the channel dim padded: the Conv sees 4 channels
        text = text.replace("float[4,3,3,3] w", "float[4,4,3,3] w")
    model = fg.parse(text)
    assert reasons(model, "pad-into-conv") == {"conv": reason}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Pad", "Conv"]


def test_pad_read_twice_is_not_folded():
    model = fg.parse("""
g (float[1,3,8,8] x) => (float[1,4,8,8] y, float[1,3,10,10] r)
<float[4,3,3,3] w, int64[8] pads = {0, 0, 1, 1, 0, 0, 1, 1}>
{
  [pad] p = Pad(x, pads)
  [conv] y = Conv(p, w)
  [relu] r = Relu(p)
}
""")
    assert reasons(model, "pad-into-conv") == {"conv": "Pad 'pad' output feeds 2 nodes"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Pad", "Conv", "Relu"]


POOL = """
g (float[1,3,8,8] x) => (float[1,3,H,W] y)
<int64[8] pads = {{{pads}}}, float value = {{0.0}}>
{{
  [pad] p = Pad(x, pads, value)
  [pool] y = {op}<kernel_shape = [3, 3], strides = [2, 2]{attrs}>(p)
}}
"""


@pytest.mark.parametrize("op, attrs, value", [
    ("AveragePool", ", count_include_pad = 1", 0.0),
    ("AveragePool", ", count_include_pad = 1, pads = [1, 0, 0, 1]", 0.0),
    ("MaxPool", "", -np.inf),
])
def test_pad_folds_into_pool(op, attrs, value):
    model = fg.parse(POOL.format(pads="0, 0, 1, 1, 0, 0, 1, 0", op=op, attrs=attrs))
    set_initializer(model, "value", np.array(value, np.float32))
    prog, changed = fuse_checked(model)
    assert changed and fg.ops(prog) == [op]
    assert fg.node(prog, "pool").inputs[0].name == "x"


@pytest.mark.parametrize("op, attrs, value, pads, reason", [
    ("AveragePool", "", 0.0, "0, 0, 1, 1, 0, 0, 1, 1", "AveragePool 'pool' has count_include_pad=0"),
    ("MaxPool", "", 0.0, "0, 0, 1, 1, 0, 0, 1, 1", "Pad 'pad' pad value is 0.0, not -inf"),
    ("MaxPool", ", ceil_mode = 1", -np.inf, "0, 0, 1, 1, 0, 0, 1, 1", "MaxPool 'pool' has ceil_mode=1"),
    ("MaxPool", "", -np.inf, "0, 0, 3, 1, 0, 0, 1, 1",
     "MaxPool 'pool' pads [3, 1, 1, 1] would not be smaller than the kernel [3, 3]"),
])
def test_pad_not_folded_into_pool(op, attrs, value, pads, reason):
    model = set_initializer(fg.parse(POOL.format(pads=pads, op=op, attrs=attrs)), "value",
                            np.array(value, np.float32))
    assert reasons(model, "pad-into-pool") == {"pool": reason}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Pad", op]


def test_opset10_pad_attribute_folds_into_conv():
    model = fg.parse("""
g (float[1,3,8,8] x) => (float[1,4,8,8] y)
<float[4,3,3,3] w>
{
  [pad] p = Pad<pads = [0, 0, 1, 1, 0, 0, 1, 1]>(x)
  [conv] y = Conv(p, w)
}
""", opset=10)
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Conv"] and fg.node(prog, "conv").attrs["pads"] == [1, 1, 1, 1]


# -- sum-into-add ----------------------------------------------------------------------


def test_two_input_sum_becomes_add():
    model = fg.parse("""
g (float[4,1] a, float[3] b) => (float[4,3] y)
{
  [sum] y = Sum(a, b)
}
""")
    prog, changed = fuse_checked(model)
    assert changed and fg.ops(prog) == ["Add"] and fg.node(prog, "sum").outputs[0].name == "y"


def test_three_input_sum_stays():
    model = fg.parse("""
g (float[3] a, float[3] b, float[3] c) => (float[3] y)
{
  [sum] y = Sum(a, b, c)
}
""")
    assert reasons(model, "sum-into-add") == {"sum": "Sum 'sum' has 3 inputs"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Sum"]


# -- remove-identity and remove-dropout ------------------------------------------------


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_no_op_removed_mid_graph(op):
    model = fg.parse(f"""
g (float[2,3] x) => (float[2,3] y)
{{
  [first] a = Relu(x)
  [noop] b = {op}(a)
  [second] y = Sigmoid(b)
}}
""")
    prog, changed = fuse_checked(model)
    assert changed and fg.ops(prog) == ["Relu", "Sigmoid"]
    assert fg.node(prog, "second").inputs[0].name == "a"


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_no_op_writing_a_graph_output_keeps_its_name(op):
    model = fg.parse(f"""
g (float[2,3] x) => (float[2,3] y, float[2,3] z)
{{
  [first] a = Relu(x)
  [noop] y = {op}(a)
  [second] z = Sigmoid(a)
}}
""")
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Relu", "Sigmoid"]
    assert fg.node(prog, "first").outputs[0].name == "y"
    assert fg.node(prog, "second").inputs[0].name == "y"
    assert [t.name for t in prog.graph.outputs] == ["y", "z"]


def test_identity_chain_to_graph_output_collapses():
    model = fg.parse("""
g (float[2,3] x) => (float[2,3] y)
{
  [first] a = Relu(x)
  [id1] b = Identity(a)
  [id2] y = Identity(b)
}
""")
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Relu"] and fg.node(prog, "first").outputs[0].name == "y"


def test_identity_read_inside_a_subgraph_is_rewired():
    model = fg.parse("""
g (float[2,3] x, bool c) => (float[2,3] z)
{
  [first] a = Relu(x)
  [id] y = Identity(a)
  [branch] z = If(c) <then_branch = g1 () => (float[2,3] t) { [inner_neg] t = Neg(y) },
                      else_branch = g2 () => (float[2,3] e) { [inner_sig] e = Sigmoid(y) }>
}
""")
    prog, _ = fg.fuse(model)
    for seed in (1, 2, 3, 4):  # both branches
        fg.check_all(model, prog, seed)
    assert fg.ops(prog) == ["Relu", "If"]
    assert fg.groups(prog) == [("single", ["first"]), ("single", ["branch"])]


@pytest.mark.parametrize("text, reason", [
    ("""g (float[2,3] x) => (float[2,3] y) { [id] y = Identity(x) }""",
     "Identity 'id' connects graph input 'x' to graph output 'y'"),
    ("""g (float[2,3] x) => (float[2,3] a, float[2,3] y) { [first] a = Relu(x)  [id] y = Identity(a) }""",
     "Identity 'id' input 'a' and output 'y' are both graph outputs"),
    ("""g (float[2,3] x) => (float[2,3] y, float[2,3] z) <float[2,3] w>
        { [id] y = Identity(w)  [add] z = Add(x, w) }""",
     "Identity 'id' output 'y' is a graph output and its input is a constant"),
])
def test_identity_kept_where_removing_it_would_rename_outputs(text, reason):
    model = fg.parse(text)
    assert reasons(model, "remove-identity") == {"id": reason}
    prog, _ = fuse_checked(model)
    assert "Identity" in fg.ops(prog)


def test_dropout_kept_when_its_mask_is_used():
    model = fg.parse("""
g (float[2,3] x) => (float[2,3] y, bool[2,3] mask)
{
  [drop] y, mask = Dropout(x)
}
""")
    assert reasons(model, "remove-dropout") == {"drop": "Dropout 'drop' mask output is used"}
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Dropout"]


def test_dropout_with_unused_mask_removed():
    model = fg.parse("""
g (float[2,3] x) => (float[2,3] y)
{
  [first] a = Relu(x)
  [drop] b, mask = Dropout(a)
  [second] y = Neg(b)
}
""")
    prog, _ = fuse_checked(model)
    assert fg.ops(prog) == ["Relu", "Neg"]


@pytest.mark.parametrize("mode_decl, reason", [
    ("<bool mode = {1}>", "Dropout 'drop' training_mode is true"),
    ("", "Dropout 'drop' training_mode is not constant"),
])
def test_dropout_in_training_mode_stays(mode_decl, reason):
    inputs = "float[2,3] x" + ("" if mode_decl else ", bool mode")
    model = fg.parse(f"""
g ({inputs}) => (float[2,3] y)
{mode_decl}
{{
  [first] a = Relu(x)
  [drop] b = Dropout(a, , mode)
  [second] y = Neg(b)
}}
""")
    assert reasons(model, "remove-dropout") == {"drop": reason}
    prog, _ = fg.fuse(model)
    onnx.checker.check_model(prog.to_onnx(), full_check=True)
    assert fg.ops(prog) == ["Relu", "Dropout", "Neg"]


# -- whole blocks ----------------------------------------------------------------------


def test_resnet_block():
    model = fg.parse(fg.RESNET_BLOCK)
    prog, changed = fuse_checked(model)
    assert changed
    assert fg.ops(prog) == ["Conv", "Relu", "Conv", "Relu", "Conv", "Add", "Relu"]
    assert fg.node(prog, "stem_conv").attrs["pads"] == [1, 1, 1, 1]
    assert fg.node(prog, "add").inputs[1].name == "r0"
    assert fg.groups(prog) == [
        ("conv-act", ["stem_conv", "stem_relu"]),
        ("conv-act", ["conv1", "relu1"]),
        ("conv-add-act", ["conv2", "add", "relu_out"]),
    ]


def test_resnet_block_without_rewrites_groups_bn():
    model = fg.parse(fg.RESNET_BLOCK)
    prog, changed = fuse_checked(model, rules=())
    assert changed
    assert fg.groups(prog) == [
        ("single", ["stem_pad"]),
        ("conv-bn-act", ["stem_conv", "stem_bn", "stem_relu"]),
        ("single", ["skip"]),
        ("conv-bn-act", ["conv1", "bn1", "relu1"]),
        ("single", ["drop1"]),
        ("conv-bn-add-act", ["conv2", "bn2", "add", "relu_out"]),
    ]


@pytest.mark.parametrize("decomposed", [False, True])
def test_encoder_block(decomposed):
    model = fg.parse(fg.encoder_block(decomposed_layernorm=decomposed))
    prog, _ = fuse_checked(model)
    assert fg.ops(prog).count("Gemm") == 0  # 3-D activations: MatMul + Add stays
    ln1 = ("layernorm", [f"ln1_{s}" for s in ("mean", "sub", "pow", "var", "eps", "sqrt", "div", "scale", "shift")]) \
        if decomposed else ("single", ["ln1"])
    ln2 = ("layernorm", [f"ln2_{s}" for s in ("mean", "sub", "pow", "var", "eps", "sqrt", "div", "scale", "shift")]) \
        if decomposed else ("single", ["ln2"])
    assert fg.groups(prog) == [
        ("gemm-bias", ["q_mm", "q_bias"]),
        ("gemm-bias", ["k_mm", "k_bias"]),
        ("gemm-bias", ["v_mm", "v_bias"]),
        ("attention", ["k_t", "scores", "scale", "masked", "softmax", "context"]),
        ("gemm-bias", ["o_mm", "o_bias"]),
        ("single", ["res1"]),
        ln1,
        ("gemm-bias-act", ["ff1_mm", "ff1_bias", "gelu_div", "gelu_erf", "gelu_add", "gelu_mul", "gelu_half"]),
        ("gemm-bias", ["ff2_mm", "ff2_bias"]),
        ("single", ["res2"]),
        ln2,
    ]


def test_encoder_block_2d_uses_gemm():
    model = fg.parse(fg.encoder_block(batched=False))
    prog, _ = fuse_checked(model)
    assert fg.ops(prog).count("Gemm") == 6
    assert ("gemm-act", ["ff1_mm", "gelu_div", "gelu_erf", "gelu_add", "gelu_mul", "gelu_half"]) in fg.groups(prog)
    assert ("attention", ["k_t", "scores", "scale", "masked", "softmax", "context"]) in fg.groups(prog)


# -- group patterns --------------------------------------------------------------------


def test_conv_with_silu_is_one_group():
    model = fg.parse("""
g (float[1,4,6,6] x) => (float[1,4,6,6] y)
<float[4,4,3,3] w, float[4] b>
{
  [conv] c = Conv<pads = [1, 1, 1, 1]>(x, w, b)
  [sig] s = Sigmoid(c)
  [mul] y = Mul(c, s)
}
""")
    prog, _ = fuse_checked(model)
    assert fg.groups(prog) == [("conv-act", ["conv", "sig", "mul"])]


def test_gemm_with_tanh_gelu():
    model = fg.parse("""
g (float[4,8] x) => (float[4,8] y)
<float[8,8] w, float[8] b, float half = {0.5}, float three = {3.0}, float k = {0.044715},
 float c = {0.7978846}, float one = {1.0}>
{
  [mm] h = Gemm(x, w, b)
  [half_x] hx = Mul(h, half)
  [cube] h3 = Pow(h, three)
  [k3] kh3 = Mul(h3, k)
  [inner] i = Add(h, kh3)
  [scaled] si = Mul(i, c)
  [tanh] t = Tanh(si)
  [plus1] t1 = Add(t, one)
  [out] y = Mul(hx, t1)
}
""")
    prog, _ = fuse_checked(model)
    assert len(prog.groups) == 1 and prog.groups["g0"].pattern == "gemm-act"


def test_fan_out_and_graph_outputs_stop_a_group():
    model = fg.parse("""
g (float[1,4,6,6] x) => (float[1,4,6,6] y, float[1,4,6,6] z, float[1,4,6,6] r2)
<float[4,4,3,3] w>
{
  [conv1] c1 = Conv<pads = [1, 1, 1, 1]>(x, w)
  [relu1] y = Relu(c1)
  [sig1] z = Sigmoid(c1)
  [conv2] c2 = Conv<pads = [1, 1, 1, 1]>(y, w)
  [relu2] r2 = Relu(c2)
}
""")
    prog, _ = fuse_checked(model)
    assert fg.groups(prog) == [("single", ["conv1"]), ("single", ["relu1"]), ("single", ["sig1"]),
                               ("conv-act", ["conv2", "relu2"])]


def test_attention_with_mul_scale_and_no_mask():
    model = fg.parse("""
g (float[2,6,8] q, float[2,6,8] k, float[2,6,8] v) => (float[2,6,8] y)
<float scale = {0.35}>
{
  [kt] t = Transpose<perm = [0, 2, 1]>(k)
  [qk] s = MatMul(q, t)
  [mul] ss = Mul(scale, s)
  [softmax] p = Softmax<axis = -1>(ss)
  [pv] y = MatMul(p, v)
}
""")
    prog, _ = fuse_checked(model)
    assert fg.groups(prog) == [("attention", ["kt", "qk", "mul", "softmax", "pv"])]


def test_attention_not_grouped_when_scores_escape():
    model = fg.parse("""
g (float[6,8] q, float[8,6] kt, float[6,8] v) => (float[6,8] y, float[6,6] p)
{
  [qk] s = MatMul(q, kt)
  [softmax] p = Softmax<axis = -1>(s)
  [pv] y = MatMul(p, v)
}
""")
    prog, _ = fuse_checked(model)
    assert [g[0] for g in fg.groups(prog)] == ["single", "single", "single"]


def test_groups_disabled_leaves_singles():
    model = fg.parse(fg.RESNET_BLOCK)
    prog, _ = fuse_checked(model, patterns=())
    assert all(pattern == "single" for pattern, _ in fg.groups(prog))
    assert len(prog.groups) == len(prog.graph.nodes) == 7


def test_is_convex():
    model = fg.parse("""
g (float[3] x) => (float[3] y)
{
  [a] ta = Relu(x)
  [b] tb = Neg(ta)
  [c] y = Add(ta, tb)
}
""")
    graph = fg.program(model).graph
    dag = Dag(graph)
    by_name = {n.name: n for n in graph.nodes}
    assert is_convex(dag, [by_name["a"], by_name["c"]]) is False
    assert is_convex(dag, [by_name["a"], by_name["b"], by_name["c"]])
    assert is_convex(dag, [by_name["b"], by_name["c"]])
    assert is_safe(dag, [by_name["b"], by_name["c"]])
    assert not is_safe(dag, [by_name["a"], by_name["b"]])


# -- the pass --------------------------------------------------------------------------


def test_pass_contract():
    assert Fusion.name == "fusion"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Fusion().rules = ()  # type: ignore[misc]
    with pytest.raises(EdgecError, match="unknown fusion rule 'fold-everything'"):
        Fusion(rules=("fold-everything",))
    with pytest.raises(EdgecError, match="unknown fusion group pattern"):
        Fusion(patterns=("mystery",))


def test_second_run_changes_nothing():
    model = fg.parse(fg.RESNET_BLOCK)
    prog, changed = fg.fuse(model)
    assert changed
    again = Fusion().run(prog)
    assert again.changed is False
    assert fg.groups(again.program) == fg.groups(prog)


def test_runs_under_the_pass_manager_with_invariant_checks():
    model = fg.parse(fg.encoder_block(decomposed_layernorm=True))
    given = frozenset({"graph", "shapes"})
    prog = PassManager([Fusion()], [VerifyInvariants()], given=given).run(fg.program(model))
    assert any(g.pattern == "attention" for g in prog.groups.values())


def test_explain_lists_rules_that_did_not_apply():
    model = fg.parse(fg.RESNET_BLOCK)
    prog, _ = fg.fuse(model)
    assert explain(prog.graph, list(RULES.values())) == [
        Skip("pad-into-conv", "stem_conv", "Conv 'stem_conv' does not read a Pad"),
        Skip("pad-into-conv", "conv1", "Conv 'conv1' does not read a Pad"),
        Skip("pad-into-conv", "conv2", "Conv 'conv2' does not read a Pad"),
        Skip("matmul-add-into-gemm", "add", "Add 'add' has no MatMul input"),
    ]


# -- properties on random DAGs ---------------------------------------------------------

STEP = st.tuples(st.sampled_from(["conv", "convbn", "padconv", "relu", "silu", "add", "identity", "dropout", "sum"]),
                 st.integers(0, 40), st.integers(0, 40))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=12), outputs=st.lists(st.integers(0, 40), max_size=3))
def test_random_dags_group_safely_and_keep_numerics(steps, outputs):
    model = fg.random_conv_dag(steps, outputs)
    output_names = [o.name for o in model.graph.output]
    prog, _ = fg.fuse(model)
    fg.check_all(model, prog)  # full ONNX check, same outputs and values, groups cover every node once
    assert [t.name for t in prog.graph.outputs] == output_names
    dag = Dag(prog.graph)
    by_name = {n.name: n for n in prog.graph.nodes}
    for group in prog.groups.values():
        nodes = [by_name[n] for n in group.nodes]
        assert is_convex(dag, nodes), group
        assert is_safe(dag, nodes), group


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(STEP, min_size=1, max_size=12), outputs=st.lists(st.integers(0, 40), max_size=3))
def test_random_dags_group_safely_without_rewrites(steps, outputs):
    model = fg.random_conv_dag(steps, outputs)
    prog = fg.program(model)
    groups = build_groups(prog.graph)
    dag = Dag(prog.graph)
    by_name = {n.name: n for n in prog.graph.nodes}
    covered = [n for g in groups.values() for n in g.nodes]
    assert sorted(covered) == sorted(by_name) and len(covered) == len(set(covered))
    for group in groups.values():
        nodes = [by_name[n] for n in group.nodes]
        assert is_convex(dag, nodes) and is_safe(dag, nodes)
