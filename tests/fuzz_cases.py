"""Mutated specs and run folders for tests/test_fuzz_runs.py (run as a script under a memory limit).

    python tests/fuzz_cases.py specs SEED N FOLDER
    python tests/fuzz_cases.py runs SEED N FOLDER

Every case must load or raise TegakiError; anything else is recorded with the case number, and the
script prints one JSON line: {"cases": N, "loaded": ..., "refused": ..., "other": [[case, "repr"], ...]}.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import sys
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np

from tegaki import spec as S
from tegaki.errors import TegakiError

WEIRD = [-1, 0, 1, 3, 2**31, 2**63, 10**30, 1e308, math.nan, math.inf, -math.inf, -0.0, 0.5, "x", "", "../..",
         None, True, False, [], {}, [1, 2, 3], [0, 0], [2, 2], {"type": "dense"}, "a" * 5000, [[[[1]]]], "\x00"]


def weird(rng: random.Random):
    """One of WEIRD, a fresh copy: a shared [] or {} mutated in place later would end up inside
    itself (a circular input no file can hold) and change the values later cases draw."""
    return copy.deepcopy(rng.choice(WEIRD))


DEEP = "\x01deep\x01"  # a marker for a list nested 3,000 deep (made real only where it is fed in)


def deep(n: int = 3000):
    v: list = []
    for _ in range(n):
        v = [v]
    return v


def materialise(d):
    """The mutated value with every DEEP marker replaced by a real 3,000-deep list."""
    if d == DEEP:
        return deep()
    if isinstance(d, dict):
        return {k: materialise(v) for k, v in d.items()}
    if isinstance(d, list):
        return [materialise(v) for v in d]
    return d


def dumps(d) -> str:
    """JSON text, the DEEP markers written as 3,000 nested brackets."""
    return json.dumps(d).replace(json.dumps(DEEP), "[" * 3000 + "]" * 3000)


def paths(d, prefix=()):
    """Every (container, key) in a nested dict/list, for mutation."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append((d, k))
            out += paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.append((d, i))
            out += paths(v, prefix + (i,))
    return out


def mutate(d, rng: random.Random):
    d = copy.deepcopy(d)
    for _ in range(rng.randint(1, 3)):
        where = paths(d)
        if not where:
            break
        box, key = rng.choice(where)
        r = rng.random()
        if r < 0.6:
            box[key] = weird(rng) if rng.random() < 0.9 else rng.choice([deep(20), DEEP])
        elif r < 0.75 and isinstance(box, dict):
            box.pop(key)
        elif r < 0.85 and isinstance(box, dict):
            box[rng.choice(["unknown", "momentun", "units", "kernel", "padding", "stride", "filters"])] = \
                weird(rng)
        elif isinstance(box, list) and box:
            box.insert(rng.randrange(len(box) + 1), copy.deepcopy(rng.choice(box)))
        elif isinstance(box[key], (int, float)) and not isinstance(box[key], bool):
            box[key] = box[key] * rng.choice([-1, 10, 1000, 10**6])
    return d


def presets() -> list[dict]:
    out = []
    for name in S.preset_names():
        d = tomllib.loads(resources.files("tegaki.presets").joinpath(f"{name}.toml").read_text())
        d.setdefault("name", name)
        out.append(d)
    return out


def spec_case(base: dict, rng: random.Random, folder: Path, i: int) -> str:
    from tegaki.cli import main
    from tegaki.train import TrainConfig

    d = mutate(base, rng)
    if i % 10 == 0:  # through a file and the CLI: JSON text, sometimes with a few bytes changed
        text = dumps(d)
        if i % 20 == 0:
            b = bytearray(text.encode())
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            text = bytes(b).decode("utf-8", "replace")
        f = folder / f"case{i}.json"
        f.write_text(text)
        code = main(["summary", str(f)])
        if code not in (0, 2):
            raise AssertionError(f"exit status {code}")
        return "loaded" if code == 0 else "refused"
    spec = S.Spec.from_dict(materialise(d), where="fuzz")
    spec.summary()
    TrainConfig.for_spec(spec)
    return "loaded"


def base_run(folder: Path) -> Path:
    from tegaki.run import make_meta, save_run

    spec = S.Spec(layers=[S.Conv2d(4, 5), S.MaxPool(2), S.BatchNorm(), S.ReLU(), S.Flatten(), S.Dense(10),
                          S.Softmax()], name="tiny")
    meta = make_meta(spec, [str(i) for i in range(10)], {"mean": 0.13, "std": 0.31}, {"dataset": "mnist"}, 0,
                     {"dataset": "mnist", "epochs": 1})
    save_run(folder, spec, spec.init_weights(0), meta, [{"epoch": 1, "train_loss": 0.5, "valid_loss": 0.4}],
             {"test_accuracy": 0.9, "epochs": 1, "train_seconds": 1.5})
    return folder


def run_case(base: Path, rng: random.Random, folder: Path, i: int) -> str:
    from tegaki.predict import Predictor
    from tegaki.run import load_run

    case = folder / f"run{i % 4}"
    if case.exists():
        shutil.rmtree(case)
    shutil.copytree(base, case)
    target = rng.choice(["model.json", "model.json", "metrics.json", "history.csv", "model.safetensors",
                         "model.safetensors"])
    f = case / target
    if target.endswith(".json") and rng.random() < 0.8:
        f.write_text(dumps(mutate(json.loads(f.read_text()), rng)))
    elif target == "model.safetensors" and rng.random() < 0.5:  # the header's JSON, mutated
        raw = f.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        head = dumps(mutate(json.loads(raw[8:8 + n]), rng)).encode()
        f.write_bytes(len(head).to_bytes(8, "little") + head + raw[8 + n:])
    else:  # bytes changed, cut or added
        b = bytearray(f.read_bytes())
        r = rng.random()
        if r < 0.5 and b:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif r < 0.8:
            del b[rng.randrange(len(b) + 1):]
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        f.write_bytes(bytes(b))
    run = load_run(case)
    p = Predictor(run, engine="torch")
    proba = p.predict_proba(np.full((2, 28, 28), 128, np.uint8))
    if not np.isfinite(proba).all():
        raise AssertionError(f"non-finite probabilities from a run that loaded: {proba}")
    run.history()
    p.describe()
    return "loaded"


def main(kind: str, seed: int, n: int, folder: Path) -> dict:
    import contextlib
    import io

    rng = random.Random(seed)
    counts = {"cases": n, "loaded": 0, "refused": 0, "other": []}
    bases = presets() if kind == "specs" else [base_run(folder / "base")]
    for i in range(n):
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                what = (spec_case if kind == "specs" else run_case)(rng.choice(bases), rng, folder, i)
            counts[what] += 1
        except TegakiError:
            counts["refused"] += 1
        except Exception as e:  # noqa: BLE001 - the point of the test: anything but TegakiError is a defect
            counts["other"].append([i, f"{type(e).__name__}: {str(e)[:200]}"])
    return counts


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))))
