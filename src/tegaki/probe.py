"""Reusing a trained network's hidden layers as features for scikit-learn classifiers.

The classic transfer-learning experiment: read a layer's activations for the training and
test sets, fit a logistic regression or an SVM on them, and compare its test accuracy with the
raw pixels and with the network's own softmax.

    feats = extract(predictor, dataset, ["pixels", "tanh3"])      # layer -> Features
    rows = [fit(feats["tanh3"], "logreg")]
    print(table(rows, network_accuracy))
    figures.probe_accuracy(rows, network_accuracy)              # the table as dots (tegaki.figures)

Each classifier sees standardised features (a StandardScaler fitted on its training rows).
Fitting time grows with the training set (kernel SVMs as its square), so by default each
classifier is fitted on a seeded random subset (MAX_TRAIN: 20,000 digits for the linear ones,
5,000 for the kernel SVM) to finish in about two minutes on two CPU cores; the table says how
many examples each fit used, and `--train-size` changes it.
"""

from __future__ import annotations

import sys
import time
import types
import warnings
from dataclasses import dataclass

import numpy as np

from tegaki import inspect as I
from tegaki.errors import TegakiError

CLASSIFIERS = ("logreg", "linear-svm", "svm")
DESCRIPTIONS = {
    "logreg": "logistic regression (multinomial, L-BFGS, C=0.01)",
    "linear-svm": "linear SVM (hinge loss, averaged SGD, 15 epochs)",
    "svm": "kernel SVM (SVC, RBF kernel, gamma 'scale', C=10)",
}
#: default number of training examples per classifier (None: all); kernel SVMs are O(n^2)
MAX_TRAIN = {"logreg": 20000, "linear-svm": 20000, "svm": 5000}


@dataclass
class Features:
    layer: str  # a layer name, or "pixels"
    label: str  # what the table shows: "pixels", "conv1->tanh1" ...
    train: np.ndarray  # (N, F) float32, rows in the order of train_index
    test: np.ndarray  # (M, F) float32
    train_labels: np.ndarray  # (N,)
    test_labels: np.ndarray  # (M,)
    train_index: np.ndarray  # (N,) rows of the dataset's training set, in a seeded random order
    train_total: int  # size of the dataset's whole training set


@dataclass
class ProbeResult:
    classifier: str
    layer: str
    label: str
    dims: int
    train_size: int
    accuracy: float
    fit_seconds: float
    train_total: int  # training examples available (train_size < train_total: a subset)
    converged: bool = True
    predict_seconds: float = 0.0  # scoring the test set


def default_layers(spec) -> list[str]:
    """The raw pixels, then the end of every hidden block (LeNet: tanh1, tanh2, tanh3)."""
    return ["pixels"] + [end for _, end in I.hidden_layers(spec)]


def layer_label(spec, layer: str) -> str:
    if layer in ("pixels", "input"):
        return "pixels"
    for start, end in I.hidden_layers(spec):
        if end == layer and start != end:
            return f"{start}->{end}"
    return layer


def train_order(n: int, seed: int = 0) -> np.ndarray:
    """A seeded random order of the training set; a subset of size k is its first k rows, so the
    subsets of different sizes are nested and do not depend on how many rows were extracted."""
    return np.random.default_rng(seed).permutation(n)


def extract(predictor, dataset, layers: list[str], train_rows: int | None = None, seed: int = 0,
            batch_size: int = 1000, log=lambda m: None) -> tuple[dict[str, Features], float]:
    """Flattened activations of `layers` for (the first `train_rows` of a seeded random order of)
    the training images and for all test images; and the network's own test accuracy, from the
    same forward pass."""
    spec = predictor.spec
    for name in layers:
        I.check_layer(spec, name)
    look = I.Inspector(predictor)
    t0 = time.perf_counter()
    index = train_order(len(dataset.train_labels), seed)[:train_rows]
    tr = look.features(dataset.train_images[index], layers, batch_size)
    te = look.features(dataset.test_images, layers, batch_size, with_logits=True)
    yte = np.asarray(dataset.test_labels)
    net_acc = float((te.pop("logits").argmax(axis=1) == yte).mean())
    log(f"extracted {', '.join(layers)} for {len(index):,} training and {len(yte):,} test images "
        f"in {time.perf_counter() - t0:.1f} s")
    ytr = np.asarray(dataset.train_labels)[index]
    return {k: Features(k, layer_label(spec, k), tr[k], te[k], ytr, yte, index, len(dataset.train_labels))
            for k in layers}, net_acc


def save_features(path, feats: dict[str, Features]) -> None:
    """One .npz (no pickle: load with np.load(path, allow_pickle=False)): <layer>_train,
    <layer>_test, train_labels, test_labels, train_index (rows of the dataset's training set)."""
    import io

    from tegaki.fileio import atomic_write_bytes

    first = next(iter(feats.values()))
    arrays = {"train_labels": first.train_labels.astype(np.int64), "test_labels": first.test_labels.astype(np.int64),
              "train_index": first.train_index.astype(np.int64)}
    for k, f in feats.items():
        arrays[f"{k}_train"] = f.train
        arrays[f"{k}_test"] = f.test
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


class KernelSVM:
    """scikit-learn's SVC with an RBF kernel, the kernel matrices computed by sklearn's BLAS-backed
    `rbf_kernel` and handed to SVC(kernel="precomputed"). The same model as SVC(kernel="rbf",
    gamma="scale") (a test checks their predictions agree), but scoring 10,000 test digits of
    2,880 features takes seconds instead of a minute: libsvm's own kernel loop uses no BLAS."""

    def __init__(self, C: float = 10.0, seed: int = 0, chunk: int = 2000):
        self.C, self.seed, self.chunk = C, seed, chunk

    def fit(self, x: np.ndarray, y: np.ndarray) -> "KernelSVM":
        from sklearn.metrics.pairwise import rbf_kernel
        from sklearn.svm import SVC

        self.x_ = np.asarray(x, np.float64)
        var = self.x_.var()
        self.gamma_ = 1.0 / (self.x_.shape[1] * var) if var > 0 else 1.0  # sklearn's gamma="scale"
        self.svc_ = SVC(C=self.C, kernel="precomputed", random_state=self.seed)
        self.svc_.fit(rbf_kernel(self.x_, self.x_, gamma=self.gamma_), y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        from sklearn.metrics.pairwise import rbf_kernel

        x = np.asarray(x, np.float64)
        return np.concatenate([self.svc_.predict(rbf_kernel(x[i:i + self.chunk], self.x_, gamma=self.gamma_))
                               for i in range(0, len(x), self.chunk)])


class _Standardised:
    """StandardScaler then a classifier (a two-step pipeline for an estimator outside sklearn)."""

    def __init__(self, clf):
        from sklearn.preprocessing import StandardScaler

        self.scaler, self.clf = StandardScaler(), clf

    def fit(self, x, y):
        self.clf.fit(self.scaler.fit_transform(x), y)
        return self

    def predict(self, x):
        return self.clf.predict(self.scaler.transform(x))


def make_classifier(name: str, seed: int = 0):
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logreg":
        clf = LogisticRegression(C=0.01, max_iter=300, tol=1e-4)  # C=0.01: faster and no worse than 1
    elif name == "linear-svm":
        # liblinear's LinearSVC takes minutes on raw pixels; averaged SGD on the hinge loss is a
        # linear SVM too, and takes seconds
        clf = SGDClassifier(loss="hinge", alpha=1e-4, average=True, max_iter=15, tol=None, random_state=seed)
    elif name == "svm":
        return _Standardised(KernelSVM(C=10.0, seed=seed))
    else:
        raise TegakiError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    return make_pipeline(StandardScaler(), clf)


def fit(feats: Features, classifier: str, max_train: int | None = None, seed: int = 0,
        threads: int | None = 1) -> ProbeResult:
    """Fit `classifier` on the first `max_train` training rows (all when None); score on the test set.

    `threads` caps the BLAS/OpenMP threads of the fit (None: the library's default, every core).
    One is the default: on a 2-core machine that also runs other jobs, two BLAS threads that
    spin while waiting for each other made a logistic regression 7 times slower than one thread.
    """
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    n = len(feats.train) if max_train is None else min(max_train, len(feats.train))
    model = make_classifier(classifier, seed)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(threads):
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        model.fit(feats.train[:n], feats.train_labels[:n])
        seconds = time.perf_counter() - t0
        acc = float((model.predict(feats.test) == feats.test_labels).mean())
        predict_seconds = time.perf_counter() - t0 - seconds
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return ProbeResult(classifier, feats.layer, feats.label, feats.train.shape[1], n, acc, seconds,
                       feats.train_total, converged, predict_seconds)


def table(results: list[ProbeResult], network_accuracy: float, network_name: str = "network") -> str:
    """Classifier x layer -> test accuracy and fit seconds, with the network's own softmax."""
    layers = list(dict.fromkeys(r.label for r in results))
    dims = {r.label: r.dims for r in results}
    clfs = list(dict.fromkeys(r.classifier for r in results))
    by = {(r.classifier, r.label): r for r in results}
    w0 = max(len("classifier (train size)"), *(len(f"{c} ({by_any(by, c).train_size:,})") for c in clfs)) + 2
    cw = max(16, *(len(l) + 2 for l in layers))
    lines = [f"{'test accuracy / fit s':<{w0}}" + "".join(f"{l:>{cw}}" for l in layers),
             f"{'features':<{w0}}" + "".join(f"{dims[l]:>{cw},}" for l in layers)]
    lines.append("-" * len(lines[0]))
    for c in clfs:
        cells = []
        for l in layers:
            r = by.get((c, l))
            cells.append(f"{'-':>{cw}}" if r is None else
                         f"{f'{r.accuracy:.2%} {r.fit_seconds:5.1f}s' + ('*' if not r.converged else ' '):>{cw}}")
        lines.append(f"{c + f' ({by_any(by, c).train_size:,})':<{w0}}" + "".join(cells))
    lines.append("-" * len(lines[0]))
    lines.append(f"{network_name + ' softmax':<{w0}}{network_accuracy:>{cw}.2%}   (the network's own output layer)")
    notes = []
    for c in clfs:
        r = by_any(by, c)
        sub = f" (a seeded random subset of {r.train_total:,})" if r.train_size < r.train_total else ""
        notes.append(f"  {c}: {DESCRIPTIONS[c]} on standardised features, fitted on {r.train_size:,} training "
                     f"digits{sub}")
    if any(not r.converged for r in results):
        notes.append("  * stopped at its iteration limit before converging")
    return "\n".join(lines + notes)


def by_any(by: dict, classifier: str) -> ProbeResult:
    return next(r for (c, _), r in by.items() if c == classifier)


@dataclass
class ProbeTable:
    """What `tg.probe` returns: one ProbeResult per (classifier, layer), the network's own accuracy,
    the table as text (str(table)) and `.plot()` (a Figure)."""

    results: list[ProbeResult]
    network_accuracy: float
    network_name: str = "network"

    def accuracy(self, classifier: str, layer: str) -> float:
        """The test accuracy of `classifier` on `layer`'s features ("pixels" for the raw input)."""
        for r in self.results:
            if r.classifier == classifier and r.layer == layer:
                return r.accuracy
        raise TegakiError(f"no result for {classifier} on {layer}; have "
                          f"{', '.join(sorted({f'{r.classifier}/{r.layer}' for r in self.results}))}")

    def plot(self, title: str = ""):
        from tegaki import figures

        return figures.probe_accuracy(self.results, self.network_accuracy, title or f"{self.network_name}: probes")

    def __str__(self) -> str:
        return table(self.results, self.network_accuracy, self.network_name)


def probe(model, x_train, y_train, x_test, y_test, layers: list[str] | None = None,
          classifiers=("logreg", "svm"), max_train: int | None = 5000, seed: int = 0) -> ProbeTable:
    """Source document 1's transfer learning from Python: every hidden block's activations (and the raw
    pixels) as features for scikit-learn classifiers, against the network's own softmax.

    `model` is a tegaki Sequential (trained or loaded); arrays as for its predict and fit."""
    from tegaki.arrays import as_images, as_labels
    from tegaki.data.dataset import Dataset

    k = model.spec.num_classes
    xtr, xte = as_images(x_train, model.spec.input_shape, "x_train"), as_images(x_test, model.spec.input_shape, "x_test")
    ds = Dataset("arrays", xtr, as_labels(y_train, len(xtr), k, "y_train"), xte, as_labels(y_test, len(xte), k, "y_test"),
                 model.classes)
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)  # "svm" is one, not 3
    for c in classifiers:
        if c not in CLASSIFIERS:
            raise TegakiError(f"unknown classifier {c!r}; choose from {', '.join(CLASSIFIERS)}")
    if max_train is not None and (isinstance(max_train, bool) or not isinstance(max_train, (int, np.integer))
                                  or max_train < 10):
        raise TegakiError(f"max_train must be a whole number of at least 10 (or None: all), got {max_train!r}")
    if len(np.unique(np.asarray(ds.train_labels)[train_order(len(ds.train_labels), seed)[:max_train]])) < 2:
        raise TegakiError("y_train holds one class only (among the examples used); a classifier needs two or more")
    feats, net_acc = extract(model.predictor, ds, layers or default_layers(model.spec), max_train, seed)
    results = [fit(f, c, max_train, seed) for c in classifiers for f in feats.values()]
    return ProbeTable(results, net_acc, model.name)


class _CallableModule(types.ModuleType):
    """`tg.probe(model, ...)` calls `probe`; `tg.probe.ProbeTable` and the rest stay reachable (the name
    is both this module and its main function)."""

    def __call__(self, *args, **kwargs) -> ProbeTable:
        return probe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
