"""The Predictor: the one door through which the CLI, the HTTP API and the page use a model.

    p = Predictor.load("runs/2026-...-lenet")       # or Predictor.load(None): the bundled model
    probs = p.predict_proba(images_uint8)           # (N, 28, 28) MNIST-like -> (N, classes)
    result = p.predict_image("photo.jpg")           # any image: preprocessed like MNIST first
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from tegaki.data.preprocess import Preprocessed, to_mnist
from tegaki.engines import make_engine
from tegaki.errors import TegakiError
from tegaki.run import Run, load_run


def bundled_model_path() -> Path | None:
    p = Path(str(resources.files("tegaki").joinpath("model")))
    return p if (p / "model.json").is_file() else None


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Prediction:
    label: int | None  # None: no digit
    probabilities: list[float]
    input: np.ndarray | None  # the 28x28 uint8 image the network saw
    steps: dict

    @property
    def confidence(self) -> float:
        return max(self.probabilities) if self.probabilities else 0.0


class Predictor:
    def __init__(self, run: Run, engine: str = "torch", device: str = "cpu"):
        self.run = run
        self.spec = run.spec
        self.engine = make_engine(engine, run.spec, run.weights, device=device)
        self.engine_name = engine
        self.norm = run.norm
        self.classes = run.classes

    @classmethod
    def load(cls, ref: str | Path | None = None, engine: str = "torch", device: str = "cpu") -> "Predictor":
        if ref is None:
            ref = bundled_model_path()
            if ref is None:
                raise TegakiError("no model named and no bundled model installed; pass --model RUN_FOLDER")
        return cls(load_run(ref), engine=engine, device=device)

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> the float32 (N, C, H, W) input the network was trained on."""
        images = np.asarray(images)
        x = images.astype(np.float32) / 255.0
        x = (x - np.float32(self.norm["mean"])) / np.float32(self.norm["std"])
        return x.reshape(len(images), *self.spec.input_shape)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.engine.logits(self.normalise(images))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.logits(images).astype(np.float64))

    def preprocess(self, source) -> Preprocessed:
        return to_mnist(source)

    def predict_image(self, source) -> Prediction:
        """Any image (path, bytes, PIL image, array): preprocessed like MNIST, then classified."""
        pre = to_mnist(source)
        if pre.empty:
            return Prediction(None, [], None, pre.steps)
        probs = self.predict_proba(pre.image[None])[0]
        return Prediction(int(probs.argmax()), [float(p) for p in probs], pre.image, pre.steps)
