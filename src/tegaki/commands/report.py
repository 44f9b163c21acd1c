"""`tegaki report RUN`: one self-contained HTML file about a run.

Summary and provenance, network diagram, learning curves, accuracy and the per-class table, the
confusion matrix, the misclassified test digits (true label, top-2 probabilities, each linked to
its saliency maps), the filters before and after training, one digit's feature maps and
activations, and PCA / t-SNE maps of the penultimate layer. Images are embedded as data: URIs
and nothing is loaded from elsewhere, so the file opens offline and can be mailed as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tegaki.errors import TegakiError


def register(subparsers) -> None:
    from tegaki.commands.common import add_data_engine_args

    p = subparsers.add_parser("report", help="one self-contained HTML report of a run (opens offline)",
                              description=__doc__.split("\n\n", 1)[1].strip())
    p.add_argument("run", help="a run folder, or 'bundled' for the model that ships with tegaki")
    p.add_argument("--out", metavar="FILE.html",
                   help="where to write it (default RUN/report.html; ./report-bundled.html for the bundled model)")
    p.add_argument("--index", type=int, default=0, metavar="N",
                   help="the test digit whose feature maps are shown (default 0)")
    p.add_argument("--mistakes", type=int, default=60, metavar="N",
                   help="misclassified digits in the gallery (default 60, most confident first)")
    p.add_argument("--tsne-sample", type=int, default=2000, metavar="N",
                   help="test digits in the t-SNE map (default 2000, to build in seconds)")
    add_data_engine_args(p)
    p.add_argument("--verbose", action="store_true", help="print the time each part takes")
    p.set_defaults(func=cmd_report)


def default_out(run) -> Path:
    """RUN/report.html, or ./report-bundled.html for the bundled model (never into the installed package)."""
    from tegaki.run import is_bundled

    return Path("report-bundled.html") if is_bundled(run.path) else run.path / "report.html"


def _is_report(path: Path) -> bool:
    """Whether `path` is a report tegaki wrote (which a new report may replace)."""
    from tegaki.report import GENERATOR

    try:
        with open(path, "rb") as f:
            return GENERATOR.encode() in f.read(4096)
    except OSError:
        return False


def cmd_report(args) -> int:
    from tegaki.commands.common import apply_threads, check_writable, load_predictor, load_test_data
    from tegaki.inspect import TSNE_MIN
    from tegaki.report import build_report

    if args.tsne_sample < TSNE_MIN:
        raise TegakiError(f"--tsne-sample must be at least {TSNE_MIN}, got {args.tsne_sample}")
    if args.mistakes < 0:
        raise TegakiError(f"--mistakes must be >= 0, got {args.mistakes}")
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.is_dir():
            raise TegakiError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
        if not out.resolve().parent.is_dir():
            raise TegakiError(f"--out {out}: the folder {out.parent} does not exist")
        if out.suffix.lower() not in (".html", ".htm"):
            raise TegakiError(f"--out {out}: a report is an HTML file; give a name ending in .html")
        if out.exists() and not _is_report(out):
            raise TegakiError(f"--out {out} exists and is not a tegaki report; choose another name (nothing "
                              "was overwritten)")
    apply_threads(args.threads)  # after the checks that need no work
    pred = load_predictor(args)
    ds = load_test_data(args, pred.run)
    n = len(ds.test_labels)
    if not 0 <= args.index < n:
        raise TegakiError(f"--index {args.index} is out of range: the {ds.name} test set has {n:,} digits (0 to {n - 1})")
    out = out or default_out(pred.run)
    check_writable(out)
    log = (lambda m: print(m, file=sys.stderr)) if args.verbose else (lambda m: None)
    r = build_report(pred, ds, out, index=args.index, gallery_limit=args.mistakes, tsne_sample=args.tsne_sample,
                     log=log)
    print(f"wrote {r.path} ({r.size / 1e6:.1f} MB, {r.images} embedded images) in {r.seconds:.1f} s; "
          f"test accuracy {r.accuracy:.2%}")
    print(f"open it in any browser, offline: file://{r.path.resolve()}")
    return 0
