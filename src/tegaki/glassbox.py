"""The NumPy network driven by hand, as source document 5 writes its training loop.

    net = model.numpy_net()                   # or tg.NumpyNet(spec): the NumPy engine's layers, float64
    x = net.inputs(images)                    # uint8 (N, 28, 28) -> normalised float (N, 1, 28, 28)
    logits = net.forward(x)                   # through every layer; each keeps what its backward needs
    loss, dlogits = net.loss(logits, labels)  # softmax cross-entropy and its gradient dL/dlogits
    net.backward(dlogits)                     # fills every layer's .grads (same keys as its .params)
    net.step(0.1)                             # plain SGD: param -= lr * grad
    print(tg.gradcheck(net, x[:4], labels[:4]))   # backprop against finite differences, per parameter

The layers are the plain reference versions (tegaki/engines/numpy_layers.py, docs/backprop.md), in
float64 so that finite differences are exact enough to compare with.
"""

from __future__ import annotations

import numpy as np

from tegaki import spec as S
from tegaki.arrays import InputError
from tegaki.errors import TegakiError

__all__ = ["NumpyNet", "gradcheck"]


class NumpyNet:
    """A network of NumPy layers (forward, backward, .params, .grads) for writing the training loop yourself."""

    def __init__(self, spec: S.Spec, weights: dict | None = None, norm: dict | None = None, seed: int = 0):
        from tegaki.engines.numpy_engine import NumpyEngine

        if isinstance(spec, str):  # a preset's name, as tegaki train --preset takes it
            spec = S.load_preset(spec)
        if not isinstance(spec, S.Spec):
            raise TegakiError(f"NumpyNet takes a Spec or a preset's name, got {type(spec).__name__}; for a "
                              "Sequential's own weights use model.numpy_net()")
        self.spec = spec
        self.norm = norm or {"mean": 0.0, "std": 1.0}
        w = weights if weights is not None else spec.init_weights(seed)
        self.engine = NumpyEngine(spec, {k: np.asarray(v, np.float64) for k, v in w.items()}, dtype=np.float64,
                                  reference=True)
        self.layers = self.engine.layers  # each with .params, .grads, .forward, .backward
        self._n: int | None = None  # examples in the last forward: backward's dL/dlogits must match them
        self.train(True)

    def inputs(self, images) -> np.ndarray:
        """uint8 images -> the float64 (N, C, H, W) input, normalised as the model was trained."""
        from tegaki.arrays import as_images
        from tegaki.engines.inputs import normalise

        return normalise(as_images(images, self.spec.input_shape), self.norm, self.spec.input_shape, dtype=np.float64)

    def train(self, on: bool = True) -> None:
        """Training mode (dropout drops, batch norm uses batch statistics) or evaluation mode."""
        self.engine._mode(on)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, K) for inputs x (N, C, H, W); the layers keep what backward needs."""
        x = np.asarray(x)
        want = tuple(self.spec.input_shape)
        if x.dtype.kind != "f" or x.shape[1:] != want or len(x) == 0:
            raise InputError(f"forward takes normalised float inputs of shape (N, {', '.join(map(str, want))}), got "
                             f"{x.dtype} {x.shape}; turn images into them with net.inputs(images)")
        self._n = len(x)
        return self.engine.forward(x.astype(np.float64, copy=False))

    @staticmethod
    def loss(logits: np.ndarray, labels) -> tuple[float, np.ndarray]:
        """Mean softmax cross-entropy, and its gradient with respect to the logits: (softmax - onehot) / N."""
        from tegaki.arrays import as_labels
        from tegaki.engines.numpy_layers import cross_entropy

        z = np.asarray(logits)
        if z.ndim != 2 or z.dtype.kind not in "fiu" or len(z) == 0:
            raise InputError(f"loss takes the logits forward returned, (N, classes), got {z.dtype} {z.shape}")
        return cross_entropy(z.astype(np.float64, copy=False), as_labels(labels, len(z), z.shape[1], "labels"))

    def backward(self, dlogits: np.ndarray) -> np.ndarray:
        """Backpropagate dL/dlogits through every layer (each fills .grads); returns dL/dinput."""
        d = np.asarray(dlogits)
        want = (self._n, self.spec.num_classes)
        if want[0] is None:
            raise InputError("backward needs a forward first (the layers keep what it computed)")
        if d.shape != want or d.dtype.kind != "f":
            raise InputError(f"backward takes dL/dlogits shaped like the last forward's logits {want}, got "
                             f"{d.dtype} {d.shape}; pass the gradient loss returned")
        return self.engine.backward(d.astype(np.float64, copy=False), need_input_grad=True)

    def step(self, lr: float) -> None:
        """One plain gradient-descent step on every parameter: p <- p - lr * dL/dp."""
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) or not 0 < lr < float("inf"):
            raise InputError(f"step takes a positive learning rate such as 0.1, got {lr!r}")
        for layer in self.layers:
            for k, p in layer.params.items():
                p -= lr * layer.grads[k]

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every learned array by name ("dense1.weight" ...): the live arrays, not copies."""
        return {f"{s.name}.{k}": layer.params[k] for s, layer in zip(self.spec.layers, self.layers)
                for k in layer.params}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """dL/dparam for every learned array, after backward."""
        return {f"{s.name}.{k}": layer.grads[k] for s, layer in zip(self.spec.layers, self.layers)
                for k in layer.grads}


def gradcheck(net: NumpyNet, x, labels, eps: float = 1e-6, per_param: int = 6, seed: int = 0) -> dict[str, float]:
    """Backpropagation's gradient against central finite differences, (L(p + eps) - L(p - eps)) / 2 eps, at
    `per_param` random entries of every parameter; returns the largest relative error per parameter
    (below 1e-6 means the backward pass is right). Runs in evaluation mode (no dropout)."""
    if not isinstance(net, NumpyNet):
        raise TegakiError(f"gradcheck takes a NumpyNet, got {type(net).__name__}; pass model.numpy_net() "
                          "(or tg.NumpyNet(spec))")
    if not (isinstance(eps, (int, float)) and 0 < eps < 1) or isinstance(per_param, bool) \
            or not isinstance(per_param, int) or per_param < 1:
        raise TegakiError(f"gradcheck needs eps in (0, 1) and per_param >= 1, got eps={eps!r}, per_param={per_param!r}")
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        raise TegakiError("gradcheck needs at least one input")
    net.train(False)
    try:
        _, d = net.loss(net.forward(x), labels)
        net.backward(d)
        analytic = {k: g.copy() for k, g in net.grads.items()}
        rng = np.random.default_rng(seed)
        out = {}
        for name, p in net.params.items():
            worst = 0.0
            for i in rng.choice(p.size, min(per_param, p.size), replace=False):
                idx = np.unravel_index(i, p.shape)
                keep = p[idx]
                p[idx] = keep + eps
                up = net.loss(net.forward(x), labels)[0]
                p[idx] = keep - eps
                down = net.loss(net.forward(x), labels)[0]
                p[idx] = keep
                numeric, a = (up - down) / (2 * eps), analytic[name][idx]
                # the difference quotient carries the loss's rounding, about 2e-16 |L| / eps (2e-10 for a loss
                # of 2.3): a gradient entry that small is judged against a floor where that noise reads 1e-6
                floor = max(1e-8, 1e6 * np.finfo(np.float64).eps * max(abs(up), abs(down), 1.0) / eps)
                worst = max(worst, abs(numeric - a) / max(abs(numeric), abs(a), floor))
            out[name] = worst
        return out
    finally:
        net.train(True)
