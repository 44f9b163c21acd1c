"""Engines interpret a Spec. Each offers the same interface, written down as `Engine` below:

    engine = make_engine("torch" | "numpy" | "onnx", spec, weights, device="cpu")
    engine.logits(x)            (N, C, H, W) float32, normalised -> (N, classes) logits
    engine.activations(x)       every layer's output, by layer name (only=NAME: that one's, computing no further)
    engine.get_weights() / set_weights(w)          dict "<layer>.<param>" -> np.ndarray
    engine.prepare(images_uint8, labels, norm) -> data;  engine.take(data, idx) -> (x, y)
    engine.prepare(images_uint8, labels, norm, targets) -> data; take -> (x, y, targets)   (distillation:
        targets are teachers' probabilities; configure(..., distill_weight, distill_temperature) mixes them in)
    engine.configure(optimizer, lr, ...); tune(precision, compile); set_lr(lr); seed(s); train_step(x, y[, targets])
    engine.reset_stats(); read_stats() -> (mean loss, accuracy) since the reset
    engine.evaluate(data) -> (mean loss, accuracy, logits)
    engine.optimizer_state() / load_optimizer_state(arrays, meta)   (checkpoints)

Same spec + same weights = same outputs, whichever engine. What an engine can do is said by
three flags, class attributes of each engine, so callers never probe with hasattr:

    trainable        configure, tune, train_step ... work (torch, numpy); else they raise TegakiError
    has_gradients    input_gradient works (saliency maps)
    has_activations  activations works (looking inside)

The "onnx" engine (engines/onnx_engine.py, ONNX Runtime) is for inference only: all three are False.
The input normalisation every engine's `prepare` applies is `normalise`, in engines/inputs.py.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from tegaki.errors import TegakiError

ENGINES = ("torch", "numpy", "onnx")
TRAINABLE = ("torch", "numpy")  # the engines that can train (those whose class has trainable = True)


@runtime_checkable
class Engine(Protocol):
    """What every engine provides. Methods an engine cannot carry out raise TegakiError (see the flags)."""

    name: str  # "torch", "numpy", "onnx"
    device: Any  # where it computes: "cpu", or the torch engine's torch.device
    precision: str  # the training arithmetic: "fp32", "bf16" (torch, mixed) or "fp64" (numpy gradient checks)
    trainable: bool
    has_gradients: bool
    has_activations: bool
    spec: Any  # the tegaki.spec.Spec it interprets

    # weights
    def get_weights(self) -> dict[str, np.ndarray]: ...
    def set_weights(self, weights: dict[str, np.ndarray]) -> None: ...

    # data and inference
    def prepare(self, images: np.ndarray, labels: np.ndarray | None, norm: dict,
                targets: np.ndarray | None = ...) -> Any: ...
    def take(self, data, idx: np.ndarray) -> Any: ...
    def logits(self, x, batch_size: int = ...) -> np.ndarray: ...
    def activations(self, x, only: str | None = ...) -> dict[str, np.ndarray]: ...
    def input_gradient(self, x: np.ndarray, target: np.ndarray) -> np.ndarray: ...
    def evaluate(self, data, batch_size: int = ...) -> tuple[float, float, np.ndarray]: ...

    # training
    def configure(self, optimizer: str, lr: float, momentum: float = ..., weight_decay: float = ...,
                  label_smoothing: float = ..., distill_weight: float = ..., distill_temperature: float = ...) -> None: ...
    def tune(self, precision: str = ..., compile: bool = ...) -> str: ...
    def set_lr(self, lr: float) -> None: ...
    def seed(self, seed: int) -> None: ...
    def train_step(self, x, y, targets=...) -> None: ...
    def reset_stats(self) -> None: ...
    def read_stats(self) -> tuple[float, float]: ...
    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict]: ...
    def load_optimizer_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None: ...


def engine_members() -> list[str]:
    """The names every engine must have: Engine's attributes and methods."""
    methods = [k for k, v in vars(Engine).items() if callable(v) and not k.startswith("_")]
    return [*Engine.__annotations__, *methods]


def make_engine(name: str, spec, weights=None, device: str = "cpu") -> Engine:
    if name == "torch":
        from tegaki.engines.torch_engine import TorchEngine

        return TorchEngine(spec, weights, device=device)
    if name == "numpy":
        try:
            from tegaki.engines.numpy_engine import NumpyEngine
        except ImportError:
            raise TegakiError("the numpy engine is not available in this version; use --engine torch") from None
        if device not in ("cpu", "auto"):
            raise TegakiError(f"the numpy engine runs on the CPU only; drop --device {device}")
        return NumpyEngine(spec, weights)
    if name == "onnx":
        if device not in ("cpu", "auto"):
            raise TegakiError(f"the onnx engine runs on the CPU here; drop --device {device}")
        import importlib.util

        missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            raise TegakiError(f"--engine onnx needs {' and '.join(missing)}: pip install 'tegaki[onnx]' "
                              "(or use --engine torch)")
        from tegaki.engines.onnx_engine import OnnxEngine

        return OnnxEngine(spec, weights)
    raise TegakiError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
