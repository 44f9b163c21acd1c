"""`tegaki predict [--model RUN] FILE... [--format table|json|csv] [--top K]`: name the digit in images.

FILE may be an image (PNG, JPEG, ...: drawings, photos and scans of dark ink on light paper, or
MNIST-like white on black), a folder (every image in it and below it) or a glob ("scans/*.jpg",
quoted so the shell leaves it alone). Each image goes through the same MNIST-style preprocessing
as the HTTP API and the page, then one batched call of the network. A file that cannot be read is
reported on its own line and the others go on; the exit status is 1 when any file failed.
Without --model, the model bundled with tegaki is used.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from pathlib import Path

from tegaki.errors import TegakiError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FORMATS = ("table", "json", "csv")


def expand(args: list[str]) -> list[tuple[str, str | None]]:
    """Arguments -> [(file, None)] in order, or [(argument, why it names no file)] for bad ones."""
    out: list[tuple[str, str | None]] = []
    for a in args:
        p = Path(a).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                out.append((a, f"folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            out += [(str(f), None) for f in files]
        elif p.exists() or not glob.has_magic(a):
            out.append((a, None))  # a file; or a missing one, reported when it is read
        else:
            matches = sorted(m for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not matches:
                out.append((a, "no files match this pattern"))
            out += [(m, None) for m in matches]
    return out


def cmd_predict(args) -> int:
    from tegaki.predict import Predictor

    if args.top < 1:
        raise TegakiError(f"--top must be at least 1, got {args.top}")
    items = expand(args.files)
    predictor = Predictor.load(args.model, engine=args.engine)
    classes = predictor.classes
    k = min(args.top, len(classes))
    readable = [f for f, why in items if why is None]
    preds = iter(predictor.predict_images(readable))
    rows = []
    for f, why in items:
        r = {"file": f, "label": None, "name": None, "confidence": None, "top": [], "error": why}
        if why is None:
            p = next(preds)
            if isinstance(p, TegakiError):
                msg = str(p)
                r["error"] = msg[len(f) + 2:] if msg.startswith(f + ": ") else msg
            elif p.empty:
                r["error"] = None
                r["no_digit"] = True
            else:
                r.update(label=p.label, name=classes[p.label], confidence=round(p.confidence, 6),
                         top=[{"label": i, "name": classes[i], "probability": round(q, 6)} for i, q in p.top(k)])
        rows.append(r)
    failed = [r for r in rows if r["error"]]
    out = sys.stdout
    if args.format == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif args.format == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["file", "label", "confidence"] + [f"top{i + 1}" for i in range(k)]
                   + [f"top{i + 1}_probability" for i in range(k)] + ["error"])
        for r in rows:
            tops = r["top"] + [None] * (k - len(r["top"]))
            w.writerow([r["file"], "" if r["name"] is None else r["name"],
                        "" if r["confidence"] is None else f"{r['confidence']:.6f}"]
                       + ["" if t is None else t["name"] for t in tops]
                       + ["" if t is None else f"{t['probability']:.6f}" for t in tops]
                       + [r["error"] or ("no digit" if r.get("no_digit") else "")])
    else:
        width = max([len(r["file"]) for r in rows] + [4])
        print(f"{'file':<{width}}  label  confidence  top {k}")
        for r in rows:
            if r["error"]:
                print(f"{r['file']:<{width}}  error: {r['error']}")
            elif r.get("no_digit"):
                print(f"{r['file']:<{width}}  -      no digit (nothing stands out from the background)")
            else:
                tops = "  ".join(f"{t['name']} {t['probability']:.1%}" for t in r["top"])
                print(f"{r['file']:<{width}}  {r['name']:<5}  {r['confidence']:>9.2%}  {tops}")
    if failed:
        print(f"tegaki: {len(failed)} of {len(rows)} file(s) could not be read: "
              + "; ".join(f"{r['file']}: {r['error']}" for r in failed[:3]) + (" ..." if len(failed) > 3 else ""),
              file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    from tegaki.engines import ENGINES

    p = sub.add_parser("predict", help="name the digit in image files (drawings, photos, scans)")
    p.add_argument("files", nargs="+", metavar="FILE", help="images, folders of images, or quoted globs")
    p.add_argument("--model", metavar="RUN", help="a run folder (default: the model bundled with tegaki)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    p.add_argument("--top", type=int, default=3, metavar="K", help="how many ranked classes to show (default 3)")
    p.add_argument("--engine", choices=ENGINES, default="torch", help="which engine runs the network")
    p.set_defaults(func=cmd_predict)
