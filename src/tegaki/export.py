"""ONNX export and the ONNX Runtime engine.

    proto = to_onnx(spec, weights, norm=..., classes=...)   # an onnx.ModelProto, built from the spec
    export_run("runs/x", "model.onnx")                        # checked, verified against PyTorch
    engine = OnnxEngine(spec, weights)                        # make_engine("onnx", spec, weights)
    engine.logits(x)                                          # (N, C, H, W) normalised -> (N, classes)

The graph is written straight from the spec, one ONNX node (or two) per layer, each reading the
tensors of the layers it names (spec.sources(): branches are just names), the same way the engines
interpret it: no tracing, so exporting takes milliseconds and does not depend on
PyTorch's exporter. The model takes the normalised float32 input (N, C, H, W) named "input"
and has two outputs, "logits" (raw) and "probabilities": softmax(logits / T) with the run's calibration
temperature T baked in (tegaki/calibration.py; 1 for a run without one), so they are the same
calibrated probabilities tegaki shows. Its metadata carries what a user needs to feed it: the
normalisation (mean, std), the class names, the spec as JSON and the temperature.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tegaki import spec as S
from tegaki.engines.inputs import normalise
from tegaki.errors import TegakiError

OPSET = 17


def _need_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise TegakiError("ONNX export and the onnx engine need the onnx package: pip install 'tegaki[onnx]'") from None
    return onnx, helper, numpy_helper


def _need_runtime():
    try:
        import onnxruntime
    except ImportError:
        raise TegakiError("the onnx engine needs ONNX Runtime: pip install 'tegaki[onnx]'") from None
    return onnxruntime


def need_onnx_engine() -> None:
    """Refuse --engine onnx, in one line, where the onnx package or ONNX Runtime is missing."""
    _need_onnx()
    _need_runtime()


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(np.ascontiguousarray(weights[k], np.float32).tobytes())
    return h.hexdigest()


class _Graph:
    """The ONNX graph being written: its nodes, and its initialisers (the weights)."""

    def __init__(self, weights: dict[str, np.ndarray]):
        _, self.helper, self.numpy_helper = _need_onnx()
        self.weights = weights
        self.nodes, self.inits = [], []

    def const(self, name: str, arr) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def w(self, key: str) -> str:
        return self.const(key, np.asarray(self.weights[key], np.float32))

    def node(self, op: str, ins: list[str], out: str, name: str | None = None, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, ins, [out], name=name or out, **attrs))
        return out

    def rename(self, old: str, new: str) -> str:
        """Every use of tensor `old`, as a node's input or output (and a node's name), becomes `new`."""
        for n in self.nodes:
            for names in (n.input, n.output):
                for i, v in enumerate(names):
                    if v == old:
                        names[i] = new
            if n.name == old:
                n.name = new
        return new

    def affine(self, layer, x: str) -> list[str]:
        """[x, weight] and the bias if the layer has one: the inputs of Conv and Gemm."""
        return [x, self.w(f"{layer.name}.weight")] + ([self.w(f"{layer.name}.bias")] if layer.bias else [])


def _conv(g: _Graph, layer: S.Conv2d, x: str, s) -> str:
    t, b, l, r = layer.pads(s[1], s[2])
    return g.node("Conv", g.affine(layer, x), layer.name, kernel_shape=list(layer.kernel2),
                  strides=list(layer.stride2), pads=[t, l, b, r])


def _pool(op: str):
    def pool(g: _Graph, layer: S.MaxPool | S.AvgPool, x: str, s) -> str:
        k, st = layer.window()
        return g.node(op, [x], layer.name, kernel_shape=list(k), strides=list(st))
    return pool


def _batchnorm(g: _Graph, layer: S.BatchNorm, x: str, s) -> str:
    ins = [x] + [g.w(f"{layer.name}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
    return g.node("BatchNormalization", ins, layer.name, epsilon=layer.eps)


def _maxout(g: _Graph, layer: S.Maxout, x: str, s) -> str:
    # (N, C, ...) -> (N, C/k, k, ...) -> max over the k consecutive channels
    n, k = layer.name, layer.pieces
    shape = g.const(f"{n}.shape", np.array([0, s[0] // k, k, *s[1:]], np.int64))
    g.node("Reshape", [x, shape], f"{n}.groups", name=f"{n}.reshape")
    return g.node("ReduceMax", [f"{n}.groups"], n, axes=[2], keepdims=0)


def _unary(op: str, **attrs):
    return lambda g, layer, x, s: g.node(op, [x], layer.name, **{k: getattr(layer, a) for k, a in attrs.items()})


def _global_avgpool(g: _Graph, layer: S.GlobalAvgPool, x: str, s) -> str:
    g.node("GlobalAveragePool", [x], f"{layer.name}.map")  # (N, C, 1, 1)
    return g.node("Flatten", [f"{layer.name}.map"], layer.name, axis=1)  # (N, C)


def _identity(g, layer, x, s) -> str:
    return x  # no node: dropout at inference; softmax, which "probabilities" applies at the end


# one entry per layer kind: spec record type -> (graph, record, input name, input shape) -> output name
NODES = {
    S.Conv2d: _conv,
    S.MaxPool: _pool("MaxPool"),
    S.AvgPool: _pool("AveragePool"),
    S.Dense: lambda g, layer, x, s: g.node("Gemm", g.affine(layer, x), layer.name, transB=1),
    S.Flatten: lambda g, layer, x, s: g.node("Flatten", [x], layer.name, axis=1),  # (C, H, W) order, as the spec
    S.Dropout: _identity,
    S.BatchNorm: _batchnorm,
    S.Sigmoid: _unary("Sigmoid"),
    S.Tanh: _unary("Tanh"),
    S.ReLU: _unary("Relu"),
    S.LeakyReLU: _unary("LeakyRelu", alpha="slope"),
    S.ELU: _unary("Elu", alpha="alpha"),
    S.Maxout: _maxout,
    S.Softmax: _identity,
    S.GlobalAvgPool: _global_avgpool,
    # joining layers get the list of their inputs' names
    S.Add: lambda g, layer, xs, s: g.node("Sum", xs, layer.name),
    S.Concat: lambda g, layer, xs, s: g.node("Concat", xs, layer.name, axis=1),
}
JOINS = (S.Add, S.Concat)
OWN = {"logits", "probabilities", "scaled", "temperature"}  # the graph's own tensors, after the layers


def _graph(spec: S.Spec, weights: dict[str, np.ndarray], temperature: float = 1.0) -> _Graph:
    """The spec's layers as ONNX nodes, then "logits" and "probabilities" (softmax of logits / T)."""
    g = _Graph(weights)
    tensor = {"input": "input"}  # layer name -> the ONNX tensor holding its output
    for layer, s, src in zip(spec.layers, spec.in_shapes(), spec.sources()):
        translate = NODES.get(type(layer))
        if translate is None:
            raise TegakiError(f"ONNX export has no translation of layer type {layer.type!r}")
        xs = [tensor[n] for n in src]
        tensor[layer.name] = x = translate(g, layer, xs if isinstance(layer, JOINS) else xs[0], s)
    for name in OWN & set(tensor):  # a layer named "logits" (Keras users name their last dense so): its
        new = g.rename(name, f"{name}.out")  # tensor gets another name (a layer's name holds no dot)
        x = new if x == name else x
    g.node("Identity", [x], "logits")
    scaled = "logits"
    if temperature != 1.0:
        scaled = g.node("Div", ["logits", g.const("temperature", np.array(temperature, np.float32))], "scaled")
    g.node("Softmax", [scaled], "probabilities", axis=1)
    return g


def _above(x: float) -> str:
    """A round tolerance at least x: 9.3e-04 -> '0.001', 1.2e-04 -> '0.0002' (one significant figure, up)."""
    unit = 10.0 ** np.floor(np.log10(x))
    return f"{float(f'{np.ceil(x / unit) * unit:.1g}'):g}"


def to_onnx(spec: S.Spec, weights: dict[str, np.ndarray], norm: dict | None = None,
            classes: list[str] | None = None, opset: int = OPSET, temperature: float = 1.0):
    """The spec and its weights as an ONNX model (onnx.ModelProto), checked by onnx.checker."""
    onnx, helper, _ = _need_onnx()
    spec.check_weights(weights)
    g = _graph(spec, weights, float(temperature))
    k = spec.num_classes
    shape = ", ".join(map(str, spec.input_shape))
    graph = helper.make_graph(
        g.nodes, spec.name,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", *spec.input_shape])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", k]),
         helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", k])], g.inits)
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
    if temperature != 1.0:
        meta["tegaki.temperature"] = repr(float(temperature))
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def session(model_bytes: bytes, threads: int | None = None):
    """An ONNX Runtime CPU session for a serialised model."""
    ort = _need_runtime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def export_run(run_ref, path, check_samples: int = 256, tolerance: float = 1e-4) -> dict:
    """Write a run's model as ONNX to `path` (atomically), after checking ONNX Runtime's outputs
    agree with PyTorch's within `tolerance` on `check_samples` random MNIST-like inputs.
    Returns a summary (path, bytes, max difference, opset)."""
    from tegaki.engines.torch_engine import TorchEngine
    from tegaki.fileio import atomic_write_bytes
    from tegaki.run import load_run

    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < float("inf")):  # nan fails too
        raise TegakiError(f"--tolerance must be a positive number (default 1e-4), got {tolerance}")
    run = load_run(run_ref)
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise TegakiError(f"{path}: give the ONNX file a .onnx name")
    if path.is_dir():
        raise TegakiError(f"{path} is a folder; give a file name such as model.onnx")
    if not path.parent.exists():
        raise TegakiError(f"{path.parent}: no such folder; create it first")
    temperature = float(run.meta.get("calibration", {}).get("temperature", 1.0))
    model = to_onnx(run.spec, run.weights, run.norm, run.classes, temperature=temperature)
    data = model.SerializeToString()
    rng = np.random.default_rng(0)
    pixels = (rng.random((check_samples, *run.spec.input_shape)) ** 3 * 255).astype(np.float32)  # mostly dark
    x = normalise(pixels, run.norm, run.spec.input_shape)  # (N, C, H, W) float32
    ref = TorchEngine(run.spec, run.weights, device="cpu").logits(x)
    got = session(data).run(["logits"], {"input": x})[0]
    diff = float(np.abs(ref - got).max())
    if not diff <= tolerance:
        size = float(np.abs(ref).max())
        raise TegakiError(f"ONNX Runtime's outputs differ from PyTorch's by {diff:.2e} (> {tolerance:g}, on logits up "
                          f"to {size:.3g}); nothing written. Float32 rounding grows with a network's depth: if the "
                          f"difference is small beside the logits, export with --tolerance {_above(diff)}; if not, "
                          "please report this with the run's model.json")
    atomic_write_bytes(path, data)
    return {"path": str(path), "bytes": len(data), "max_abs_diff": diff, "opset": OPSET,
            "samples": check_samples, "inputs": f"(batch, {', '.join(map(str, run.spec.input_shape))})"}
