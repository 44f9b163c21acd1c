"""The NumPy engine: the glass box. It interprets a Spec with layers written out by hand.

    engine = NumpyEngine(spec, weights)                    # float32, for training and inference
    engine = NumpyEngine(spec, weights, dtype=np.float64)  # for gradient checks
    engine = NumpyEngine(spec, weights, reference=True)    # the plain layers, not the speed-tuned ones

It offers exactly the interface of every engine (see engines/__init__.py), so `tegaki train
--engine numpy` runs the shared training loop (train.py) with its schedules, early stopping and
checkpoints. One training step is the whole of backpropagation:

    logits = self.forward(x)                      # each layer keeps what its backward needs
    loss, dz = cross_entropy(logits, y)           # dz = dL/dlogits = (softmax(logits) - target) / N
    for layer in reversed(self.layers[first:]):   # the chain rule, one layer at a time:
        dz = layer.backward(dz)                   # dL/dinput from dL/doutput; dL/dparams into layer.grads
    self.opt.step([layer.grads[k] for layer, k in self.slots])

In a network with branches (spec.sources()), each layer reads the outputs it names, and the
backward pass keeps dL/d(output) per layer: a joining layer (add, concat) hands one gradient to
each input, and an output read by several layers receives the SUM of their gradients (the
fan-out rule; docs/backprop.md works it through for a residual block).

These are the lines of `train_step` and `backward` below. `first` is the first layer with
weights: nothing below it learns, so the loop stops there, and that layer skips computing its
dL/dinput (`need_dx`); saliency maps ask for the input's gradient and set first = 0.

The layers are in numpy_layers.py, the optimisers in numpy_optim.py. Weights are the spec's
"<layer>.<param>" arrays in PyTorch layouts, so runs move freely between the two engines.

Speed: the matrix products run in NumPy's BLAS, on every core by default. On a machine busy with
other work, one BLAS thread is often much faster (OPENBLAS_NUM_THREADS=1, or threadpoolctl);
bench/bench_engines.py measures both engines either way.
"""

from __future__ import annotations

import numpy as np

from tegaki import spec as S
from tegaki.engines.inputs import normalise
from tegaki.engines.numpy_layers import Dropout, Layer, build_layer, cross_entropy, distill_loss
from tegaki.engines.numpy_optim import OTHER_STATE, Optimizer, make_optimizer
from tegaki.errors import TegakiError


class NumpyEngine:
    name = "numpy"
    device = "cpu"
    trainable = True
    has_gradients = True
    has_activations = True

    def __init__(self, spec: S.Spec, weights: dict[str, np.ndarray] | None = None, dtype=np.float32,
                 reference: bool = False):
        self.spec = spec
        self.batch_cap = spec.inference_batch_cap()  # inference batches shrink for networks with huge maps
        self.dtype = np.dtype(dtype)
        self.precision = "fp64" if self.dtype == np.float64 else "fp32"
        # reference=True: the plain versions of the speed-tuned layers (Conv2dReference, MaxPoolReference)
        self.layers: list[Layer] = [build_layer(l, s, self.dtype, reference)
                                    for l, s in zip(spec.layers, spec.in_shapes())]
        # (layer, key) of every learned array, in the spec's order (torch's parameters() order)
        self.slots = [(layer, k) for layer in self.layers for k in layer.params]
        # backpropagation can stop at the first layer with weights: nothing below it learns
        self.first = next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers) - 1)
        # the names each layer reads, when some layer reads another than the previous one's output
        self.wiring = spec.sources() if spec.branched else None
        self.set_weights(weights if weights is not None else spec.init_weights(0))
        self.opt: Optimizer | None = None
        self.label_smoothing = 0.0
        self.distill = (0.0, 1.0)
        self.seed(0)
        self.reset_stats()

    # weights -----------------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        out = {}
        for layer in self.layers:
            for k, v in (*layer.params.items(), *layer.buffers.items()):
                out[f"{layer.name}.{k}"] = v.copy()
        return out

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.spec.check_weights(weights)
        for layer in self.layers:
            for k, v in (*layer.params.items(), *layer.buffers.items()):
                v[...] = np.asarray(weights[f"{layer.name}.{k}"])  # in place: the optimiser holds these arrays

    # data ----------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray, labels: np.ndarray | None, norm: dict, targets: np.ndarray | None = None):
        """uint8 (N, H, W) images -> normalised (N, C, H, W) arrays in the engine's dtype; with `targets`,
        the teachers' (N, classes) probabilities, learnt beside the labels (distillation)."""
        x = normalise(images, norm, self.spec.input_shape, self.dtype)
        y = None if labels is None else np.asarray(labels, np.int64)
        return (x, y) if targets is None else (x, y, np.asarray(targets, self.dtype))

    def take(self, data, idx: np.ndarray):
        return tuple(a[idx] for a in data)

    # forward and backward ------------------------------------------------------------------------
    def _mode(self, training: bool) -> None:
        for layer in self.layers:
            layer.training = training

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.wiring is not None:
            return self.forward_all(x)[self.layers[-1].name]
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def forward_all(self, x: np.ndarray, upto: str | None = None) -> dict[str, np.ndarray]:
        """Every layer's output by name; each layer reads the outputs it names (or the previous one). With
        `upto`, the layers up to that one: none after it is run."""
        out, prev = {"input": x}, "input"
        for i, layer in enumerate(self.layers):
            src = self.wiring[i] if self.wiring is not None else (prev,)
            out[layer.name] = layer.forward(*(out[n] for n in src))
            prev = layer.name
            if prev == upto:
                break
        del out["input"]
        return out

    def backward(self, dz: np.ndarray, need_input_grad: bool = False) -> np.ndarray | None:
        """Backpropagation: dz = dL/dlogits through the layers in reverse; returns dL/dinput if asked.

        Training stops at the first layer with weights, since nothing below it learns, and that
        layer skips computing dL/dx for the same reason; saliency maps (need_input_grad) go all the way.
        """
        first = 0 if need_input_grad else self.first
        self.layers[self.first].need_dx = need_input_grad
        if self.wiring is None:
            for layer in reversed(self.layers[first:]):
                dz = layer.backward(dz)
            return dz
        grads = {self.layers[-1].name: dz}  # dL/d(output) of each layer, filled from the top down
        for i in range(len(self.layers) - 1, first - 1, -1):
            layer, src = self.layers[i], self.wiring[i]
            dx = layer.backward(grads.pop(layer.name))  # every reader of this output came later: all done
            if dx is None:
                continue
            for n, g in zip(src, dx if isinstance(dx, tuple) else (dx,)):
                grads[n] = grads[n] + g if n in grads else g  # the fan-out rule: gradients of a shared output add up
        return grads.get("input")

    # inference -------------------------------------------------------------------------------
    def _array(self, x) -> np.ndarray:
        if hasattr(x, "detach"):  # a torch tensor
            x = x.detach().cpu().numpy()
        return np.ascontiguousarray(x, self.dtype)

    def logits(self, x, batch_size: int = 500) -> np.ndarray:
        self._mode(False)
        batch_size = min(batch_size, self.batch_cap)
        out = [self.forward(self._array(x[i:i + batch_size])).copy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), self.dtype)

    def activations(self, x, only: str | None = None) -> dict[str, np.ndarray]:
        self._mode(False)
        out = self.forward_all(self._array(x), upto=only)
        if only is not None:
            out = {only: out[only]}
        return {k: np.array(v) for k, v in out.items()}  # copies: later calls must not change them

    def input_gradient(self, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """d logit[target] / d input, per example (for saliency maps)."""
        self._mode(False)
        logits = self.forward(self._array(x))
        onehot = np.zeros_like(logits)
        onehot[np.arange(len(logits)), np.asarray(target)] = 1.0  # d(sum of the chosen logits)/dlogits
        return np.ascontiguousarray(self.backward(onehot, need_input_grad=True))

    def evaluate(self, data, batch_size: int = 500) -> tuple[float, float, np.ndarray]:
        """(mean cross-entropy, accuracy, logits) over prepared data."""
        x, y = data[:2]
        logits = self.logits(x, batch_size)
        loss, _ = cross_entropy(logits, y)
        return loss, float((logits.argmax(axis=1) == y).mean()), logits.astype(np.float32, copy=False)

    # training ---------------------------------------------------------------------------------
    def configure(self, optimizer: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                  label_smoothing: float = 0.0, distill_weight: float = 0.0, distill_temperature: float = 1.0) -> None:
        params = [layer.params[k] for layer, k in self.slots]
        self.opt = make_optimizer(optimizer, params, lr, momentum, weight_decay)
        self.label_smoothing = label_smoothing
        self.distill = (distill_weight, distill_temperature)  # for batches that carry teachers' targets
        self.reset_stats()

    def tune(self, precision: str = "fp32", compile: bool = False) -> str:
        """The torch engine's speed options; here only the plain arithmetic ("auto" is it too)."""
        if precision == "bf16" or compile:
            raise TegakiError("bf16 precision and compile are torch engine options; drop them for --engine numpy")
        return self.precision

    def set_lr(self, lr: float) -> None:
        self.opt.lr = lr

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)  # dropout masks
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = self.rng

    def reset_stats(self) -> None:
        self._stats = [0.0, 0.0, 0]  # loss sum, correct, count

    def read_stats(self) -> tuple[float, float]:
        loss, correct, n = self._stats
        return loss / max(n, 1), correct / max(n, 1)

    def train_step(self, x, y, targets=None) -> None:
        if self.opt is None:
            raise TegakiError("configure the engine (optimizer, learning rate) before training it")
        self._mode(True)
        logits = self.forward(x)  # (N, K)
        if targets is None:
            loss, dz = cross_entropy(logits, y, self.label_smoothing)  # dz = dL/dlogits
        else:  # distillation: the labels and the teachers' softened probabilities
            loss, dz = distill_loss(logits, y, self.label_smoothing, targets, *self.distill)
        self.backward(dz)
        self.opt.step([layer.grads[k] for layer, k in self.slots])
        n = len(y)
        self._stats[0] += loss * n
        self._stats[1] += int((logits.argmax(axis=1) == y).sum())
        self._stats[2] += n

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The optimiser's state (numpy_optim.Optimizer.state_dict), marked as this engine's."""
        arrays, meta = self.opt.state_dict()
        return arrays, {"engine": "numpy", **meta}

    def load_optimizer_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if meta.get("engine") != "numpy":
            raise TegakiError(OTHER_STATE)
        self.opt.load_state_dict(arrays, meta)
