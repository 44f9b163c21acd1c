"""The ONNX Runtime engine: inference on a graph written from the spec (tegaki/export.py).

    engine = OnnxEngine(spec, weights)          # or make_engine("onnx", spec, weights)
    engine.logits(x)                            # (N, C, H, W) normalised -> (N, classes)

It offers the whole engine interface (engines/__init__.py), but only inference works: logits,
evaluate and weights. Training, activations and gradients are the PyTorch and NumPy engines'
job; asking this one for them is a clear TegakiError. Changing the weights rebuilds the graph
(milliseconds).
"""

from __future__ import annotations

import numpy as np

from tegaki import spec as S
from tegaki.engines.inputs import normalise
from tegaki.errors import TegakiError
from tegaki.export import session, to_onnx


def _no_training(*args, **kwargs):
    raise TegakiError("the onnx engine runs trained models only; train with --engine torch (or numpy)")


class OnnxEngine:
    """Inference through ONNX Runtime (CPU)."""

    name = "onnx"
    device = "cpu"
    precision = "fp32"
    trainable = False
    has_gradients = False
    has_activations = False

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

    def prepare(self, images: np.ndarray, labels: np.ndarray | None, norm: dict, targets: np.ndarray | None = None):
        data = normalise(images, norm, self.spec.input_shape), None if labels is None else np.asarray(labels, np.int64)
        return data if targets is None else (*data, np.asarray(targets, np.float32))

    def take(self, data, idx: np.ndarray):
        return tuple(a[idx] for a in data)

    def evaluate(self, data, batch_size: int = 4096) -> tuple[float, float, np.ndarray]:
        x, y = data[:2]
        z = self.logits(x, batch_size).astype(np.float64)  # (N, classes)
        zs = z - z.max(1, keepdims=True)
        logp = zs - np.log(np.exp(zs).sum(1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean()), float((z.argmax(1) == y).mean()), z.astype(np.float32)

    def activations(self, x, only=None):
        raise TegakiError("the onnx engine gives predictions only; use --engine torch (or numpy) to look inside")

    def input_gradient(self, x, target):
        raise TegakiError("the onnx engine has no gradients; use --engine torch for saliency maps")

    configure = tune = train_step = seed = set_lr = reset_stats = read_stats = staticmethod(_no_training)
    optimizer_state = load_optimizer_state = staticmethod(_no_training)
