"""Engines interpret a Spec. Each offers the same interface:

    engine = make_engine("torch" | "numpy" | "onnx", spec, weights, device="cpu")
    engine.logits(x)            (N, C, H, W) float32, normalised -> (N, classes) logits
    engine.activations(x)       every layer's output, by layer name
    engine.get_weights() / set_weights(w)          dict "<layer>.<param>" -> np.ndarray
    engine.prepare(images_uint8, labels, norm) -> data;  engine.take(data, idx) -> (x, y)
    engine.configure(optimizer, lr, ...); set_lr(lr); seed(s); train_step(x, y)
    engine.reset_stats(); read_stats() -> (mean loss, accuracy) since the reset
    engine.evaluate(data) -> (mean loss, accuracy, logits)
    engine.optimizer_state() / load_optimizer_state(arrays, meta)   (checkpoints)

Same spec + same weights = same outputs, whichever engine. The "onnx" engine (tegaki/export.py,
ONNX Runtime) is for inference only: logits and evaluate, no training or activations.
"""

from __future__ import annotations

from tegaki.errors import TegakiError

ENGINES = ("torch", "numpy", "onnx")
TRAINABLE = ("torch", "numpy")  # the engines that can train


def make_engine(name: str, spec, weights=None, device: str = "cpu"):
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
        from tegaki.export import OnnxEngine

        return OnnxEngine(spec, weights)
    raise TegakiError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
