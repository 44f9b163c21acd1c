"""Benchmark: calibrated confidence and "not a digit" (issue 14), for the bundled model and any runs.

    python bench/calibration.py                          # the bundled model
    python bench/calibration.py runs/fast-x runs/lenet-y bundled
    python bench/calibration.py --calibrate-bundled      # (re)fit the bundled model's calibration first

For each model it prints, on the MNIST test set (never used to fit anything):
  - ECE (15 bins), NLL and Brier score of the plain softmax (T = 1) and of the calibrated
    probabilities softmax(logits / T), with the temperature and where it was fitted;
and for the out-of-distribution score (model.json's: minus the smallest Mahalanobis distance of the
logits to a class mean, or T * logsumexp(logits / T) for runs calibrated before that; thresholds
chosen as quantiles of held-out digits' scores only):
  - AUROC of MNIST test digits against each other source, the share of each source answered
    "not a digit" and "not a digit" or "not sure", and the share of MNIST test digits so answered
    (the digits wrongly rejected).
The sources: Fashion-MNIST test (10,000, fed as 28x28 like MNIST), a validation slice of
Fashion-MNIST *train* (the last 5,000; a check of the score on data kept apart from the test
figures), 300 random strokes drawn on a 280x280 canvas (1 to 5 strokes, 4% of them a dot or two:
nearly blank) and 156 rendered letters (A-Z, a-z in DejaVu Sans, Bold and Oblique), both
preprocessed like drawings on the page (tegaki.data.preprocess.to_mnist).

The bundled model trained on all 60,000 MNIST training digits, so nothing of MNIST is held out for
it; --calibrate-bundled fits it on a seeded slice of 10,000 of those training images (the test set
is not touched) and says in model.json that the estimate is optimistic. The thresholds come from
the same slice: training digits score higher than new ones, so expect more than the nominal 0.5%
of test digits rejected.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name, load_average  # noqa: E402

from tegaki import calibration as C  # noqa: E402
from tegaki.data.preprocess import to_mnist  # noqa: E402
from tegaki.data.sources import load_dataset  # noqa: E402
from tegaki.evaluate import calibration_metrics  # noqa: E402
from tegaki.numerics import softmax  # noqa: E402
from tegaki.predict import Predictor  # noqa: E402
from tegaki.run import bundled_model_path, load_run  # noqa: E402

FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf"]


def data_dir(name: str) -> str | None:
    root = os.environ.get("TEGAKI_DATA_DIR")
    return str(Path(root) / name) if root and (Path(root) / name).is_dir() else None


def strokes(n: int = 300, seed: int = 0) -> list[np.ndarray]:
    """Random scribbles, black ink on a white 280x280 canvas, as the drawing page makes them."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = Image.new("L", (280, 280), 255)
        d = ImageDraw.Draw(im)
        if i % 25 == 0:  # nearly blank: a dot or two
            for _ in range(rng.integers(1, 3)):
                x, y = rng.integers(10, 270, 2)
                d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=0)
        else:
            for _ in range(rng.integers(1, 6)):
                pts = [tuple(int(v) for v in rng.integers(20, 260, 2)) for _ in range(rng.integers(2, 6))]
                d.line(pts, fill=0, width=int(rng.integers(10, 24)), joint="curve")
        out.append(np.asarray(im))
    return out


def letters() -> list[np.ndarray]:
    """A-Z and a-z rendered in three DejaVu faces, black on white, 280x280."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    ttf = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    out = []
    for face in FONTS:
        font = ImageFont.truetype(str(ttf / face), 200)
        for ch in [chr(c) for c in range(65, 91)] + [chr(c) for c in range(97, 123)]:
            im = Image.new("L", (280, 280), 255)
            ImageDraw.Draw(im).text((140, 140), ch, fill=0, font=font, anchor="mm")
            out.append(np.asarray(im))
    return out


def preprocessed(images: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """The 28x28 inputs of the drawings that have ink, and how many were empty ("not a digit" at once)."""
    pres = [to_mnist(a) for a in images]
    full = [p.image for p in pres if not p.empty]
    return (np.stack(full) if full else np.zeros((0, 28, 28), np.uint8)), len(pres) - len(full)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a digit > score of an outsider), ties counting half (the Mann-Whitney U statistic)."""
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def calibrate_bundled(mnist) -> dict:
    path = bundled_model_path()
    run = load_run(path)
    idx = C.training_slice(len(mnist.train_labels), int(run.meta.get("seed", 0)))
    rec = C.calibrate(run, mnist.train_images[idx], mnist.train_labels[idx],
                      f"{len(idx):,} MNIST training images (the model trained on all 60,000; none held out)",
                      held_out=False)
    print(f"calibrated the bundled model ({path}): T = {rec['temperature']:.4f}\n")
    return rec


def measure(ref: str, mnist, sources: dict) -> tuple[list, list]:
    p = Predictor.load(None if ref == "bundled" else ref)
    rec = p.calibration or {}
    z = p.logits(mnist.test_images).astype(np.float64)
    before = calibration_metrics(softmax(z), mnist.test_labels)
    probs, score = p.calibrated(z)
    after = calibration_metrics(probs, mnist.test_labels)
    name = p.spec.name if ref == "bundled" else f"{p.spec.name} ({Path(ref).name})"
    cal = [name, rec.get("temperature", 1.0), "yes" if rec.get("held_out") else "no (optimistic)" if rec else "-",
           before, after, float((probs.argmax(1) == mnist.test_labels).mean())]
    status = np.array(p.status(mnist.test_images))
    rows = [[name, "MNIST test (digits)", len(status), None, (status == "not a digit").mean(),
             (status != "digit").mean()]]
    for src, (images, empty) in sources.items():
        s = p.scores(images) if len(images) else np.zeros(0)
        st = np.array(p.status(images) if len(images) else [], dtype=object)
        n = len(images) + empty
        # an empty drawing is "not a digit" with the lowest possible score
        a = auroc(score, np.concatenate([s, np.full(empty, -np.inf)]))
        rows.append([name, src, n, a, ((st == "not a digit").sum() + empty) / n, ((st != "digit").sum() + empty) / n])
    return cal, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", default=["bundled"], help="run folders, or 'bundled'")
    ap.add_argument("--calibrate-bundled", action="store_true", help="fit the bundled model's calibration first")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load {load_average()}")
    mnist = load_dataset("mnist", data_dir=data_dir("mnist"))
    fashion = load_dataset("fashion-mnist")
    if args.calibrate_bundled:
        calibrate_bundled(mnist)
    sources = {"Fashion-MNIST test": (fashion.test_images, 0),
               "Fashion-MNIST train[-5000:] (validation)": (fashion.train_images[-5000:], 0),
               "random strokes": preprocessed(strokes()), "rendered letters": preprocessed(letters())}
    cals, oods = [], []
    for ref in args.runs:
        cal, rows = measure(ref, mnist, sources)
        cals.append(cal)
        oods += rows
    print("\ncalibration on the MNIST test set (10,000 digits; 15-bin ECE)")
    print(f"{'model':<34}{'T':>7}  {'held out':<16}{'ECE before':>11}{'ECE after':>10}{'NLL before':>11}"
          f"{'NLL after':>10}{'Brier bef.':>11}{'Brier aft.':>11}{'accuracy':>9}")
    for name, t, held, b, a, acc in cals:
        print(f"{name:<34}{t:>7.4f}  {held:<16}{b['ece']:>11.2%}{a['ece']:>10.2%}{b['nll']:>11.4f}{a['nll']:>10.4f}"
              f"{b['brier']:>11.4f}{a['brier']:>11.4f}{acc:>9.2%}")
    print("\n'not a digit' (the calibration's out-of-distribution score: the Mahalanobis distance of the logits,\n"
          "or the energy for runs calibrated before it; thresholds from model.json)")
    print(f"{'model':<34}{'source':<42}{'n':>6}{'AUROC':>8}{'not a digit':>13}{'+ not sure':>12}")
    for name, src, n, a, rej, unsure in oods:
        print(f"{name:<34}{src:<42}{n:>6}{'' if a is None else f'{a:.4f}':>8}{rej:>13.2%}{unsure:>12.2%}")
    print(f"\n(for MNIST test the two last columns are the digits wrongly rejected; {time.perf_counter() - t0:.0f} s, "
          f"load {load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
