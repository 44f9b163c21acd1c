"""The Predictor: the one door through which the CLI, the HTTP API and the page use a model.

    p = Predictor.load("runs/2026-...-lenet")       # or Predictor.load(None): the bundled model
    probs = p.predict_proba(images_uint8)           # (N, 28, 28) MNIST-like -> (N, classes)
    result = p.predict_image("photo.jpg")           # any image: preprocessed like MNIST first
    result.label, result.confidence, result.top(3), result.input, result.steps
    result.status, result.score                     # "digit" | "not sure" | "not a digit", and why
    p.predict_images(["a.png", "b.jpg"])            # many files, one batched network call
    n = p.read_number("meter.jpg")                  # several digits: n.text "2026", n.digits[i].box ...
    p.feature_maps(result.input)                    # the first conv layers' maps for that input
    p.describe()                                    # spec, metrics and provenance, as plain data

Probabilities are calibrated: softmax(logits / T) with the run's temperature T (model.json's
"calibration", tegaki/calibration.py; T = 1 for a run without one), whatever the engine. Each
Prediction carries `status`: "not a digit" when the input is nothing the model knows (its
out-of-distribution score is below the run's threshold, or the image is empty), "not sure" when it
is borderline or the calibrated confidence is under one half, else "digit". The label is kept in
every case, so a caller can still show the best guess.

The Predictor is safe to share between threads (the HTTP server does): it only reads its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tegaki import spec as S
from tegaki.calibration import digit_score
from tegaki.calibration import status as status_of
from tegaki.data.preprocess import MAX_PIXELS, Preprocessed, from_ink, to_mnist
from tegaki.data.segment import MAX_DIGITS, cut_candidates, find_digits, median_height
from tegaki.engines import make_engine
from tegaki.inspect import block_end
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
    status: str = "digit"  # "digit" | "not sure" | "not a digit" (tegaki/calibration.py)
    score: float | None = None  # the out-of-distribution score (higher: more digit-like); None: empty

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


@dataclass
class Digit:
    """One digit of a number: where it is, and what the network read there."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the given image's pixels, x1/y1 exclusive
    label: int
    probabilities: list[float]
    status: str  # "digit" | "not sure" | "not a digit"
    input: np.ndarray = field(repr=False)  # the 28x28 uint8 image the network saw

    @property
    def confidence(self) -> float:
        return max(self.probabilities)


@dataclass
class Number:
    """The digits found in an image, left to right (tegaki/data/segment.py)."""

    text: str  # the digits' class names joined, "" when none was found
    digits: list[Digit]
    note: str | None = None  # e.g. "too many marks (40): read the first 12"

    @property
    def several(self) -> bool:
        """Whether this reads as a number of several digits: two or more found, and at most a quarter
        of them "not a digit" (the pieces of a shoe or of a scribble are mostly that). Where it does
        not, the whole image's read (one digit, or "not a digit") is the answer."""
        rejected = sum(d.status == "not a digit" for d in self.digits)
        return len(self.digits) >= 2 and 4 * rejected <= len(self.digits)

    def as_dict(self, classes) -> dict:
        """As plain data: the API's "number" field, and `tegaki predict`'s JSON."""
        return {"text": self.text, "note": self.note, "digits": [
            {"box": list(d.box), "label": d.label, "name": str(classes[d.label]), "confidence": d.confidence,
             "status": d.status, "probabilities": d.probabilities} for d in self.digits]}


def _prediction(pre: Preprocessed, probs: np.ndarray | None, score: float | None = None,
                calibration: dict | None = None) -> Prediction:
    """A preprocessed image, its class probabilities (None: no digit in it) and out-of-distribution
    score as a Prediction."""
    if probs is None:
        return Prediction(None, [], None, pre.steps, pre.info, status="not a digit")
    verdict = status_of(score, float(probs.max()), calibration)
    return Prediction(int(probs.argmax()), [float(p) for p in probs], pre.image, pre.steps, pre.info,
                      status=verdict, score=None if score is None else float(score))


def _uncut(groups: list, reads: dict) -> list:
    """The groups, with the parts of a cut group put back together where the network reads the
    whole as a sure digit (a wide digit, not two touching ones), unless it reads every part as a
    digit at least as sure."""
    parts: dict[int, list] = {}
    for g in groups:
        if g.whole is not None:
            parts.setdefault(id(g.whole), []).append(g)

    def keep_whole(w) -> bool:
        (q, status), cut = reads[id(w)], [reads[id(g)] for g in parts[id(w)]]
        return status == "digit" and not all(s == "digit" and p.max() >= q.max() for p, s in cut)

    out = []
    for g in groups:
        w = g.whole
        if w is not None and keep_whole(w):
            if not out or out[-1] is not w:
                out.append(w)
        else:
            out.append(g)
    return out


def _checked(groups: list, cands: list, reads: dict) -> list:
    """Each group, or the two parts of one of its cuts where the network reads the whole as unsure
    (or not a digit) and both parts as sure digits (the surest such cut)."""
    out = []
    for g, pairs in zip(groups, cands):
        best, sure = None, 0.0
        for a, b in pairs:  # only the unsure groups have any
            (qa, sa), (qb, sb) = reads[id(a)], reads[id(b)]
            if sa == sb == "digit" and min(qa.max(), qb.max()) > sure:
                best, sure = (a, b), float(min(qa.max(), qb.max()))
        out += list(best) if best else [g]
    return out


CHUNK = 32768  # images made float at a time by Predictor.logits (100 MB for MNIST's size)


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
        return cls(cls.find_run(ref), engine=engine, device=device)

    @staticmethod
    def find_run(ref: str | Path | None = None) -> Run:
        """The run a Predictor.load(ref) would use (None: the bundled model), checked and loaded."""
        if ref is None:
            ref = bundled_model_path()
            if ref is None:
                raise TegakiError("no model named and no bundled model installed; pass --model RUN_FOLDER")
        return load_run(ref)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> the float32 (N, C, H, W) input the network was trained on."""
        return normalise(images, self.norm, self.spec.input_shape)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The network's raw logits (before the temperature). Images are made float CHUNK at a time: a
        large test set (a million digits) costs its own uint8 bytes, not four times them again."""
        if len(images) <= CHUNK:
            return self.engine.logits(self.prepare(images))
        return np.concatenate([self.engine.logits(self.prepare(images[i:i + CHUNK]))
                               for i in range(0, len(images), CHUNK)])

    @property
    def calibration(self) -> dict | None:
        """The run's calibration record (model.json), or None for a run without one."""
        return self.run.meta.get("calibration")

    @property
    def temperature(self) -> float:
        return float((self.calibration or {}).get("temperature", 1.0))

    def calibrated(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits -> (calibrated probabilities softmax(logits / T), out-of-distribution scores)."""
        z, t = np.asarray(logits, np.float64), self.temperature
        return softmax(z / t), digit_score(z, t, (self.calibration or {}).get("ood"))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities: softmax(logits / T)."""
        return softmax(np.asarray(self.logits(images), np.float64) / self.temperature)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """The out-of-distribution score of each image (higher: more like the training digits)."""
        return self.calibrated(self.logits(images))[1]

    def status(self, images: np.ndarray) -> list[str]:
        """"digit" | "not sure" | "not a digit" for each uint8 (N, 28, 28) image."""
        probs, score = self.calibrated(self.logits(images))
        return [status_of(float(s), float(p.max()), self.calibration) for p, s in zip(probs, score)]

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
        if pre.empty:
            return _prediction(pre, None)
        return self.from_logits(pre, self.logits(pre.image[None]))

    def from_logits(self, pre: Preprocessed, logits: np.ndarray) -> Prediction:
        """The prediction for a preprocessed image whose raw logits (1, K) were computed already (the
        server reads them from the same forward pass as the feature maps): calibrated, with its status."""
        probs, score = self.calibrated(logits)
        return _prediction(pre, probs[0], score[0], self.calibration)

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
        probs, score = np.zeros((0, len(self.classes))), np.zeros(0)
        if full:
            imgs = np.stack([pres[i].image for i in full])  # (N, 28, 28)
            z = np.concatenate([self.logits(imgs[j:j + batch_size]) for j in range(0, len(imgs), batch_size)])
            probs, score = self.calibrated(z)
        out: list[Prediction | TegakiError] = []
        row = {i: k for k, i in enumerate(full)}
        for i, p in enumerate(pres):
            if isinstance(p, TegakiError):
                out.append(p)
            else:
                out.append(_prediction(p, probs[row[i]], score[row[i]], self.calibration) if i in row
                           else _prediction(p, None))
        return out

    # whole numbers ---------------------------------------------------------------------------
    def read_number(self, source, max_digits: int = MAX_DIGITS, max_pixels: int = MAX_PIXELS) -> Number:
        """The digits written in an image (path, bytes, PIL image, array), left to right: a Number
        with .text ("2026") and .digits (box, label, probabilities, status each). A single digit is
        a Number of one digit; an image without ink one of none."""
        return self.read_numbers([self.preprocess(source, max_pixels=max_pixels)], max_digits)[0]

    def read_numbers(self, pres: list, max_digits: int = MAX_DIGITS) -> list[Number]:
        """The Number in each already preprocessed image (Preprocessed or Prediction: anything with
        .steps["ink"] and .info). Every digit of every image is classified in one batched call; a
        second one reads the parts of the wide groups read as unsure (perhaps touching digits), if any."""
        found = []
        for pre in pres:
            ink = pre.steps.get("ink")
            groups, note = find_digits(ink, max_digits) if ink is not None and ink.any() else ([], None)
            found.append((pre, groups, note))
        crops, reads = {}, {}
        wholes = list({id(g.whole): g.whole for _, groups, _ in found for g in groups if g.whole is not None}.values())
        self._read([g for _, groups, _ in found for g in groups] + wholes, crops, reads)
        found = [(pre, _uncut(groups, reads), note) for pre, groups, note in found]
        cands = [[cut_candidates(g, median_height(groups)) if reads[id(g)][1] != "digit" else [] for g in groups]
                 for _, groups, _ in found]
        self._read([p for c in cands for pairs in c for pair in pairs for p in pair], crops, reads)
        return [self._number(pre, _checked(groups, c, reads), note, crops, reads, max_digits)
                for (pre, groups, note), c in zip(found, cands)]

    def _read(self, groups: list, crops: dict, reads: dict) -> None:
        """Make each group MNIST-like and classify them all in one call: crops and reads by id."""
        if not groups:
            return
        for g in groups:
            crops[id(g)] = from_ink(g.ink).image
        probs, score = self.calibrated(self.logits(np.stack([crops[id(g)] for g in groups])))
        for g, q, z in zip(groups, probs, score):
            reads[id(g)] = (q, status_of(float(z), float(q.max()), self.calibration))

    def _number(self, pre, groups, note, crops, reads, max_digits: int) -> Number:
        """The groups read (boxes scaled from the ink map to the given image's pixels) as a Number."""
        if len(groups) > max_digits:
            note, groups = f"too many marks ({len(groups)}): read the first {max_digits}", groups[:max_digits]
        ink = pre.steps.get("ink")
        shape = ink.shape if ink is not None else (1, 1)
        size = pre.info.get("source_size") or shape
        sy, sx = size[0] / shape[0], size[1] / shape[1]
        digits = []
        for g in groups:
            x0, y0, x1, y1 = g.box
            box = (int(x0 * sx), int(y0 * sy), min(size[1], int(np.ceil(x1 * sx))), min(size[0], int(np.ceil(y1 * sy))))
            q, status = reads[id(g)]
            digits.append(Digit(box, int(q.argmax()), [float(v) for v in q], status, crops[id(g)]))
        return Number("".join(str(self.classes[d.label]) for d in digits), digits, note)

    # looking inside ------------------------------------------------------------------------
    def conv_blocks(self, limit: int = 2) -> list[tuple[str, str]]:
        """The first `limit` conv layers, each with the layer whose output shows its maps best:
        the conv's output after its batch norm and activation, before any pooling."""
        convs = [l.name for l in self.spec.layers if isinstance(l, S.Conv2d)][:limit]
        return [(c, block_end(self.spec, c, tail=(S.BatchNorm, S.Activation))) for c in convs]

    def feature_maps(self, image: np.ndarray, limit: int = 2) -> list[tuple[str, str, np.ndarray]]:
        """The feature maps of the first `limit` conv layers for one (28, 28) uint8 input:
        [(conv layer, layer read, maps (C, H, W) float32), ...]; empty for a network without convs."""
        return self.maps_and_logits(image, limit)[0]

    def maps_and_logits(self, image: np.ndarray, limit: int = 2) -> tuple[list, np.ndarray | None]:
        """feature_maps and the raw logits (1, K) from the same forward pass (None without conv layers)."""
        blocks = self.conv_blocks(limit)
        if not blocks:
            return [], None
        acts = self._looking_engine().activations(self.prepare(np.asarray(image)[None]))
        maps = [(conv, read, np.asarray(acts[read][0], np.float32)) for conv, read in blocks]
        return maps, np.asarray(acts[self.spec.layers[-1].name], np.float64)  # the softmax is left out

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
            "metrics": self.run.metrics, "calibration": self.calibration,
            "data": {k: data.get(k) for k in ("dataset", "source", "verified", "images") if k in data},
            "training": meta.get("config", {}), "seed": meta.get("seed"),
            "command": meta.get("command"), "versions": meta.get("versions", {}),
        }
