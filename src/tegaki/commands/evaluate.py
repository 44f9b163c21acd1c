"""`tegaki evaluate RUN`: accuracy, per-class report, confusion matrix, calibration (ECE, NLL, Brier and the
reliability diagram), mistakes and curves of a run."""

from __future__ import annotations

from pathlib import Path

from tegaki.commands.common import (THREADS_HELP, apply_threads, check_writable, default_out, load_test_data, slug,
                                    trained_dataset)
from tegaki.errors import TegakiError


def register(subparsers) -> None:
    from tegaki.engines import ENGINES

    e = subparsers.add_parser("evaluate", help="accuracy, per-class report, confusion matrix and mistakes of a run")
    e.add_argument("run", help="a run folder, or 'bundled' for the model that ships with tegaki")
    e.add_argument("--dataset", help="default: the dataset the run was trained on")
    e.add_argument("--data-dir", help="a folder holding the dataset's four IDX files")
    e.add_argument("--engine", choices=ENGINES, default="torch")
    e.add_argument("--out", help="where to write the pictures (default: the run folder; ./eval-bundled for the bundled model)")
    e.add_argument("--threads", type=int, help=THREADS_HELP)
    e.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from tegaki import figures
    from tegaki.evaluate import confusion_text, evaluate, report_text
    from tegaki.fileio import write_json
    from tegaki.predict import Predictor

    apply_threads(args.threads)
    pred = Predictor.load(args.run, engine=args.engine)
    run = pred.run
    name = args.dataset or trained_dataset(run) or "mnist"
    ds = load_test_data(args, run, name)
    same = name == trained_dataset(run)
    out = Path(args.out) if args.out else default_out(run, "eval", None if same else f"eval-{slug(ds.name)}")
    if out.exists() and not out.is_dir():
        raise TegakiError(f"--out {out} is a file; give a folder for the evaluation's files")
    check_writable(out)
    ev = evaluate(pred, ds.test_images, ds.test_labels, run.classes)
    print(f"{run.spec.name} on {ds.name} ({len(ds.test_labels):,} test images, engine {args.engine})")
    print(f"accuracy {ev.accuracy:.2%}   error {1 - ev.accuracy:.2%}\n")
    print(report_text(ev.cm, run.classes))
    print("\nconfusion matrix (rows: true, columns: predicted)")
    print(confusion_text(ev.cm, run.classes))
    print("\n" + calibration_text(pred, ev))
    write_json(out / "evaluation.json", {"dataset": ds.name, "engine": args.engine, **ev.metrics()})
    cm_title = f"{run.spec.name} on {ds.name}: {ev.accuracy:.2%}"
    files = [figures.save(figures.confusion_matrix(ev.cm, run.classes, cm_title), out / "confusion.png"),
             figures.save(ev.plot_reliability(f"{run.spec.name} on {ds.name}"), out / "reliability.png")]
    wrong = ev.misclassified()
    if len(wrong):
        fig = figures.misclassified(ds.test_images[wrong], ev.labels[wrong], ev.predictions[wrong],
                                    ev.probabilities[wrong], run.classes)
        files.append(figures.save(fig, out / "misclassified.png"))
    hist = run.history()
    if hist:
        files.append(figures.save(figures.learning_curves(hist, run.spec.name), out / "learning_curves.png"))
    print("\nwrote " + ", ".join(str(f) for f in files) + f", {out / 'evaluation.json'}")
    return 0


def calibration_text(pred, ev) -> str:
    """ECE / NLL / Brier of the calibrated probabilities and, for a calibrated run, of the plain softmax."""
    from tegaki.calibration import fitted_on
    from tegaki.evaluate import calibration_metrics

    after, rec = ev.calibration(), pred.calibration
    line = "ECE {ece:6.2%}   NLL {nll:.4f}   Brier {brier:.4f}"
    if not rec:
        return "calibration (no temperature in model.json: plain softmax)\n  " + line.format(**after)
    raw = calibration_metrics(_plain(ev.probabilities, pred.temperature), ev.labels)
    return (f"calibration (temperature {rec['temperature']:.4f}, fitted on the {fitted_on(rec)})\n"
            f"  plain softmax  {line.format(**raw)}\n  calibrated     {line.format(**after)}")


def _plain(probs, temperature: float):
    """The plain softmax back from calibrated probabilities: p = softmax(z / T), so log p = z / T + c
    and softmax(T log p) = softmax(z) (no second pass over the images)."""
    import numpy as np

    from tegaki.numerics import softmax

    return softmax(temperature * np.log(np.clip(np.asarray(probs, np.float64), 1e-300, 1)))
