"""Metrics of a trained model on a dataset: accuracy, per-class report, confusion matrix, and how
well its confidence matches its accuracy (expected calibration error over 15 bins, negative
log-likelihood, Brier score, the reliability diagram's data).

The per-class report reads like scikit-learn's `classification_report` with `labels` = every class (a
test checks the two agree) and is computed here from the confusion matrix, in a few lines. Its rows are
every class of the model, so its macro average is over every class, a class absent from the test set
counting 0; scikit-learn's default averages over the classes present only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """cm[i, j] = number of examples of true class i predicted as j."""
    return np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def report_text(cm: np.ndarray, classes: list[str]) -> str:
    m = per_class(cm)
    w = max(12, max(len(c) for c in classes) + 2)
    lines = [f"{'':>{w}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for i, c in enumerate(classes):
        lines.append(f"{c:>{w}} {m['precision'][i]:9.4f} {m['recall'][i]:9.4f} {m['f1'][i]:9.4f} "
                     f"{int(m['support'][i]):9d}")
    n = cm.sum()
    lines.append("")
    lines.append(f"{'accuracy':>{w}} {'':>9} {'':>9} {np.trace(cm) / max(n, 1):9.4f} {int(n):9d}")
    sup = m["support"]
    for name, weights in (("macro avg", np.ones_like(sup)), ("weighted avg", sup)):
        avg = [np.average(m[k], weights=weights) if weights.sum() else 0.0 for k in ("precision", "recall", "f1")]
        lines.append(f"{name:>{w}} {avg[0]:9.4f} {avg[1]:9.4f} {avg[2]:9.4f} {int(n):9d}")
    return "\n".join(lines)


def confusion_text(cm: np.ndarray, classes: list[str]) -> str:
    labels = [c[:5] for c in classes]
    w = max(6, len(str(cm.max())) + 1)
    head = "true\\pred " + "".join(f"{l:>{w}}" for l in labels)
    rows = [head] + [f"{labels[i]:>9} " + "".join(f"{v:>{w}}" for v in cm[i]) for i in range(len(cm))]
    return "\n".join(rows)


ECE_BINS = 15


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Top-class confidence against accuracy in `bins` equal-width bins (lo, hi] of confidence:
    {"edges", "count", "confidence" (mean per bin), "accuracy" (per bin)}; empty bins hold NaN."""
    p = np.asarray(probs, np.float64)
    conf = p.max(axis=1)
    right = (p.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    b = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)  # (lo, hi]; 0 joins the first bin
    count = np.bincount(b, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, conf, minlength=bins) / count
        acc = np.bincount(b, right, minlength=bins) / count
    return {"edges": np.linspace(0, 1, bins + 1), "count": count, "confidence": mean_conf, "accuracy": acc}


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (share of examples) x |accuracy - mean confidence|."""
    r = reliability(probs, labels, bins)
    full = r["count"] > 0
    return float((r["count"][full] * np.abs(r["accuracy"][full] - r["confidence"][full])).sum() / r["count"].sum())


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (probabilities clipped at 1e-15)."""
    p = np.asarray(probs, np.float64)
    return float(-np.log(np.clip(p[np.arange(len(p)), np.asarray(labels)], 1e-15, 1)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score: mean over examples of the squared distance between probabilities and the one-hot truth."""
    p = np.asarray(probs, np.float64)
    onehot = np.eye(p.shape[1])[np.asarray(labels)]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def calibration_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    return {"ece": ece(probs, labels), "nll": log_loss(probs, labels), "brier": brier(probs, labels)}


@dataclass
class Evaluation:
    probabilities: np.ndarray  # (N, K)
    labels: np.ndarray  # (N,) true
    predictions: np.ndarray  # (N,)
    cm: np.ndarray
    classes: list[str]
    images: np.ndarray | None = field(default=None, repr=False)  # (N, H, W) uint8, for plot_mistakes

    @property
    def confusion_matrix(self) -> np.ndarray:
        """cm[i, j]: how many images of true class i were predicted as j."""
        return self.cm

    def report(self) -> str:
        """Precision, recall and F1 per class, as text (like scikit-learn's classification_report with every
        class as a label: the macro average counts a class absent from the test set as 0)."""
        return report_text(self.cm, self.classes)

    def plot_confusion(self, title: str = ""):
        """The confusion matrix as a matplotlib Figure."""
        from tegaki import figures

        return figures.confusion_matrix(self.cm, self.classes, title or f"accuracy {self.accuracy:.2%}")

    def plot_mistakes(self, limit: int = 40):
        """The most confident mistakes, with true and predicted class (needs the images)."""
        from tegaki import figures

        if self.images is None:
            from tegaki.errors import TegakiError

            raise TegakiError("this evaluation has no images to show; evaluate with images=")
        wrong = self.misclassified()
        return figures.misclassified(self.images[wrong], self.labels[wrong], self.predictions[wrong],
                                     self.probabilities[wrong], self.classes, limit=limit)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.cm) / max(self.cm.sum(), 1))

    def calibration(self) -> dict:
        """Expected calibration error (15 bins), negative log-likelihood and Brier score."""
        return calibration_metrics(self.probabilities, self.labels)

    def reliability(self) -> dict:
        """The reliability diagram's data (see `reliability`)."""
        return reliability(self.probabilities, self.labels)

    def plot_reliability(self, title: str = ""):
        """The reliability diagram as a matplotlib Figure."""
        from tegaki import figures

        return figures.reliability(self.reliability(), self.calibration(), title)

    def metrics(self) -> dict:
        m = per_class(self.cm)
        return {"accuracy": self.accuracy, "error": 1.0 - self.accuracy, "n": int(self.cm.sum()),
                **(self.calibration() if len(self.labels) else {}),
                "per_class": {c: {k: float(m[k][i]) for k in m} for i, c in enumerate(self.classes)},
                "confusion_matrix": self.cm.tolist()}

    def misclassified(self) -> np.ndarray:
        """Indices of wrong predictions, most confident mistakes first."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        conf = self.probabilities[wrong, self.predictions[wrong]]
        return wrong[np.argsort(-conf, kind="stable")]


def evaluate(predictor, images: np.ndarray, labels: np.ndarray, classes: list[str] | None = None,
             keep_images: bool = False) -> Evaluation:
    classes = classes or predictor.classes
    probs = predictor.predict_proba(images)
    pred = probs.argmax(axis=1)
    k = max(len(classes), probs.shape[1])
    return Evaluation(probs, np.asarray(labels), pred, confusion_matrix(labels, pred, k), list(classes),
                      images=images if keep_images else None)
