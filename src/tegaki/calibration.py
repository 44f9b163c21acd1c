"""Calibrated confidence and "not a digit": a temperature and an out-of-distribution score.

A network trained with label smoothing (every preset here) answers "90% sure" when it is right 99.5%
of the time. Temperature scaling (Guo et al., 2017) fixes that after training with one number T:

    probabilities = softmax(logits / T)         T fitted to minimise the NLL on held-out logits

T changes no prediction (the arg max is the same), only how sure it says it is. It is fitted on the
validation split when the run has one; a recipe that trains on every training image (valid_size 0,
such as `best` and `bundled`) has nothing held back, so T is fitted on a seeded slice of the
training images it learnt from, and the record says so ("held_out": false): such an estimate is
optimistic (training images are easier than new ones), and `tegaki evaluate` shows how it does.

"Not a digit" uses the Mahalanobis distance of the logits (Lee et al., 2018, who use hidden features;
the logits are the last of them and every engine, ONNX included, computes them): the class means
and the shared covariance of held-out digits' logits are fitted with T, and

    score = -min over classes k of (z - mean_k)^T precision (z - mean_k)     (z: the raw logits)

is high for inputs that look like the digits of some class and low otherwise. A clothing image
can give logits as large as a digit's, so the energy score T * logsumexp(logits / T) (Liu et al.,
2020; what runs calibrated before this used, and what a run without the means still uses) hardly
tells Fashion-MNIST from MNIST for the fast preset (AUROC 0.53); the distance does (0.98,
bench/calibration.py). Two thresholds are taken as quantiles of the same held-out digits' scores:
below the 0.5% quantile the answer is "not a digit", below the 2% quantile (or with calibrated
confidence under one half) it is "not sure". No out-of-distribution example is used to choose
anything, so nothing is tuned on the sets the score is judged on. The record lives in model.json:

    "calibration": {"method": "temperature", "temperature": 0.62, "fitted_on": "validation split",
                    "held_out": true, "n": 10000, "nll_before": ..., "nll_after": ..., "ece_before": ...,
                    "ece_after": ..., "ood": {"score": "mahalanobis", "means": K x K, "precision": K x K,
                    "not_a_digit_below": ..., "not_sure_below": ..., "not_sure_confidence": 0.5}}
"""

from __future__ import annotations

import numpy as np

from tegaki.errors import TegakiError
from tegaki.evaluate import calibration_metrics
from tegaki.numerics import softmax
from tegaki.run import T_MAX, T_MIN  # noqa: F401 - the range load_run checks (run.check_calibration)

REJECT_QUANTILE = 0.005  # held-out digits scoring below this quantile would be called "not a digit"
UNSURE_QUANTILE = 0.02  # ... below this one "not sure"
UNSURE_CONFIDENCE = 0.5  # a calibrated top probability under even odds is "not sure" too
FIT_SLICE = 10_000  # training images used when a recipe holds nothing back
STATUSES = ("digit", "not sure", "not a digit")


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature) at the true labels."""
    z = np.asarray(logits, np.float64) / temperature  # (N, K)
    zmax = z.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    return float((lse - z[np.arange(len(z)), np.asarray(labels)]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iterations: int = 100) -> float:
    """The T in [T_MIN, T_MAX] minimising nll(logits, labels, T).

    With b = 1/T the NLL is -b z_y + logsumexp(b z): convex in b, with derivative
    E_p[z] - z_y (the expected logit under p = softmax(b z) minus the true one), which only grows
    with b. Bisection on that derivative finds the minimum to machine precision."""
    z = np.asarray(logits, np.float64)  # (N, K)
    y = np.asarray(labels)
    if z.ndim != 2 or len(z) == 0 or len(y) != len(z):
        raise TegakiError(f"fitting a temperature needs (N, K) logits and N labels, got {z.shape} and {y.shape}")
    if not np.isfinite(z).all():
        raise TegakiError("fitting a temperature: the logits hold NaN or infinite values; the model diverged")
    zy = z[np.arange(len(z)), y]

    def slope(b: float) -> float:
        return float(((softmax(b * z) * z).sum(axis=1) - zy).mean())

    lo, hi = 1 / T_MAX, 1 / T_MIN
    if slope(lo) >= 0:
        return T_MAX
    if slope(hi) <= 0:
        return T_MIN
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return float(1 / (0.5 * (lo + hi)))


def digit_score(logits: np.ndarray, temperature: float = 1.0, ood: dict | None = None) -> np.ndarray:
    """The out-of-distribution score per row (higher: more like the digits the model learnt): with
    `ood` holding class means and a precision matrix (the calibration record's "ood"), minus the
    smallest Mahalanobis distance of the raw logits; else T * logsumexp(logits / T), the negative
    energy of the calibrated logits."""
    if ood and ood.get("score") == "mahalanobis":
        return mahalanobis_score(logits, np.asarray(ood["means"]), np.asarray(ood["precision"]))
    z = np.asarray(logits, np.float64) / temperature  # (N, K)
    zmax = z.max(axis=1, keepdims=True)
    return temperature * (zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1)))


def fit_mahalanobis(logits: np.ndarray, labels: np.ndarray) -> dict | None:
    """Class means (K, K) and the precision (inverse of the shared covariance, a little ridge added so
    that it always exists) of held-out logits; None when a class has fewer than two examples."""
    z, y = np.asarray(logits, np.float64), np.asarray(labels)
    k = z.shape[1]
    if min(int((y == c).sum()) for c in range(k)) < 2:
        return None
    means = np.stack([z[y == c].mean(axis=0) for c in range(k)])
    centred = z - means[y]
    cov = centred.T @ centred / len(z)
    cov += np.eye(k) * 1e-4 * max(float(np.trace(cov)) / k, 1e-12)
    return {"means": means.tolist(), "precision": np.linalg.inv(cov).tolist()}


def mahalanobis_score(logits: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """-min_k (z - means[k])^T precision (z - means[k]) for each row z of the raw logits."""
    d = np.asarray(logits, np.float64)[:, None, :] - means[None]  # (N, K, K)
    return -np.einsum("nkd,de,nke->nk", d, precision, d).min(axis=1)


def ood_thresholds(scores: np.ndarray, stats: dict | None = None) -> dict:
    """The "not a digit" and "not sure" thresholds: low quantiles of held-out digits' scores (with
    the Mahalanobis statistics they were scored with, when there are some)."""
    s = np.asarray(scores, np.float64)
    head = {"score": "mahalanobis", **stats} if stats else {"score": "energy"}
    return {**head, "not_a_digit_below": float(np.quantile(s, REJECT_QUANTILE)),
            "not_sure_below": float(np.quantile(s, UNSURE_QUANTILE)), "not_sure_confidence": UNSURE_CONFIDENCE}


def fit(logits: np.ndarray, labels: np.ndarray, fitted_on: str, held_out: bool) -> dict:
    """The whole calibration record (model.json's "calibration") from held-out logits and labels."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels)
    t = fit_temperature(z, y)
    before = calibration_metrics(softmax(z), y)
    after = calibration_metrics(softmax(z / t), y)
    record = {"method": "temperature", "temperature": round(t, 6), "fitted_on": fitted_on,
              "held_out": bool(held_out), "n": int(len(y)),
              "nll_before": before["nll"], "nll_after": after["nll"],
              "ece_before": before["ece"], "ece_after": after["ece"],
              "ood": _ood(z, y, round(t, 6))}
    if not held_out:
        record["note"] = ("fitted on images the model trained on (the recipe holds none back): "
                          "an optimistic estimate")
    return record


def _ood(z: np.ndarray, y: np.ndarray, t: float) -> dict:
    stats = fit_mahalanobis(z, y)
    scored = {"score": "mahalanobis", **stats} if stats else None
    return ood_thresholds(digit_score(z, t, scored), stats)


def training_slice(n: int, seed: int, size: int = FIT_SLICE) -> np.ndarray:
    """A seeded slice of the training images, for recipes with no validation split."""
    rng = np.random.default_rng([seed, 14])
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def status(score: float | None, confidence: float, record: dict | None) -> str:
    """"digit", "not sure" or "not a digit" for one input (score None: nothing was classified)."""
    if score is None:
        return "not a digit"
    ood = (record or {}).get("ood") or {}
    if ood and score < ood["not_a_digit_below"]:
        return "not a digit"
    limit = ood.get("not_sure_confidence", UNSURE_CONFIDENCE)
    if (ood and score < ood["not_sure_below"]) or confidence < limit:
        return "not sure"
    return "digit"


def calibrate(run, images: np.ndarray, labels: np.ndarray, fitted_on: str, held_out: bool = True,
              write: bool = True) -> dict:
    """Fit a run's calibration on labelled images it did not train on (uint8 (N, 28, 28)), put the record
    in run.meta and, for a run folder (and write=True), rewrite its model.json. Returns the record.

    For a model trained in memory (tg.Sequential.fit keeps the plain softmax) or a run folder
    made before calibration existed: `calibrate(model.run, x_valid, y_valid, "my validation set")`."""
    from tegaki.engines import make_engine
    from tegaki.engines.inputs import normalise

    engine = make_engine("torch", run.spec, run.weights)
    z = engine.logits(normalise(np.asarray(images), run.norm, run.spec.input_shape))
    record = fit(z, labels, fitted_on, held_out)
    run.meta["calibration"] = record
    if write and run.path is not None:
        from tegaki.fileio import write_json

        write_json(run.path / "model.json", run.meta)
    return record


def fitted_on(record: dict) -> str:
    """Where a calibration record's temperature was fitted, in words, saying so when the images were trained on
    ("10,000 MNIST training images (...; none held out), so optimistic: the model trained on them")."""
    where = str(record.get("fitted_on", "?"))
    return where + ("" if record.get("held_out", True) else ", so optimistic: the model trained on them")
