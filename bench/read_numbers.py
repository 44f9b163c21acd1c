"""Benchmark: reading whole numbers and tight crops (issue 14), with the bundled model.

    python bench/read_numbers.py            # 1,000 numbers per row, 1,000 digits per crop case
    python bench/read_numbers.py --n 200    # quicker

(Named read_numbers.py, not numbers.py: a script's folder comes first on sys.path, and a
numbers.py there would stand in for the standard library's `numbers` module.)

The test sets are built from MNIST test digits by tests/renders.py (the same construction the tests
hold their bars on): 4-digit numbers, digits drawn at random with a fixed seed, enlarged 3 times and
placed left to right with gaps of 4..16 px (touching: -6..0 px, neighbours overlapping), rendered as
drawings (dark on white) and as photos (grey paper, lighting gradient, blur, noise). A number counts
when its text is exactly the true labels joined. Then single digits enlarged 8 times: with a margin,
cropped tight to the ink (dark on light, light on dark, photo), with a bold pen (strokes widened by
6 px each side) and on lined and squared paper: the share read right and the share answered "no digit".
Times are per image, on whatever else the machine is running (indicative only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "tests"))
import renders as R
from _machine import cpu_name, load_average


def crop_cases(rng):
    return {
        "margin (40 px), dark on light": lambda d: R.drawing(R.tight(d, margin=40)),
        "tight, dark on light": lambda d: R.drawing(R.tight(d)),
        "tight, light on dark": lambda d: R.to_uint8(R.tight(d)),
        "tight, photo": lambda d: R.photo_of(R.tight(d), rng),
        "tight, bold pen": lambda d: R.drawing(R.bold(R.tight(d), 6)),
        "tight, lined paper": lambda d: R.to_uint8(R.ruled(1 - R.tight(d, margin=4), 24)),
        "tight, squared paper": lambda d: R.to_uint8(R.ruled(1 - R.tight(d, margin=4), 24, True)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="numbers per row and digits per crop case")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from tegaki.data.sources import load_dataset
    from tegaki.predict import Predictor

    data = Path(os.environ.get("TEGAKI_DATA_DIR") or HERE.parent.parent / "shared" / "data") / "mnist"
    mnist = load_dataset("mnist", data_dir=data)
    p = Predictor.load(None)
    x, y = mnist.test_images, mnist.test_labels
    print(f"# bundled model; {cpu_name()}; load average {load_average()}")
    print(f"\n{'4-digit numbers':<32} {'n':>6} {'exact':>8} {'4 found':>8} {'ms each':>8}")
    for name, gap, photo in (("drawings", (4, 16), False), ("photos", (4, 16), True),
                             ("touching (drawings)", (-6, 0), False)):
        cases = R.number_set(x, y, args.n, args.seed, gap, photo)
        t = time.perf_counter()
        read = [p.read_number(im) for im, _, _ in cases]
        ms = (time.perf_counter() - t) / len(cases) * 1000
        exact = np.mean([r.text == text for r, (_, text, _) in zip(read, cases)])
        four = np.mean([len(r.digits) == 4 for r in read])
        print(f"{name:<32} {len(cases):>6} {exact:>8.1%} {four:>8.1%} {ms:>8.1f}")
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(y), args.n, replace=False)
    print(f"\n{'single digits, enlarged 8x':<32} {'n':>6} {'right':>8} {'no digit':>8} {'ms each':>8}")
    for name, make in crop_cases(rng).items():
        images = [make(d) for d in x[pick]]
        t = time.perf_counter()
        preds = p.predict_images(images)
        ms = (time.perf_counter() - t) / len(images) * 1000
        labels = np.array([-1 if q.label is None else q.label for q in preds])
        print(f"{name:<32} {len(images):>6} {np.mean(labels == y[pick]):>8.1%} {np.mean(labels == -1):>8.1%} "
              f"{ms:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
