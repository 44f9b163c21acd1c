"""`tegaki predict [--model RUN] FILE... [--format table|json|csv] [--top K]`: name the digit in images.

An image holding several digits (a number: "2026", a meter reading; not a 28x28 image, and not where
the pieces found are mostly "not a digit") is also read digit by digit
(tegaki/data/segment.py): the table shows the number, the least sure digit's confidence and each
digit; JSON rows gain "number" {text, digits [{box, label, name, confidence, status, probabilities}],
note}; CSV gains a "number" column. An image of one digit gives exactly the output it always did.

FILE may be an image (PNG, JPEG, ...: drawings, photos and scans of dark ink on light paper, or
MNIST-like white on black), a folder (every image in it and below it) or a glob ("scans/*.jpg",
quoted so the shell leaves it alone). Each image goes through the same MNIST-style preprocessing
as the HTTP API and the page, then one batched call of the network; a file named twice is predicted
once. A file that cannot be read is reported on its own line (stderr) and the others go on: exit
status 1. When no argument names a readable image, one line on stderr and exit status 2.
Without --model, the model bundled with tegaki is used.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from pathlib import Path

from tegaki.commands.common import check_reads_pictures, columns, pad
from tegaki.errors import TegakiError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FORMATS = ("table", "json", "csv")


def expand(args: list[str]) -> list[tuple[str, str | None]]:
    """Arguments -> [(file, None)] in order, or [(argument, why it names no file)] for bad ones.
    A file named twice (by two arguments, or a folder and a glob) is listed once, where first named."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()

    def add(name: str, why: str | None = None) -> None:
        key = why + "\0" + name if why else str(Path(name).expanduser().resolve())
        if key not in seen:
            seen.add(key)
            out.append((name, why))

    for a in args:
        p = Path(a).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                add(a, f"folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for f in files:
                add(str(f))
        elif p.exists() or not glob.has_magic(a):
            add(a)  # a file; or a missing one, reported when it is read
        else:
            matches = sorted(m for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not matches:
                add(a, "no files match this pattern")
            for m in matches:
                add(m)
    return out


CHUNK = 32  # files read, preprocessed and predicted at a time: a photo's preprocessing steps take megabytes


def predict_rows(predictor, items: list[tuple[str, str | None]], k: int) -> list[dict]:
    """One row per file: label, name, confidence and top k, or its error, or no_digit; and, where
    two or more digits were found, the number (text, each digit's box and probabilities). Files go CHUNK at
    a time, so that a folder of thousands of photos holds only a chunk's pictures in memory."""
    rows = []
    for i in range(0, len(items), CHUNK):
        rows += _chunk_rows(predictor, items[i:i + CHUNK], k)
    return rows


def _chunk_rows(predictor, items: list[tuple[str, str | None]], k: int) -> list[dict]:
    classes = predictor.classes
    found = predictor.predict_images([f for f, why in items if why is None])
    # a 28x28 image is one MNIST-like digit, as in the API
    read = [p for p in found if not isinstance(p, TegakiError) and not p.empty and p.steps["grey"].shape != (28, 28)]
    numbers = {id(p): n for p, n in zip(read, predictor.read_numbers(read))}
    preds = iter(found)
    rows = []
    for f, why in items:
        r = {"file": f, "label": None, "name": None, "confidence": None, "top": [], "error": why, "status": None}
        if why is None:
            p = next(preds)
            if isinstance(p, TegakiError):
                msg = str(p)
                r["error"] = msg[len(f) + 2:] if msg.startswith(f + ": ") else msg
            elif p.empty:
                r.update(no_digit=True, status=p.status)
            else:
                r.update(label=p.label, name=classes[p.label], confidence=round(p.confidence, 6), status=p.status,
                         top=[{"label": i, "name": classes[i], "probability": round(q, 6)} for i, q in p.top(k)])
                if id(p) in numbers and numbers[id(p)].several:
                    r["number"] = numbers[id(p)].as_dict(classes)
        rows.append(r)
    return rows


def cmd_predict(args) -> int:
    from tegaki.predict import Predictor

    if args.top < 1:
        raise TegakiError(f"--top must be at least 1, got {args.top}")
    items = expand(args.files)
    run = Predictor.find_run(args.model)
    check_reads_pictures(run)
    predictor = Predictor(run, engine=pick_engine(args.engine, len(items), run.spec))
    k = min(args.top, len(predictor.classes))
    rows = predict_rows(predictor, items, k)
    failed = [r for r in rows if r["error"]]
    if len(failed) == len(rows):  # nothing to show: one line, like every other bad input
        what, _, remedy = failed[0]["error"].partition("; ")  # the reason and, for most, what to do about it
        usual = "give PNG, JPEG ... images, folders of them, or quoted globs"
        if len(failed) == 1:
            raise TegakiError(f"{failed[0]['file']}: {what}; {remedy or usual}")
        raise TegakiError(f"none of the {len(failed)} files is a readable image ({failed[0]['file']}: {what}; ...); "
                          f"{usual}")
    {"json": write_json, "csv": write_csv}.get(args.format, write_table)(rows, k, sys.stdout)
    for r in failed:
        print(f"tegaki: {r['file']}: {r['error']}", file=sys.stderr)
    if failed:
        print(f"tegaki: {len(failed)} of {len(rows)} file(s) could not be read; the others were predicted",
              file=sys.stderr)
        return 1
    return 0


AUTO_NUMPY_FLOPS = 40e9  # --engine auto: the NumPy engine while files x forward FLOPs stay below this


def pick_engine(engine: str, n_files: int, spec) -> str:
    """--engine auto: the NumPy engine starts in a fraction of the time that importing torch takes
    (0.4 s against 1.6 s for one image from the shell), torch's forward pass is faster per image,
    and how much faster grows with the network's size. On the 2-core CPU the two took equal time
    at about 8,000 files for the bundled model (9.6 MFLOP per image), 2,500 for `best` (21 MFLOP)
    and beyond 4,000 for a 4.2-MFLOP residual net: the NumPy engine is chosen up to 40 GFLOP of
    network work (4,100 files for the bundled model). Both give the same labels and statuses, and
    probabilities equal to within 1e-6 (tests/test_predict_cli.py)."""
    if engine != "auto":
        return engine
    return "numpy" if n_files * spec.forward_flops() <= AUTO_NUMPY_FLOPS else "torch"


def write_json(rows: list[dict], k: int, out) -> None:
    json.dump(rows, out, indent=2)
    out.write("\n")


def text_cell(v: str) -> str:
    """A file or class name as a CSV cell a spreadsheet shows as text: one that starts like a formula (=, +, -,
    @, a tab or a carriage return) gets a leading apostrophe (OWASP's advice against CSV injection)."""
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v


def write_csv(rows: list[dict], k: int, out) -> None:
    w = csv.writer(out, lineterminator="\n")
    numbers = any("number" in r for r in rows)  # the column only when some image holds a number
    w.writerow(["file", "label", "confidence"] + [f"top{i + 1}" for i in range(k)]
               + [f"top{i + 1}_probability" for i in range(k)] + ["error", "status"] + ["number"] * numbers)
    for r in rows:
        tops = r["top"] + [None] * (k - len(r["top"]))
        w.writerow([text_cell(r["file"]), "" if r["name"] is None else text_cell(r["name"]),
                    "" if r["confidence"] is None else f"{r['confidence']:.6f}"]
                   + ["" if t is None else text_cell(t["name"]) for t in tops]
                   + ["" if t is None else f"{t['probability']:.6f}" for t in tops]
                   + [r["error"] or ("no digit" if r.get("no_digit") else ""), r["status"] or ""]
                   + [r["number"]["text"] if "number" in r else ""] * numbers)


def write_table(rows: list[dict], k: int, out) -> None:
    width = max([columns(r["file"]) for r in rows] + [4])
    print(f"{'file':<{width}}  label  confidence  top {k}", file=out)
    for r in rows:
        if r["error"]:
            print(f"{pad(r['file'], width)}  error: {r['error']}", file=out)
        elif "number" in r:  # several digits: the number, the least sure digit, each digit
            n = r["number"]
            least = min(d["confidence"] for d in n["digits"])
            each = "  ".join(f"{d['name']} {d['confidence']:.1%}"
                             + ("" if d["status"] == "digit" else f" ({d['status']})") for d in n["digits"])
            note = f"  ({n['note']})" if n["note"] else ""
            print(f"{pad(r['file'], width)}  {n['text']:<5}  {least:>9.2%}  {len(n['digits'])} digits: {each}{note}",
                  file=out)
        elif r.get("no_digit"):
            print(f"{pad(r['file'], width)}  -      no digit (no strokes stand out from the background)", file=out)
        else:
            tops = "  ".join(f"{t['name']} {t['probability']:.1%}" for t in r["top"])
            doubt = "" if r["status"] == "digit" else f"  ({r['status']})"
            print(f"{pad(r['file'], width)}  {r['name']:<5}  {r['confidence']:>9.2%}  {tops}{doubt}", file=out)


EPILOG = """exit status:
  0  every file was read (an image without a digit counts as read: it is reported as "no digit")
  1  some files could not be read: each is named on stderr (and in the output), the others are predicted
  2  no argument named a readable image, or a bad option or model (one line on stderr, nothing on stdout)"""


def register(sub) -> None:
    from tegaki.engines import ENGINES

    p = sub.add_parser("predict", help="name the digit in image files (drawings, photos, scans)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="images, folders of images, or quoted globs")
    p.add_argument("--model", metavar="RUN", help="a run folder (default: the model bundled with tegaki)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    p.add_argument("--top", type=int, default=3, metavar="K", help="how many ranked classes to show (default 3)")
    p.add_argument("--engine", choices=("auto", *ENGINES), default="auto",
                   help="which engine runs the network (default auto: numpy, which starts fastest, while the "
                        f"files x the network's FLOPs per image stay under {AUTO_NUMPY_FLOPS / 1e9:g} GFLOP, "
                        "e.g. 4,100 files for the bundled model; torch for more)")
    p.set_defaults(func=cmd_predict)
