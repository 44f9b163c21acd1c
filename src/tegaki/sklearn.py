"""tegaki as a scikit-learn classifier: `CNNClassifier` trains a tegaki network with `fit(X, y)`.

    from tegaki.sklearn import CNNClassifier
    clf = CNNClassifier("ffnn", epochs=1).fit(X_train, y_train)   # X: (N, 28, 28) uint8, labels any
    clf.predict(X_test), clf.predict_proba(X_test), clf.score(X_test, y_test)

It stands on the library as it is: `tegaki.train.train` trains in memory (no files), the trained
model is a `tegaki.run.Run` (`clf.run_`) and a `tegaki.predict.Predictor` predicts. Every
constructor argument is stored unchanged (scikit-learn's rule), so the estimator works with
`clone`, `Pipeline`, `cross_val_score` and `GridSearchCV`; nothing is checked until `fit`.

Images: X is uint8 0..255 or float 0..1 (floats are rounded to the nearest of the 256 grey levels,
the form every tegaki network is trained on), shaped (N, 28, 28), (N, 1, 28, 28) or (N, 784)
(28 = the spec's image size). Labels are any sortable class labels; `classes_` = np.unique(y) and
the network predicts their indices.

The number of classes: a preset name (`spec="lenet"`) has its last dense layer resized to the
number of classes in y (a preset is a recipe for MNIST's 10 digits, and the rest of the recipe
fits any class count); a spec file or a `tegaki.spec.Spec` is the user's exact network, so its
last dense layer must already have that many units, else `fit` raises a TegakiError.

Errors: every bad input or parameter raises `tegaki.arrays.InputError`, a subclass of both
`tegaki.errors.TegakiError` (the project's one error type, a plain Exception) and `ValueError`
(what scikit-learn's tools and checks expect), with a one-line message, before any training step. Predicting before `fit`
raises `NotFitted`, a TegakiError that is also scikit-learn's NotFittedError.

scikit-learn's generic estimator checks (`check_estimator`) feed 2-D float arrays of any width
(often negative or unbounded values, a few features); this classifier takes images of 784 pixels
in 0..1 only, so the checks that fit or predict on such data cannot apply. `expected_failed_checks`
returns them with the reason (names below without their check_ prefix); the rest pass
(tests/test_sklearn.py runs them all):

- refused for their shape (2-D data of a few features is not images; the test checks each property
  on MNIST instead): fit_score_takes_y, estimators_overwrite_params, dont_overwrite_parameters,
  estimators_fit_returns_self, readonly_memmap_input, n_features_in_after_fitting, estimators_dtypes,
  dtype_object, pipeline_consistency, estimators_pickle, f_contiguous_array_estimator,
  classifier_data_not_an_array, classifiers_classes, classifiers_train, supervised_y_2d,
  methods_sample_order_invariance, methods_subset_invariance, dict_unchanged, fit_idempotent,
  fit_check_is_fitted, n_features_in, fit2d_predict1d;
- wanting scikit-learn's own error wording for a flaw the shape check meets first:
  estimators_empty_data_messages, fit2d_1sample, fit2d_1feature, requires_y_none,
  classifiers_one_label, classifiers_regression_target, estimators_nan_inf,
  positive_only_tag_during_fit.

Saving: keep a trained model as a tegaki run folder (safetensors weights, model.json), e.g.
`tegaki.run.save_run(path, clf.run_.spec, clf.run_.weights, clf.run_.meta, clf.history_,
clf.run_.metrics)`; tegaki never loads pickle.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from tegaki import arrays
from tegaki.arrays import InputError
from tegaki.data.dataset import MAX_CLASSES, Dataset, stratified_split
from tegaki.errors import TegakiError
from tegaki.predict import Predictor
from tegaki.spec import Spec, load_preset, preset_names
from tegaki.train import USUAL_LR, TrainConfig, lr_for, train



class NotFitted(TegakiError, NotFittedError):
    """The classifier was asked to predict before `fit`."""



_GENERIC = ("fits or predicts on scikit-learn's generic 2-D data (a few float features per row), which is not "
            "images: CNNClassifier refuses it for its shape (tests/test_sklearn.py checks the same property on MNIST)")
_WORDING = ("wants scikit-learn's own error wording for a flaw of its generic data; CNNClassifier refuses that data "
            "for its shape first (InputError, a ValueError), before it looks at the flaw")
#: the checks of sklearn.utils.estimator_checks that cannot apply to an image classifier, and why;
#: every other check passes (get_params/set_params, clone, repr, tags, unfitted errors, sparse and
#: complex input refused, no attributes set in __init__, ...)
EXPECTED_FAILED_CHECKS = {
    **{name: _GENERIC for name in (
        "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
        "check_estimators_dtypes", "check_dtype_object", "check_pipeline_consistency", "check_estimators_pickle",
        "check_f_contiguous_array_estimator", "check_classifier_data_not_an_array", "check_classifiers_classes",
        "check_classifiers_train", "check_supervised_y_2d", "check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_dict_unchanged", "check_fit_idempotent",
        "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d")},
    **{name: _WORDING for name in (
        "check_estimators_empty_data_messages", "check_fit2d_1sample", "check_fit2d_1feature",
        "check_requires_y_none", "check_classifiers_one_label", "check_classifiers_regression_target",
        "check_estimators_nan_inf", "check_positive_only_tag_during_fit")},
}


def expected_failed_checks(estimator=None) -> dict[str, str]:
    """For sklearn's check_estimator / parametrize_with_checks(expected_failed_checks=...)."""
    return dict(EXPECTED_FAILED_CHECKS)


def _refuse(message: str):
    raise InputError(message)


def as_images(X, size: tuple[int, int], what: str = "X") -> np.ndarray:
    """X as uint8 images (N, H, W) (see tegaki.arrays.as_images), a batch always: scikit-learn's X is
    one row per example, so a single image (H, W) or (H*W,) is refused rather than taken as one."""
    h, w = size
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        _refuse(f"{what} is a sparse matrix; pass a dense array of images (X.toarray())")
    try:
        a = np.asarray(X)
    except (TypeError, ValueError) as e:  # ragged lists and the like
        raise InputError(f"{what} is not an array of images ({str(e).splitlines()[0]}); "
                         f"pass an array shaped (N, {h}, {w})") from None
    if a.dtype.kind == "c":
        _refuse(f"{what}: Complex data not supported; pass uint8 0..255 or float 0..1 images")
    if a.ndim < 2 or (a.ndim == 2 and a.shape[1] != h * w):
        _refuse(f"{what} has shape {a.shape}; pass a batch of images shaped (N, {h}, {w}), (N, 1, {h}, {w}) "
                f"or (N, {h * w})")
    return arrays.as_images(a, (1, h, w), what)


def as_labels(y, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, indices into classes) for the labels y of n images; an InputError if they are not class labels."""
    from sklearn.utils.multiclass import type_of_target

    try:
        y = np.asarray(y)
    except (TypeError, ValueError) as e:
        raise InputError(f"y is not an array of labels ({str(e).splitlines()[0]}); pass one label per image")
    if y.ndim != 1:
        _refuse(f"y has shape {y.shape}; pass one label per image, a 1-D array of {n:,}")
    if len(y) != n:
        _refuse(f"X holds {n:,} images but y {len(y):,} labels; pass one label per image")
    if y.dtype.kind in "fc" and not np.isfinite(y).all():
        _refuse(f"y: label at index {int(np.flatnonzero(~np.isfinite(y))[0])} is NaN or infinite; pass class labels")
    try:
        kind = type_of_target(y)
        classes, index = np.unique(y, return_inverse=True)
    except (TypeError, ValueError) as e:  # labels of mixed types, None among them ...
        raise InputError(f"y: labels cannot be sorted into classes ({str(e).splitlines()[0]}); "
                         "use labels of one type") from None
    if kind == "continuous":
        _refuse("y holds fractional values, a regression target; a classifier needs class labels")
    if len(classes) < 2:
        _refuse(f"y has one class only ({_plain_value(classes[0])!r}); a classifier needs examples of at least two classes")
    if len(classes) > MAX_CLASSES:
        _refuse(f"y has {len(classes):,} classes, more than the {MAX_CLASSES:,} tegaki trains; check the labels")
    return classes, index.reshape(-1).astype(np.int64)


def resolve(spec) -> tuple[Spec, bool]:
    """The network named by `spec` (a preset name, a spec file or a Spec), and whether it is a preset."""
    if isinstance(spec, str) and spec in preset_names():
        net, preset = load_preset(spec), True
    elif isinstance(spec, Spec):
        net, preset = copy.deepcopy(spec), False
    elif isinstance(spec, (str, Path)) and (Path(spec).suffix in (".toml", ".json") or Path(spec).is_file()):
        net, preset = Spec.from_file(spec), False
    elif isinstance(spec, str):
        net, preset = load_preset(spec), True  # raises: unknown preset, with the list of names
    else:
        _refuse(f"spec={spec!r}: pass a preset name ({', '.join(preset_names())}), a spec file or a tegaki.spec.Spec")
    if len(net.input_shape) != 3 or net.input_shape[0] != 1:
        _refuse(f"spec {net.name!r} takes input {net.input_shape}; CNNClassifier trains networks on one-channel "
                "images (input [1, H, W])")
    return net, preset


def with_classes(net: Spec, preset: bool, n_classes: int) -> Spec:
    """`net` with n_classes outputs: a preset's last dense layer is resized; any other spec must have them."""
    if preset and net.num_classes != n_classes:
        d = net.to_dict()
        dense = [layer for layer in d["layers"] if layer.get("type") == "dense"]
        if dense:
            dense[-1]["units"] = n_classes
            net = Spec.from_dict(d, where=f"preset {net.name}")
    if net.num_classes != n_classes:
        _refuse(f"spec {net.name!r} has {net.num_classes} outputs but y has {n_classes} classes; "
                f"give its last dense layer {n_classes} units (or use a preset, resized for you)")
    return net


def _quiet(message: str) -> None:
    pass


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """A tegaki network as a scikit-learn classifier (see the module's docstring).

    spec: a preset name, a spec file (.toml/.json) or a tegaki.spec.Spec.
    epochs, batch_size, lr, optimizer: the training recipe (None: the spec's own `train` table; an
        optimizer without lr takes that optimizer's usual rate, as `tegaki train --optimizer` does).
    engine: "torch" or "numpy"; device: "cpu", "auto", "cuda" or "mps" (training and prediction).
    seed: one seed for the initial weights, shuffling, dropout and the validation split.
    validation_fraction: the part of X held out (stratified) to report validation scores in
        `history_` each epoch (0: train on all of X).
    verbose: 0 silent; 1 prints tegaki's per-epoch table.

    After fit: classes_, n_features_in_ (pixels per image), run_ (the trained tegaki.run.Run),
    predictor_ (its tegaki.predict.Predictor), history_ (one dict per epoch), interrupted_
    (True when Ctrl-C stopped training; the model keeps the weights it had reached).
    """

    def __init__(self, spec="lenet", epochs=3, batch_size=None, lr=None, optimizer=None, engine="torch", seed=0,
                 validation_fraction=0.0, verbose=0, device="cpu"):
        self.spec = spec
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.engine = engine
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.verbose = verbose
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # (N, 784) images; (N, 28, 28) too
        tags.input_tags.three_d_array = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_label = False
        tags.non_deterministic = self.device != "cpu"
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "run_")

    def fit(self, X, y):
        """Train a fresh network on images X and labels y (every check comes before the first step); returns self."""
        spec, cfg, ds, split, classes = self._prepare(X, y)
        log = print if self.verbose else _quiet
        result = train(spec, ds, cfg, None, log=log, command=["tegaki.sklearn.CNNClassifier.fit"],
                       bar_stream=None if self.verbose else io.StringIO(), split=split)
        if result.run is None:
            raise TegakiError("training stopped before the network was built; call fit again")
        self.classes_ = classes
        self.n_features_in_ = int(np.prod(spec.input_shape))
        self.run_ = result.run
        self.predictor_ = Predictor(result.run, engine=cfg.engine, device=cfg.device)
        self.history_ = list(result.history)
        self.interrupted_ = bool(result.interrupted)
        return self

    def _prepare(self, X, y):
        """Every check of the parameters and the data; (spec, config, dataset, split, classes) or an InputError."""
        try:
            net, preset = resolve(self.spec)
            images = as_images(X, net.input_shape[1:])
            classes, labels = as_labels(y, len(images))
            net = with_classes(net, preset, len(classes))
            known = isinstance(self.optimizer, str) and self.optimizer in USUAL_LR  # else TrainConfig says so
            lr = lr_for(net.train, self.optimizer, self.lr)[0] if known else self.lr
            cfg = TrainConfig.for_spec(net, epochs=self.epochs, batch_size=self.batch_size, lr=lr,
                                       optimizer=self.optimizer, engine=self.engine, seed=self.seed,
                                       device=self.device, valid_size=0)
            split = self._split(labels)
            if cfg.engine == "torch":
                from tegaki.engines.torch_engine import pick_device

                pick_device(cfg.device)  # device="cuda" on a machine without one: a bad parameter like the others
        except InputError:
            raise
        except TegakiError as e:  # a SpecError, a bad training option: the same message, as a ValueError too
            raise InputError(str(e)) from None
        if net.normalize == "standard" and images.min() == images.max():
            _refuse(f"every pixel of X is {images.min()}: nothing to learn from (and no spread to normalise by); "
                    "pass real images")
        ds = Dataset("CNNClassifier.fit", images, labels, images[:0], labels[:0], [str(c) for c in classes],
                     {"source": "arrays given to CNNClassifier.fit"})
        return net, cfg, ds, split, classes

    def _split(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = self.validation_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            _refuse(f"validation_fraction={f!r}: pass a number from 0 (no validation split) up to, not including, 1")
        n_valid = int(round(f * len(labels)))
        if f > 0 and n_valid == 0:
            n_valid = 1
        return stratified_split(labels, n_valid, self.seed)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, len(classes_)), columns in the order of classes_."""
        if not self.__sklearn_is_fitted__():
            raise NotFitted(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")
        images = as_images(X, self.run_.spec.input_shape[1:])
        p = self.predictor_
        return np.concatenate([p.predict_proba(images[i:i + 1000]) for i in range(0, len(images), 1000)])

    def predict(self, X) -> np.ndarray:
        """The most probable class label of each image."""
        proba = self.predict_proba(X)  # first: it raises NotFitted before fit
        return self.classes_[proba.argmax(axis=1)]

    def predict_log_proba(self, X) -> np.ndarray:
        """The logarithm of predict_proba (-inf where a probability is 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


def _plain_value(v):
    """A NumPy scalar as the Python value it holds (so a message says 3, not np.int64(3))."""
    return v.item() if isinstance(v, np.generic) else v
