"""The Predictor: the one door through which the CLI, the HTTP API and the page use a model.

    p = Predictor.load("runs/2026-...-lenet")       # or Predictor.load(None): the bundled model
    probs = p.predict_proba(images_uint8)           # (N, 28, 28) MNIST-like -> (N, classes)
    result = p.predict_image("photo.jpg")           # any image: preprocessed like MNIST first
    result.label, result.confidence, result.top(3), result.input, result.steps
    p.predict_images(["a.png", "b.jpg"])            # many files, one batched network call
    p.feature_maps(result.input)                    # the first conv layers' maps for that input
    p.describe()                                    # spec, metrics and provenance, as plain data

The Predictor is safe to share between threads (the HTTP server does): it only reads its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tegaki import spec as S
from tegaki.data.preprocess import MAX_PIXELS, Preprocessed, to_mnist
from tegaki.engines import make_engine
from tegaki.errors import TegakiError
from tegaki.numerics import softmax
from tegaki.engines.inputs import normalise
from tegaki.run import Run, bundled_model_path, is_bundled, load_run


@dataclass
class Prediction:
    label: int | None  # None: no digit
    probabilities: list[float]
    input: np.ndarray | None = field(repr=False)  # the 28x28 uint8 image the network saw
    steps: dict = field(repr=False)  # the preprocessing steps, name -> 2-D float array in 0..1
    info: dict = field(default_factory=dict, repr=False)  # what preprocessing measured (data/preprocess.py)

    @property
    def confidence(self) -> float:
        return max(self.probabilities) if self.probabilities else 0.0

    @property
    def empty(self) -> bool:
        """No digit in the image (nothing was classified)."""
        return self.label is None

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        """The k most probable classes, best first: [(class index, probability), ...]."""
        order = np.argsort(-np.asarray(self.probabilities), kind="stable")[:k]
        return [(int(i), float(self.probabilities[i])) for i in order]


def _prediction(pre: Preprocessed, probs: np.ndarray | None) -> Prediction:
    """A preprocessed image and its class probabilities (None: no digit in it) as a Prediction."""
    if probs is None:
        return Prediction(None, [], None, pre.steps, pre.info)
    return Prediction(int(probs.argmax()), [float(p) for p in probs], pre.image, pre.steps, pre.info)


class Predictor:
    """A trained run, ready to classify: uint8 MNIST-style images, or any picture after preprocessing."""

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

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> the float32 (N, C, H, W) input the network was trained on."""
        return normalise(images, self.norm, self.spec.input_shape)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.engine.logits(self.prepare(images))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.logits(images).astype(np.float64))

    def preprocess(self, source, max_pixels: int = MAX_PIXELS, **kw) -> Preprocessed:
        return to_mnist(source, max_pixels=max_pixels, **kw)

    def predict_image(self, source, max_pixels: int = MAX_PIXELS, **kw) -> Prediction:
        """Any image (path, bytes, PIL image, array): preprocessed like MNIST, then classified.

        Raises TegakiError for an unreadable image; an image without ink is a Prediction with
        label None ("no digit").
        """
        return self.classify(self.preprocess(source, max_pixels=max_pixels, **kw))

    def classify(self, pre: Preprocessed) -> Prediction:
        """The prediction for an already preprocessed image."""
        return _prediction(pre, None if pre.empty else self.predict_proba(pre.image[None])[0])

    def predict_images(self, sources, batch_size: int = 500) -> list[Prediction | TegakiError]:
        """Many images: each preprocessed, all classified in batches; a file that cannot be read
        gives its TegakiError in its place instead of stopping the others."""
        pres: list[Preprocessed | TegakiError] = []
        for src in sources:
            try:
                pres.append(self.preprocess(src))
            except TegakiError as e:
                pres.append(e)
        full = [i for i, p in enumerate(pres) if isinstance(p, Preprocessed) and not p.empty]
        probs = np.zeros((0, len(self.classes)))
        if full:
            imgs = np.stack([pres[i].image for i in full])  # (N, 28, 28)
            probs = np.concatenate([self.predict_proba(imgs[j:j + batch_size]) for j in range(0, len(imgs), batch_size)])
        out: list[Prediction | TegakiError] = []
        row = {i: k for k, i in enumerate(full)}
        for i, p in enumerate(pres):
            out.append(p if isinstance(p, TegakiError) else _prediction(p, probs[row[i]] if i in row else None))
        return out

    # looking inside ------------------------------------------------------------------------
    def conv_blocks(self, limit: int = 2) -> list[tuple[str, str]]:
        """The first `limit` conv layers, each with the layer whose output shows its maps best:
        the conv's output after its batch norm and activation, before any pooling."""
        layers = self.spec.layers
        out = []
        for i, layer in enumerate(layers):
            if isinstance(layer, S.Conv2d):
                j = i
                while j + 1 < len(layers) and isinstance(layers[j + 1], (S.BatchNorm, S.Activation)) \
                        and not isinstance(layers[j + 1], S.Softmax):
                    j += 1
                out.append((layer.name, layers[j].name))
                if len(out) == limit:
                    break
        return out

    def feature_maps(self, image: np.ndarray, limit: int = 2) -> list[tuple[str, str, np.ndarray]]:
        """The feature maps of the first `limit` conv layers for one (28, 28) uint8 input:
        [(conv layer, layer read, maps (C, H, W) float32), ...]; empty for a network without convs."""
        blocks = self.conv_blocks(limit)
        if not blocks:
            return []
        acts = self._looking_engine().activations(self.prepare(np.asarray(image)[None]))
        return [(conv, read, np.asarray(acts[read][0], np.float32)) for conv, read in blocks]

    def _looking_engine(self):
        """An engine that can show every layer's output: this one, or (for inference-only engines
        such as onnx) a torch engine with the same weights, built once."""
        if self.engine.has_activations:
            return self.engine
        if getattr(self, "_torch", None) is None:
            self._torch = make_engine("torch", self.spec, self.run.weights)
        return self._torch

    def describe(self) -> dict:
        """What this model is, as plain data: spec summary, metrics, data provenance, command."""
        spec, meta = self.spec, self.run.meta
        layers = []
        for layer, shape, n in zip(spec.layers, spec.shapes(), spec.layer_params()):
            layers.append({"name": layer.name, "type": layer.type, "output_shape": list(shape), "params": n})
        data = meta.get("data", {})
        return {
            "name": spec.name, "description": spec.description,
            "path": str(self.run.path) if self.run.path else None,
            "bundled": is_bundled(self.run.path),
            "engine": self.engine_name, "classes": list(self.classes), "input_shape": list(spec.input_shape),
            "parameters": spec.num_params(), "layers": layers,
            "preprocessing": meta.get("preprocessing", {}),
            "metrics": self.run.metrics,
            "data": {k: data.get(k) for k in ("dataset", "source", "verified", "images") if k in data},
            "training": meta.get("config", {}), "seed": meta.get("seed"),
            "command": meta.get("command"), "versions": meta.get("versions", {}),
        }
