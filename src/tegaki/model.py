"""A network to build, train, look into and use from Python: the face of tegaki in a notebook.

    import tegaki as tg
    (x_train, y_train), (x_test, y_test) = tg.datasets.mnist.load_data()
    model = tg.Sequential([tg.Conv2d(20, 5), tg.MaxPool(2), tg.ReLU(), tg.Flatten(), tg.Dense(10), tg.Softmax()])
    model.summary()
    history = model.fit(x_train, y_train, epochs=1, validation_split=0.1)
    model.evaluate(x_test, y_test).plot_confusion()

A Sequential is a spec (tegaki.spec) plus, once trained or loaded, a run (tegaki.run.Run: weights,
normalisation, classes) and the Predictor that runs it. `fit` is tegaki.train.train in memory;
`save` writes the same run folder `tegaki train` writes, so every command reads it, and
`tg.load(path)` (or `tg.load("bundled")`) gives a model back. Nothing here is a second
implementation: each method is a few lines over the library's stages.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tegaki import spec as S
from tegaki.arrays import InputError, as_images, as_labels
from tegaki.errors import TegakiError, os_error_line

__all__ = ["Sequential", "History", "load"]


@dataclass
class History:
    """What `fit` returns: `history` is Keras-shaped ({"loss": [...], "accuracy": [...], "val_loss": ...});
    `rows` are the epoch table's rows; `plot()` draws the learning curves."""

    rows: list[dict]
    metrics: dict = field(default_factory=dict)
    interrupted: bool = False

    @property
    def history(self) -> dict[str, list[float]]:
        keys = {"loss": "train_loss", "accuracy": "train_acc", "val_loss": "valid_loss", "val_accuracy": "valid_acc",
                "lr": "lr"}
        return {k: [r[v] for r in self.rows] for k, v in keys.items()
                if self.rows and all(r.get(v) is not None for r in self.rows)}

    @property
    def epoch(self) -> list[int]:
        return [int(r["epoch"]) - 1 for r in self.rows]  # 0-based, as Keras counts

    def plot(self, title: str = ""):
        """Loss and accuracy per epoch (a matplotlib Figure; shown inline in Jupyter)."""
        from tegaki import figures

        return figures.learning_curves(self.rows, title=title)


class Sequential:
    """A stack of layers (tg.Conv2d, tg.MaxPool, tg.Dense, tg.ReLU, tg.Softmax ...) that trains and predicts.

    `input_shape` is (channels, height, width) or (features,); `classes` names the outputs (default
    "0".."9" for 10 outputs)."""

    def __init__(self, layers=(), input_shape=(1, 28, 28), name: str = "model", classes=None,
                 normalize: str = "standard"):
        recipe: dict = {}
        if isinstance(layers, S.Spec):  # a preset or spec file: its layers, input, normalisation and recipe
            spec = layers
            layers, input_shape, normalize, recipe = spec.layers, spec.input_shape, spec.normalize, dict(spec.train)
            name = spec.name if name == "model" else name
        if isinstance(layers, S.Layer) or not isinstance(layers, (list, tuple)):
            raise InputError(f"Sequential takes its layers as a list, got {type(layers).__name__}; "
                             "write tg.Sequential([tg.Flatten(), tg.Dense(10), ...])")
        self._layers = list(layers)
        self.input_shape = tuple(input_shape)
        self.name = name
        self.normalize = normalize  # "standard": (x/255 - mean) / std of the training images; "unit": x/255
        self._classes = list(classes) if classes is not None else None
        self._recipe = recipe
        self._spec: S.Spec | None = None
        self.run = None  # tegaki.run.Run once trained or loaded
        self._predictor = None
        self._rows: list[dict] = []  # the epoch table of every fit so far
        self._initial: dict | None = None  # the weights before training (for "filters before and after")

    # building ----------------------------------------------------------------------------------
    def add(self, layer: S.Layer) -> "Sequential":
        """Append a layer (before training); returns the model, so calls chain."""
        if self.run is not None:
            raise TegakiError("this model is trained; build a new Sequential to change its layers")
        if not isinstance(layer, S.Layer):
            raise TegakiError(f"add() takes a layer such as tg.Dense(10), got {layer!r}")
        self._layers.append(layer)
        self._spec = None
        return self

    @property
    def spec(self) -> S.Spec:
        """The network as a spec (shape-checked; raises a TegakiError naming the layer at fault)."""
        if self._spec is None:
            self._spec = S.Spec(input_shape=self.input_shape, layers=self._layers, name=self.name,
                                normalize=self.normalize, train=dict(self._recipe))
        return self._spec

    @property
    def layers(self) -> list[S.Layer]:
        return list(self.spec.layers)

    @property
    def classes(self) -> list[str]:
        if self.run is not None:
            return list(self.run.classes)
        k = self.spec.num_classes
        return self._classes or [str(i) for i in range(k)]

    def summary(self, print_fn=print) -> None:
        """Print each layer's output shape and parameter count (as Keras' summary does)."""
        print_fn(self.spec.summary())

    def plot(self, title: str = ""):
        """The network as a diagram (a matplotlib Figure)."""
        from tegaki import diagram

        return diagram.draw(self.spec, title=title)

    def compile(self, optimizer: str | None = None, lr: float | None = None, **options) -> "Sequential":
        """Set the training recipe (optional): optimizer (sgd, momentum, adam, adamw, adadelta), lr, and any
        `tegaki.train.TrainConfig` option (batch_size, epochs, schedule, weight_decay, label_smoothing,
        patience, augment ...). Checked now, so a typo fails here rather than in fit."""
        from tegaki.train import TrainConfig

        recipe = {**options, **({"optimizer": optimizer} if optimizer else {}), **({"lr": lr} if lr is not None else {})}
        spec = S.Spec(input_shape=self.input_shape, layers=self._layers, name=self.name, normalize=self.normalize,
                      train={**self._recipe, **recipe})
        TrainConfig.for_spec(spec)
        self._recipe, self._spec = {**self._recipe, **recipe}, spec
        return self

    # training ----------------------------------------------------------------------------------
    def fit(self, x, y, epochs: int | None = None, batch_size: int | None = None, validation_data=None,
            validation_split: float | None = None, engine: str | None = None, seed: int | None = None,
            verbose: int = 1, **options) -> History:
        """Train on arrays, in memory (no files): x images (uint8 0..255 or float 0..1), y labels.

        A second fit continues from the weights the first reached. Ctrl-C stops after the current
        step and keeps the model usable (with `ema=`, as the average so far). Returns a History."""
        from tegaki.train import TrainConfig, train

        spec = self.spec
        k = spec.num_classes
        ds, split = self._fit_data(x, y, validation_data, validation_split, k)
        cfg = TrainConfig.for_spec(spec, epochs=epochs, batch_size=batch_size, engine=engine, seed=seed,
                                   valid_size=0 if split is None else len(split[1]), dataset="arrays", **options)
        log = print if verbose else (lambda m: None)
        weights_before = self.run is not None
        earlier = [{**r, "epoch": int(r["epoch"])} for r in (self._history_rows() if weights_before else [])
                   if r.get("epoch") is not None]  # a loaded run's epochs count too (its CSV reads them as floats)
        res = train(spec, ds, cfg, None, log=log, split=split, bar_stream=sys.stderr if verbose else _Null(),
                    weights=self.run.weights if self.run is not None else None)
        self.run, self._predictor = res.run, None
        if not weights_before:
            self._initial = res.initial
        start = earlier[-1]["epoch"] if earlier else 0
        self._rows = earlier + [{**r, "epoch": start + r["epoch"]} for r in res.history]  # epochs go on, not 1, 2, 1
        if start and "epochs" in self.run.metrics:
            self.run.metrics = {**self.run.metrics, "epochs": start + int(self.run.metrics["epochs"])}
        return History(res.history, res.metrics, res.interrupted)

    def _fit_data(self, x, y, validation_data, validation_split, k):
        from tegaki.data.dataset import Dataset

        xs = as_images(x, self.input_shape, "x")
        ys = as_labels(y, len(xs), k, "y")
        split = None
        if validation_data is not None:
            if validation_split:
                raise InputError("give validation_data or validation_split, not both")
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise InputError("validation_data must be a pair (x_valid, y_valid)")
            xv = as_images(validation_data[0], self.input_shape, "validation_data[0]")
            yv = as_labels(validation_data[1], len(xv), k, "validation_data[1]")
            split = (np.arange(len(xs)), np.arange(len(xs), len(xs) + len(xv)))
            xs, ys = np.concatenate([xs, xv]), np.concatenate([ys, yv])
        elif validation_split:
            if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                    or not 0 < validation_split < 1:
                raise InputError(f"validation_split must be a fraction between 0 and 1, got {validation_split}")
            from tegaki.data.dataset import stratified_split

            split = stratified_split(ys, int(round(validation_split * len(ys))), 0)
        empty = np.zeros((0, *xs.shape[1:]), np.uint8)
        ds = Dataset("arrays", xs, ys, empty, np.zeros(0, np.int64), self.classes,
                     {"dataset": "arrays", "source": "arrays given to Sequential.fit"})
        return ds, split

    # using -------------------------------------------------------------------------------------
    @property
    def predictor(self):
        """The tegaki.predict.Predictor that runs this model (the door the CLI and the server use)."""
        if self.run is None:
            raise TegakiError("this model is not trained yet: call fit(x, y) first, or tg.load a run folder")
        if self._predictor is None:
            from tegaki.predict import Predictor

            self._predictor = Predictor(self.run)
        return self._predictor

    def predict_proba(self, x, batch_size: int = 2000) -> np.ndarray:
        """Class probabilities (N, K) for images x (uint8 0..255 or float 0..1, MNIST-style)."""
        xs = as_images(x, self.spec.input_shape, "x")
        _check_batch(batch_size)
        return np.concatenate([self.predictor.predict_proba(xs[i:i + batch_size])
                               for i in range(0, len(xs), batch_size)])

    def predict(self, x) -> np.ndarray:
        """Class numbers (N,) for images x."""
        return self.predict_proba(x).argmax(axis=1)

    def predict_image(self, source):
        """Any picture (a path, bytes, a PIL image or an array of any size, dark or light): preprocessed the
        MNIST way (cropped, centred by mass, 20x20 in 28x28), then classified; a tegaki.predict.Prediction."""
        return self.predictor.predict_image(source)

    def read_number(self, source):
        """The digits written in a picture, left to right: a tegaki.predict.Number with .text ("2026")
        and .digits (each one's box in the picture's pixels, label, probabilities and status)."""
        return self.predictor.read_number(source)

    def evaluate(self, x, y):
        """Accuracy, per-class report and confusion matrix on (x, y): an Evaluation with .accuracy,
        .confusion_matrix, .report(), .plot_confusion() and .plot_mistakes()."""
        from tegaki.evaluate import evaluate

        xs = as_images(x, self.spec.input_shape, "x")
        ys = as_labels(y, len(xs), self.spec.num_classes, "y")
        return evaluate(self.predictor, xs, ys, self.classes, keep_images=True)

    def features(self, x, layer: str | None = None, batch_size: int = 1000) -> np.ndarray:
        """A layer's outputs for images x, flattened to (N, features): the dense layer's activations that
        the nolearn post feeds to an SVM (default: the layer before the output)."""
        from tegaki.inspect import check_layer, penultimate

        name = check_layer(self.spec, layer) if layer else penultimate(self.spec)
        if name is None:
            raise TegakiError("this network has no hidden layer to take features from")
        _check_batch(batch_size)
        return self._inspector().features(as_images(x, self.spec.input_shape, "x"), [name], batch_size)[name]

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The learned arrays, "<layer>.<param>" -> array (PyTorch layouts)."""
        return dict(self.predictor.engine.get_weights())

    def torch_module(self):
        """The torch.nn.Module that runs this model (the same one predict uses: changing it changes the
        model). It takes normalised float inputs (N, C, H, W): (pixels / 255 - mean) / std with
        mean, std = model.run.norm["mean"], model.run.norm["std"], and returns logits."""
        p = self.predictor
        if p.engine_name != "torch":
            raise TegakiError("torch_module needs the torch engine")
        return p.engine.net

    def numpy_net(self):
        """This network as NumPy layers to drive by hand (forward, loss, backward, step; see tegaki.glassbox),
        starting from the trained weights, or the seeded initial ones before training."""
        from tegaki.glassbox import NumpyNet

        if self.run is None:
            return NumpyNet(self.spec)
        return NumpyNet(self.spec, self.weights, norm=self.run.norm)

    def save(self, path) -> Path:
        """Write a run folder (model.safetensors, model.json ...) that every tegaki command reads."""
        from tegaki.run import save_run
        from tegaki.train import occupied, prepare_out

        run = self.predictor.run
        run.weights = self.predictor.engine.get_weights()  # what torch_module() users may have changed
        if occupied(Path(path)):  # checked here too, to say it in Python's words (prepare_out names --out)
            raise TegakiError(f"{path} already exists and is not an empty folder; save to a new folder "
                              "(a run is never overwritten)")
        try:
            out = prepare_out(Path(path), self.name, "")
            save_run(out, run.spec, run.weights, run.meta, self._history_rows(), run.metrics,
                     initial=self.initial_weights())
        except OSError as e:  # a read-only folder, a full disk: one line, like every other bad input
            raise TegakiError(f"cannot save the model: {os_error_line(e)}") from None
        run.path = out
        return out

    # looking inside ---------------------------------------------------------------------------
    def initial_weights(self) -> dict | None:
        """The weights before training, when known (kept by fit, and by run folders)."""
        if self._initial is None and self.run is not None and self.run.path is not None:
            self._initial = self.run.initial_weights()
        return self._initial

    def _inspector(self):
        from tegaki.inspect import Inspector

        return Inspector(self.predictor)

    def plot_filters(self, layer: str | None = None):
        """A conv layer's filters before and after training (default: the first conv layer)."""
        from tegaki import figures
        from tegaki.inspect import check_layer, conv_layers

        convs = conv_layers(self.spec)
        if not convs:
            raise TegakiError(f"{self.name} has no conv layers, so it has no filters to show")
        name = check_layer(self.spec, layer) if layer else convs[0]
        return figures.filters(self.initial_weights(), self.weights, name)

    def plot_feature_maps(self, image):
        """The maps the first conv layers make of one image (28x28, as for predict; or a picture's path, bytes or PIL
        image, preprocessed as predict_image does)."""
        from tegaki import figures
        from tegaki.inspect import layer_shapes

        img = self._one_image(image)
        return figures.feature_maps(img, self._inspector().feature_maps(img), layer_shapes(self.spec),
                                    "feature maps")

    def plot_activations(self, image):
        """The hidden dense layers' and the output's activations for one image."""
        from tegaki import figures

        img = self._one_image(image)
        return figures.activations(self._inspector().dense_activations(img), self.classes, "activations")

    def plot_saliency(self, image):
        """Which pixels decide the predicted class: input gradient and occlusion, side by side."""
        from tegaki import figures

        img = self._one_image(image)
        look = self._inspector()
        top = int(look.probabilities(img)[0].argmax())
        return figures.attribution(img, look.saliency(img, top)[0, 0], look.occlusion(img, top),
                                   f"why {self.classes[top]}?", figures.OCCLUSION_NOTE)

    def _one_image(self, image) -> np.ndarray:
        """One 28x28 digit: an array as predict takes it, or a picture (path, bytes, PIL image) preprocessed the
        MNIST way, as predict_image and `tegaki inspect --image` do."""
        from PIL import Image

        if isinstance(image, (str, os.PathLike, bytes, Image.Image)):
            pre = self.predictor.preprocess(image)
            if pre.empty:
                raise InputError(f"{image if isinstance(image, (str, os.PathLike)) else 'the picture'}: no digit "
                                 "found (no ink); give a picture with a digit in it")
            return pre.image
        images = as_images(image, self.spec.input_shape, "image")
        if len(images) != 1:  # a batch: which one was meant? (the first was drawn without a word)
            raise InputError(f"give one image here, got {len(images)}; pick one, e.g. x[0]")
        return images[0]

    def _history_rows(self) -> list[dict]:
        if self._rows:
            return self._rows
        return self.run.history() if self.run is not None and self.run.path else []

    def __repr__(self) -> str:
        state = "trained" if self.run is not None else "untrained"
        return f"<tegaki.Sequential {self.name!r}: {len(self._layers)} layers, {state}>"


class _Null:
    def write(self, s):
        pass

    def flush(self):
        pass

    def isatty(self):
        return False


def load(ref="bundled") -> Sequential:
    """A trained model from a run folder (what `tegaki train` wrote, or Sequential.save), or "bundled"."""
    from tegaki.run import load_run

    run = load_run(ref)
    m = Sequential(run.spec, classes=run.classes)
    m._spec, m.run = run.spec, run
    return m


def _check_batch(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
