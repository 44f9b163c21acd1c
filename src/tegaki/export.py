"""ONNX export and the ONNX Runtime engine.

    proto = to_onnx(spec, weights, norm=..., classes=...)   # an onnx.ModelProto, built from the spec
    export_run("runs/x", "model.onnx")                        # checked, verified against PyTorch
    engine = OnnxEngine(spec, weights)                        # make_engine("onnx", spec, weights)
    engine.logits(x)                                          # (N, C, H, W) normalised -> (N, classes)

The graph is written straight from the spec, one ONNX node (or two) per layer, the same way
the engines interpret it: no tracing, so exporting takes milliseconds and does not depend on
PyTorch's exporter. The model takes the normalised float32 input (N, C, H, W) named "input"
and has two outputs, "logits" and "probabilities" (softmax). Its metadata carries what a user
needs to feed it: the normalisation (mean, std), the class names and the spec as JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tegaki import spec as S
from tegaki.errors import TegakiError

OPSET = 17


def _need_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise TegakiError("ONNX export needs the onnx package: pip install 'tegaki[onnx]'") from None
    return onnx, helper, numpy_helper


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(np.ascontiguousarray(weights[k], np.float32).tobytes())
    return h.hexdigest()


def to_onnx(spec: S.Spec, weights: dict[str, np.ndarray], norm: dict | None = None,
            classes: list[str] | None = None, opset: int = OPSET):
    """The spec and its weights as an ONNX model (onnx.ModelProto), checked by onnx.checker."""
    onnx, helper, numpy_helper = _need_onnx()
    spec.check_weights(weights)
    nodes, inits = [], []

    def init(name: str, arr) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def w(key: str) -> str:
        return init(key, np.asarray(weights[key], np.float32))

    x = "input"
    for layer, s in zip(spec.layers, spec.in_shapes()):
        n, out = layer.name, layer.name
        if isinstance(layer, S.Conv2d):
            t, b, l, r = layer.pads(s[1], s[2])
            ins = [x, w(f"{n}.weight")] + ([w(f"{n}.bias")] if layer.bias else [])
            nodes.append(helper.make_node("Conv", ins, [out], name=n, kernel_shape=list(S._pair(layer.kernel, "k")),
                                          strides=list(S._pair(layer.stride, "s")), pads=[t, l, b, r]))
        elif isinstance(layer, (S.MaxPool, S.AvgPool)):
            k, st = layer.window()
            op = "MaxPool" if isinstance(layer, S.MaxPool) else "AveragePool"
            nodes.append(helper.make_node(op, [x], [out], name=n, kernel_shape=list(k), strides=list(st)))
        elif isinstance(layer, S.Dense):
            ins = [x, w(f"{n}.weight")] + ([w(f"{n}.bias")] if layer.bias else [])
            nodes.append(helper.make_node("Gemm", ins, [out], name=n, transB=1))
        elif isinstance(layer, S.Flatten):
            nodes.append(helper.make_node("Flatten", [x], [out], name=n, axis=1))  # (C, H, W) order, as the spec
        elif isinstance(layer, S.Dropout):
            continue  # inference: the identity
        elif isinstance(layer, S.BatchNorm):
            ins = [x] + [w(f"{n}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
            nodes.append(helper.make_node("BatchNormalization", ins, [out], name=n, epsilon=layer.eps))
        elif isinstance(layer, S.Sigmoid):
            nodes.append(helper.make_node("Sigmoid", [x], [out], name=n))
        elif isinstance(layer, S.Tanh):
            nodes.append(helper.make_node("Tanh", [x], [out], name=n))
        elif isinstance(layer, S.ReLU):
            nodes.append(helper.make_node("Relu", [x], [out], name=n))
        elif isinstance(layer, S.LeakyReLU):
            nodes.append(helper.make_node("LeakyRelu", [x], [out], name=n, alpha=layer.slope))
        elif isinstance(layer, S.ELU):
            nodes.append(helper.make_node("Elu", [x], [out], name=n, alpha=layer.alpha))
        elif isinstance(layer, S.Maxout):
            # (N, C, ...) -> (N, C/k, k, ...) -> max over the k consecutive channels
            shape = init(f"{n}.shape", np.array([0, s[0] // layer.pieces, layer.pieces, *s[1:]], np.int64))
            nodes.append(helper.make_node("Reshape", [x, shape], [f"{n}.groups"], name=f"{n}.reshape"))
            nodes.append(helper.make_node("ReduceMax", [f"{n}.groups"], [out], name=n, axes=[2], keepdims=0))
        elif isinstance(layer, S.Softmax):
            continue  # the graph's "logits" is its input; "probabilities" applies it below
        else:
            raise TegakiError(f"ONNX export has no translation of layer type {layer.type!r}")
        x = out
    nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="probabilities", axis=1))
    k = spec.num_classes
    shape = ", ".join(map(str, spec.input_shape))
    graph = helper.make_graph(
        nodes, spec.name,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", *spec.input_shape])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", k]),
         helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tegaki",
                              doc_string=f"tegaki network {spec.name!r}: input (batch, {shape}) "
                                         "float32 = (pixels / 255 - mean) / std; outputs logits and probabilities")
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes too (opset 17 needs IR 8)
    meta = {"tegaki.spec": spec.to_json(), "tegaki.weights_sha256": weights_digest(weights)}
    if norm is not None:
        meta["tegaki.normalize"] = json.dumps({"mean": float(norm["mean"]), "std": float(norm["std"]),
                                               "scale": 1 / 255})
    if classes is not None:
        meta["tegaki.classes"] = json.dumps(list(classes))
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def session(model_bytes: bytes, threads: int | None = None):
    """An ONNX Runtime CPU session for a serialised model."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TegakiError("the onnx engine needs ONNX Runtime: pip install 'tegaki[onnx]'") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


class OnnxEngine:
    """Inference through ONNX Runtime: the engine interface's logits, evaluate and weights.

    Training and activations are the PyTorch and NumPy engines' job; asking this one for them is
    a clear error. Changing the weights rebuilds the graph (milliseconds).
    """

    name = "onnx"
    device = "cpu"

    def __init__(self, spec: S.Spec, weights: dict[str, np.ndarray] | None = None, threads: int | None = None):
        self.spec = spec
        self.threads = threads
        self.set_weights(weights if weights is not None else spec.init_weights(0))

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._weights.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.spec.check_weights(weights)
        self._weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        self.sess = session(to_onnx(self.spec, self._weights).SerializeToString(), self.threads)

    def logits(self, x, batch_size: int = 4096) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, np.float32))  # (N, C, H, W)
        out = [self.sess.run(["logits"], {"input": x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)

    def prepare(self, images: np.ndarray, labels: np.ndarray | None, norm: dict):
        from tegaki.run import normalise

        return normalise(images, norm, self.spec.input_shape), None if labels is None else np.asarray(labels, np.int64)

    def take(self, data, idx: np.ndarray):
        return data[0][idx], data[1][idx]

    def evaluate(self, data, batch_size: int = 4096) -> tuple[float, float, np.ndarray]:
        x, y = data
        z = self.logits(x, batch_size).astype(np.float64)  # (N, classes)
        zs = z - z.max(1, keepdims=True)
        logp = zs - np.log(np.exp(zs).sum(1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean()), float((z.argmax(1) == y).mean()), z.astype(np.float32)

    def activations(self, x):
        raise TegakiError("the onnx engine gives predictions only; use --engine torch (or numpy) to look inside")

    def input_gradient(self, x, target):
        raise TegakiError("the onnx engine has no gradients; use --engine torch for saliency maps")

    def configure(self, *a, **kw):
        raise TegakiError("the onnx engine runs trained models only; train with --engine torch (or numpy)")

    train_step = seed = set_lr = reset_stats = read_stats = optimizer_state = load_optimizer_state = configure


def export_run(run_ref, path, check_samples: int = 256, tolerance: float = 1e-4) -> dict:
    """Write a run's model as ONNX to `path` (atomically), after checking ONNX Runtime's outputs
    agree with PyTorch's within `tolerance` on `check_samples` random MNIST-like inputs.
    Returns a summary (path, bytes, max difference, opset)."""
    from tegaki.engines.torch_engine import TorchEngine
    from tegaki.fileio import atomic_write_bytes
    from tegaki.run import load_run

    run = load_run(run_ref)
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise TegakiError(f"{path}: give the ONNX file a .onnx name")
    if path.is_dir():
        raise TegakiError(f"{path} is a folder; give a file name such as model.onnx")
    if not path.parent.exists():
        raise TegakiError(f"{path.parent}: no such folder; create it first")
    model = to_onnx(run.spec, run.weights, run.norm, run.classes)
    data = model.SerializeToString()
    rng = np.random.default_rng(0)
    pixels = (rng.random((check_samples, *run.spec.input_shape)) ** 3 * 255).astype(np.float32)  # mostly dark
    x = ((pixels / 255.0 - run.norm["mean"]) / run.norm["std"]).astype(np.float32)
    ref = TorchEngine(run.spec, run.weights, device="cpu").logits(x)
    got = session(data).run(["logits"], {"input": x})[0]
    diff = float(np.abs(ref - got).max())
    if not diff <= tolerance:
        raise TegakiError(f"ONNX Runtime's outputs differ from PyTorch's by {diff:.2e} (> {tolerance:g}); "
                          "nothing written. Please report this with the run's model.json")
    atomic_write_bytes(path, data)
    return {"path": str(path), "bytes": len(data), "max_abs_diff": diff, "opset": OPSET,
            "samples": check_samples, "inputs": f"(batch, {', '.join(map(str, run.spec.input_shape))})"}
