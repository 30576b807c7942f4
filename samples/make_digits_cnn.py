"""Train a small CNN on scikit-learn's digits (8x8 greyscale) and write it, its width variants and the data.

    python samples/make_digits_cnn.py [OUT_DIR]      # default: samples/digits/

The 1797 images are split once (seed 0, stratified) into train (60%),
validation (20%) and test (20%). Each network is trained with numpy alone
(im2col convolutions, hand-written backward pass, Adam, 40 epochs, batch 32)
on the train split; the validation split is the calibration data a compile
chooses variants on (`--calib digits_val.npz`), the test split is scored on
and on nothing else. Architecture, width w in {1, 0.5, 0.25}:

    image[1,1,8,8] -> Conv3x3(32w) Relu -> Conv3x3(64w) Relu -> MaxPool2 -> Conv3x3(128w) Relu
                  -> GlobalAveragePool -> Flatten -> Gemm(10) = logits[1,10]

Writes digits_cnn.onnx (w=1), digits_cnn_w50.onnx, digits_cnn_w25.onnx,
digits_val.npz and digits_test.npz (arrays `image` N x 1 x 1 x 8 x 8 float32,
`labels` N int64), and prints each network's top-1 on the test split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

WIDTHS = {"digits_cnn": 1.0, "digits_cnn_w50": 0.5, "digits_cnn_w25": 0.25}
EPOCHS, BATCH, LR = 40, 32, 3e-3


def load_splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train / val / test: images N x 1 x 8 x 8 in [0, 1] (float32) and labels (int64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


# -- the network in numpy ------------------------------------------------------------------------------


def _im2col(x: np.ndarray) -> np.ndarray:
    """N x C x H x W -> (N*H*W) x (C*9) patches of a 3x3, stride 1, pad 1 convolution."""
    n, c, h, w = x.shape
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=2)  # N C 9 H W
    return cols.transpose(0, 3, 4, 1, 2).reshape(n * h * w, c * 9)


def _col2im(cols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    n, c, h, w = shape
    cols = cols.reshape(n, h, w, c, 9).transpose(0, 3, 4, 1, 2)
    p = np.zeros((n, c, h + 2, w + 2), cols.dtype)
    for k in range(9):
        i, j = divmod(k, 3)
        p[:, :, i:i + h, j:j + w] += cols[:, :, k]
    return p[:, :, 1:-1, 1:-1]


def _conv(x, w, b):
    n, _, h, wd = x.shape
    cols = _im2col(x)
    y = cols @ w.reshape(w.shape[0], -1).T + b
    return y.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def _conv_back(dy, cols, x_shape, w):
    n, co, h, wd = dy.shape
    d = dy.transpose(0, 2, 3, 1).reshape(-1, co)
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(0)
    dx = _col2im(d @ w.reshape(co, -1), x_shape)
    return dx, dw, db


def init_params(width: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    c1, c2, c3 = (max(1, int(round(c * width))) for c in (32, 64, 128))
    he = lambda co, ci: (rng.standard_normal((co, ci, 3, 3)) * np.sqrt(2.0 / (ci * 9))).astype(np.float32)
    return {"w1": he(c1, 1), "b1": np.zeros(c1, np.float32), "w2": he(c2, c1), "b2": np.zeros(c2, np.float32),
            "w3": he(c3, c2), "b3": np.zeros(c3, np.float32),
            "wf": (rng.standard_normal((10, c3)) * np.sqrt(1.0 / c3)).astype(np.float32),
            "bf": np.zeros(10, np.float32)}


def forward(p: dict[str, np.ndarray], x: np.ndarray, keep: bool = False):
    a1, c1 = _conv(x, p["w1"], p["b1"])
    r1 = np.maximum(a1, 0)
    a2, c2 = _conv(r1, p["w2"], p["b2"])
    r2 = np.maximum(a2, 0)
    n, c, h, w = r2.shape
    blocks = r2.reshape(n, c, h // 2, 2, w // 2, 2)
    m2 = blocks.max(axis=(3, 5))
    a3, c3 = _conv(m2, p["w3"], p["b3"])
    r3 = np.maximum(a3, 0)
    g = r3.mean(axis=(2, 3))
    logits = g @ p["wf"].T + p["bf"]
    if not keep:
        return logits
    return logits, (x, a1, c1, r1, a2, c2, r2, blocks, m2, a3, c3, r3, g)


def backward(p, cache, dlogits):
    x, a1, c1, r1, a2, c2, r2, blocks, m2, a3, c3, r3, g = cache
    grads = {"wf": dlogits.T @ g, "bf": dlogits.sum(0)}
    dg = dlogits @ p["wf"]
    dr3 = np.broadcast_to(dg[:, :, None, None] / (r3.shape[2] * r3.shape[3]), r3.shape)
    da3 = dr3 * (a3 > 0)
    dm2, grads["w3"], grads["b3"] = _conv_back(da3, c3, m2.shape, p["w3"])
    mask = blocks == m2[:, :, :, None, :, None]
    mask = mask / mask.sum(axis=(3, 5), keepdims=True)
    dr2 = (mask * dm2[:, :, :, None, :, None]).reshape(r2.shape)
    da2 = dr2 * (a2 > 0)
    dr1, grads["w2"], grads["b2"] = _conv_back(da2, c2, r1.shape, p["w2"])
    da1 = dr1 * (a1 > 0)
    _, grads["w1"], grads["b1"] = _conv_back(da1, c1, x.shape, p["w1"])
    return grads


def train(width: float, x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = init_params(width, rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            logits, cache = forward(p, x[idx], keep=True)
            z = logits - logits.max(1, keepdims=True)
            prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
            prob[np.arange(len(idx)), y[idx]] -= 1
            grads = backward(p, cache, prob / len(idx))
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
                mh, vh = m[k] / (1 - 0.9 ** step), v[k] / (1 - 0.999 ** step)
                p[k] = (p[k] - LR * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return p


def to_onnx(p: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["a1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["a2"], name="conv2", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["m2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["m2", "w3", "b3"], ["a3"], name="conv3", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(v, k) for k, v in p.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="make_digits_cnn")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Calibration frames as `edgec compile --calib` reads them: one array per model input, N frames, + labels."""
    np.savez(path, image=x[:, None].astype(np.float32), labels=y.astype(np.int64))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits()
    x_train, y_train = splits["train"]
    x_test, y_test = splits["test"]
    write_npz(out / "digits_val.npz", *splits["val"])
    write_npz(out / "digits_test.npz", x_test, y_test)
    for name, width in WIDTHS.items():
        p = train(width, x_train, y_train)
        onnx.save(to_onnx(p, name), out / f"{name}.onnx")
        top1 = float((forward(p, x_test).argmax(1) == y_test).mean())
        print(f"{name}: width {width}, {sum(v.size for v in p.values())} parameters, "
              f"test top-1 {100 * top1:.2f}% ({len(y_test)} images)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "digits")
