"""Test graphs for the fusion pass, and what the tests do with them.

Graphs are ONNX text (``onnx.parser``). Weights are declared in the graph's
initializer list without a value (``<float[8,3,3,3] w>``): :func:`parse` gives
them random values (names starting with ``var`` get positive ones, as a
variance needs), so the text stays short and the numerics are checked with
random weights.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import onnxruntime as ort

from edgec.ir import Program
from edgec.ir import name_nodes
from edgec.passes.fusion import Fusion

OPSET = 17
HEADER = '<ir_version: 8, opset_import: ["" : {opset}]>\n'


def parse(text: str, seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """A model from ONNX text (without the header); value-less initializers get random values."""
    model = onnx.parser.parse_model(HEADER.format(opset=opset) + text)
    rng = np.random.default_rng(seed)
    produced = {o for n in model.graph.node for o in n.output}
    declared = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    keep = []
    for info in model.graph.value_info:
        if info.name in produced or info.name in declared:
            keep.append(info)
            continue
        tensor_type = info.type.tensor_type
        shape = [d.dim_value for d in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if info.name.startswith("var"):
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.standard_normal(size=shape) * 0.5
        model.graph.initializer.append(onnx.numpy_helper.from_array(value.astype(dtype), info.name))
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    onnx.checker.check_model(model, full_check=True)
    return model


def program(model: onnx.ModelProto) -> Program:
    """A Program as shape-inference leaves it, built without the rest of the compiler."""
    model = onnx.shape_inference.infer_shapes(model)
    opsets = {op.domain: op.version for op in model.opset_import}
    name_nodes(model)  # as the load pass does
    return Program(graph=gs.import_onnx(model), opsets=opsets, ir_version=model.ir_version,
                   source_path="<test>", source_sha256="")


def fuse(model: onnx.ModelProto, **options) -> tuple[Program, bool]:
    """Run the fusion pass on ``model``; returns the program and whether it changed."""
    result = Fusion(**options).run(program(model))
    return result.program, result.changed


def ops(prog: Program) -> list[str]:
    return [n.op for n in prog.graph.nodes]


def node(prog: Program, name: str) -> gs.Node:
    return next(n for n in prog.graph.nodes if n.name == name)


def groups(prog: Program) -> list[tuple[str, list[str]]]:
    """(pattern, node names) per group, in group order."""
    return [(g.pattern, g.nodes) for g in prog.groups.values()]


def random_feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for info in model.graph.input:
        if info.name in inits:
            continue
        tensor_type = info.type.tensor_type
        shape = [d.dim_value for d in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if dtype == np.bool_:
            feeds[info.name] = np.asarray(rng.random(size=shape) < 0.5)
        else:
            feeds[info.name] = np.asarray(rng.standard_normal(size=shape), dtype=dtype)
    return feeds


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs by name, under ONNX Runtime with its graph optimizations off."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def assert_same_outputs(original: onnx.ModelProto, rewritten: onnx.ModelProto, seed: int = 1,
                        rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """Same output names, and the same values on random inputs."""
    feeds = random_feeds(original, seed)
    want = run_ort(original, feeds)
    got = run_ort(rewritten, feeds)
    assert list(got) == list(want), f"graph outputs changed: {list(want)} -> {list(got)}"
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


def check_all(original: onnx.ModelProto, prog: Program, seed: int = 1) -> onnx.ModelProto:
    """The checks every rewritten model passes: full ONNX check, same numerics, valid groups."""
    model = prog.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    assert_same_outputs(original, model, seed)
    names = [n.name for n in prog.graph.nodes]
    assert len(names) == len(set(names))
    grouped = [n for g in prog.groups.values() for n in g.nodes]
    assert grouped == names, "groups must cover every node once, contiguous, in node order"
    assert list(prog.groups) == [f"g{i}" for i in range(len(prog.groups))]
    group_of = prog.group_of()
    order = {g: k for k, g in enumerate(prog.groups)}
    for n in prog.graph.nodes:
        for t in n.inputs:
            if t.inputs:
                assert order[group_of[t.inputs[0].name]] <= order[group_of[n.name]], "groups out of order"
    for t in prog.graph.tensors().values():
        assert not t.name or (t.dtype is not None and t.shape is not None), f"tensor '{t.name}' lost its type"
    return model


# -- graphs ----------------------------------------------------------------------------

RESNET_BLOCK = """
resnet (float[1,3,16,16] x) => (float[1,8,8,8] y)
<float[8,3,3,3] w0, float[8] s0, float[8] b0, float[8] m0, float[8] var0,
 float[8,8,3,3] w1, float[8] cb1, float[8] s1, float[8] b1, float[8] m1, float[8] var1,
 float[8,8,3,3] w2, float[8] s2, float[8] b2, float[8] m2, float[8] var2,
 int64[8] pads = {0, 0, 1, 1, 0, 0, 1, 1}, float ratio = {0.25}>
{
  [stem_pad] xp = Pad(x, pads)
  [stem_conv] c0 = Conv<strides = [2, 2]>(xp, w0)
  [stem_bn] n0 = BatchNormalization(c0, s0, b0, m0, var0)
  [stem_relu] r0 = Relu(n0)
  [skip] r0i = Identity(r0)
  [conv1] c1 = Conv<pads = [1, 1, 1, 1]>(r0i, w1, cb1)
  [bn1] n1 = BatchNormalization(c1, s1, b1, m1, var1)
  [relu1] r1 = Relu(n1)
  [drop1] d1 = Dropout(r1, ratio)
  [conv2] c2 = Conv<pads = [1, 1, 1, 1]>(d1, w2)
  [bn2] n2 = BatchNormalization(c2, s2, b2, m2, var2)
  [add] sum = Add(n2, r0i)
  [relu_out] y = Relu(sum)
}
"""

_LAYERNORM_OP = "[{name}] {out} = LayerNormalization<axis = -1, epsilon = 1e-5>({x}, {g}, {b})"
_LAYERNORM_DECOMPOSED = """
  [{name}_mean] {name}_mu = ReduceMean<axes = [-1]>({x})
  [{name}_sub] {name}_d = Sub({x}, {name}_mu)
  [{name}_pow] {name}_d2 = Pow({name}_d, two)
  [{name}_var] {name}_v = ReduceMean<axes = [-1]>({name}_d2)
  [{name}_eps] {name}_ve = Add({name}_v, eps)
  [{name}_sqrt] {name}_sd = Sqrt({name}_ve)
  [{name}_div] {name}_n = Div({name}_d, {name}_sd)
  [{name}_scale] {name}_s = Mul({name}_n, {g})
  [{name}_shift] {out} = Add({name}_s, {b})
"""

_ENCODER = """
encoder (float[{batch}8,16] x, float[{batch}8,8] mask) => (float[{batch}8,16] y)
<float[16,16] wq, float[16] bq, float[16,16] wk, float[16] bk, float[16,16] wv, float[16] bv,
 float[16,16] wo, float[16] bo, float[16] g1, float[16] be1, float[32,16] w2, float[16] b2,
 float[16,32] w1, float[32] b1, float[16] g2, float[16] be2,
 float scale = {{4.0}}, float sqrt2 = {{1.4142135}}, float one = {{1.0}}, float half = {{0.5}},
 float two = {{2.0}}, float eps = {{1e-5}}>
{{
  [q_mm] q = MatMul(x, wq)
  [q_bias] qb = Add(q, bq)
  [k_mm] k = MatMul(x, wk)
  [k_bias] kb = Add(k, bk)
  [v_mm] v = MatMul(x, wv)
  [v_bias] vb = Add(v, bv)
  [k_t] kt = Transpose<perm = {perm}>(kb)
  [scores] s = MatMul(qb, kt)
  [scale] ss = Div(s, scale)
  [masked] sm = Add(ss, mask)
  [softmax] p = Softmax<axis = -1>(sm)
  [context] a = MatMul(p, vb)
  [o_mm] o = MatMul(a, wo)
  [o_bias] ob = Add(o, bo)
  [res1] r1 = Add(x, ob)
{ln1}
  [ff1_mm] h = MatMul(n1, w1)
  [ff1_bias] hb = Add(h, b1)
  [gelu_div] gd = Div(hb, sqrt2)
  [gelu_erf] ge = Erf(gd)
  [gelu_add] ga = Add(ge, one)
  [gelu_mul] gm = Mul(hb, ga)
  [gelu_half] g = Mul(gm, half)
  [ff2_mm] f = MatMul(g, w2)
  [ff2_bias] fb = Add(f, b2)
  [res2] r2 = Add(n1, fb)
{ln2}
}}
"""


def encoder_block(decomposed_layernorm: bool = False, batched: bool = True) -> str:
    """A transformer encoder block: projections, scaled masked attention, LayerNorm, GELU MLP."""
    ln = _LAYERNORM_DECOMPOSED if decomposed_layernorm else _LAYERNORM_OP
    return _ENCODER.format(
        batch="1," if batched else "", perm="[0, 2, 1]" if batched else "[1, 0]",
        ln1=ln.format(name="ln1", x="r1", g="g1", b="be1", out="n1"),
        ln2=ln.format(name="ln2", x="r2", g="g2", b="be2", out="y"))


def random_conv_dag(steps: list[tuple[str, int, int]], outputs: list[int], channels: int = 4,
                    size: int = 6) -> onnx.ModelProto:
    """A random DAG of same-shape tensors: each step ``(op, a, b)`` reads earlier tensors
    ``a`` and ``b``: the latest one for ``a < 24`` (so chains form), else tensor ``a`` modulo the
    tensors so far (tensor 0 is the input), which makes branches.

    ops: conv (3x3, pads 1), convbn (conv + BatchNormalization), padconv (Pad + unpadded conv),
    relu, silu (x * Sigmoid(x)), add, identity, dropout, sum. Tensors in ``outputs`` (modulo)
    and tensors nobody reads are graph outputs.
    """
    rng = np.random.default_rng(len(steps) * 7919 + sum(a * 31 + b for _, a, b in steps))
    x = gs.Variable("x", np.float32, (1, channels, size, size))
    tensors = [x]
    nodes = []
    weight = [0]

    def const(shape, positive=False):
        weight[0] += 1
        value = rng.uniform(0.5, 1.5, shape) if positive else rng.standard_normal(shape) * 0.3
        return gs.Constant(f"w{weight[0]}", value.astype(np.float32))

    def new(op, inputs, attrs=None, extra_outputs=0):
        k = len(nodes)
        out = gs.Variable(f"t{k}", np.float32, (1, channels, size, size))
        outs = [out] + [gs.Variable(f"t{k}_{j}") for j in range(extra_outputs)]
        nodes.append(gs.Node(op, name=f"n{k}_{op.lower()}", attrs=attrs or {}, inputs=inputs, outputs=outs))
        return out

    for op, a, b in steps:
        ta = tensors[-1] if a < 24 else tensors[a % len(tensors)]
        tb = tensors[b % len(tensors)]
        if op in ("conv", "convbn"):
            t = new("Conv", [ta, const((channels, channels, 3, 3)), const((channels,))], {"pads": [1, 1, 1, 1]})
            if op == "convbn":
                t = new("BatchNormalization", [t, const((channels,), True), const((channels,)),
                                               const((channels,)), const((channels,), True)])
        elif op == "padconv":
            pads = gs.Constant(f"pads{len(nodes)}", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
            p = new("Pad", [ta, pads])
            p.shape = (1, channels, size + 2, size + 2)
            t = new("Conv", [p, const((channels, channels, 3, 3))])
        elif op == "relu":
            t = new("Relu", [ta])
        elif op == "silu":
            s = new("Sigmoid", [ta])
            t = new("Mul", [ta, s])
        elif op == "add":
            t = new("Add", [ta, tb])
        elif op == "sum":
            t = new("Sum", [ta, tb])
        elif op == "identity":
            t = new("Identity", [ta])
        elif op == "dropout":
            t = new("Dropout", [ta])
        else:
            raise ValueError(op)
        tensors.append(t)
    chosen = {id(tensors[i % len(tensors)]): tensors[i % len(tensors)] for i in outputs if i % len(tensors)}
    for t in tensors[1:]:
        if not t.outputs:
            chosen.setdefault(id(t), t)
    if not chosen:
        chosen[id(tensors[-1])] = tensors[-1]
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=list(chosen.values()), opset=OPSET)
    model = gs.export_onnx(graph)
    model.ir_version = 8
    return model
